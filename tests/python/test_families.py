"""The families' forward pass and training through the package (issue 16):
transcoders' output, loss and FVU against numpy, training against a target,
Gated models, and the errors."""
import numpy as np
import pytest

import libsae


def data(n, d, seed):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_skip_transcoder_output_is_decoder_plus_skip():
    m = libsae.Model.transcoder(6, 4, 16, skip=True, arch="relu", seed=3)
    m.set("W_skip", data(4, 6, 1) * 0.3)
    m.set("b_dec", data(1, 4, 2)[0])
    x, y = data(20, 6, 4), data(20, 4, 5)
    want = m.decode(m.encode(x)) + x @ m.get("W_skip").T
    out = m.output(x)
    assert out.shape == (20, 4)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    l = m.loss_target(x, y, 0.1)
    assert l.l2 == pytest.approx(((out - y) ** 2).sum(1).mean(), rel=1e-5)
    var = ((y - y.mean(0)) ** 2).sum()
    assert m.fvu_target(x, y) == pytest.approx(((out - y) ** 2).sum() / var, rel=1e-5)


def test_transcoder_training_lowers_the_loss():
    x = data(256, 8, 6)
    y = np.tanh(x @ data(8, 5, 7))  # a target in another space
    m = libsae.Model.transcoder(8, 5, 32, arch="topk", k=4, seed=1)
    o = libsae.Optimizer(m, lr=3e-3)
    first = o.step_target(m, x, y).l2
    for _ in range(100):
        last = o.step_target(m, x, y).l2
    assert last < 0.5 * first
    assert o.steps == 101


def test_gated_model_trains_with_sae_step():
    x = np.abs(data(256, 8, 8))
    m = libsae.Model(8, 32, arch="gated", seed=2)
    o = libsae.Optimizer(m, lr=3e-3, l1_coeff=0.1)
    first = o.step(m, x).loss
    for _ in range(50):
        last = o.step(m, x).loss
    assert last < first
    assert m.loss(x, 0.1).loss == pytest.approx(m.loss_target(x, x, 0.1).loss)


def test_matryoshka_trains_its_levels():
    x = np.abs(data(256, 8, 9))
    m = libsae.Model(8, 32, arch="matryoshka", k=3, widths=[4, 12], seed=2)
    o = libsae.Optimizer(m, lr=3e-3)
    first = o.step(m, x).loss
    for _ in range(50):
        last = o.step(m, x).loss
    assert last < first
    levels = m.loss_levels(x)
    assert levels.shape == (3,)
    # sae_loss: the full width's l2, the sum of the levels as the loss
    l = m.loss(x, 0.0)
    assert levels[-1] == pytest.approx(l.l2, rel=1e-6)
    assert levels.sum() == pytest.approx(l.loss, rel=1e-6)
    # level 0 decodes the first 4 features alone
    f = m.encode(x)
    f[:, 4:] = 0
    want = ((m.decode(f) - x) ** 2).sum(1).mean()
    assert levels[0] == pytest.approx(want, rel=1e-4)


def test_errors_leave_the_model_as_it_was():
    m = libsae.Model.transcoder(6, 4, 16, arch="relu", seed=3)
    o = libsae.Optimizer(m)
    before = m.tensors()
    x, y = data(10, 6, 1), data(10, 4, 2)
    with pytest.raises(libsae.InvalidArgError, match="sae_step_target"):
        o.step(m, x)
    with pytest.raises(ValueError):
        o.step_target(m, x, y[:9])
    y[3, 1] = np.nan
    with pytest.raises(libsae.NonFiniteError):
        o.step_target(m, x, y)
    assert o.steps == 0
    after = m.tensors()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    mat = libsae.Model(6, 16, arch="matryoshka", k=2, widths=[4, 8], seed=1)
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(libsae.NonFiniteError):
        mat.loss_levels(bad)
    with pytest.raises(libsae.InvalidArgError, match="not a Matryoshka"):
        libsae.Model(6, 16, seed=1).loss_levels(x)
