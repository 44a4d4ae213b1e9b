"""libsae.Optimizer: options as keyword arguments checked against the
library's bounds, the step against the C API (same bits) and torch autograd,
the schedules' queries, feature activity, and resuming through bytes,
pickles and checkpoint directories."""
import ctypes
import pickle

import numpy as np
import pytest

import libsae
from helpers import data, needs_torch, random_model, same_bits, snapshot, torch
from libsae import capi


def test_options_by_keyword_name_and_number():
    m = libsae.Model(8, 16)
    opt = libsae.Optimizer(m, lr=1e-3, l1_coeff=2, total_steps=100, lr_schedule="cosine",
                           kernel=libsae.Kernel.SPARSE, lr_warmup_steps=10.0, threads=1)
    assert opt.get("lr") == 1e-3 and opt.get(libsae.Option.L1_COEFF) == 2.0
    assert opt.get("lr_schedule") is libsae.LrSchedule.COSINE
    assert opt.get(libsae.Option.KERNEL) is libsae.Kernel.SPARSE
    assert opt.get("total_steps") == 100 and isinstance(opt.get("lr_warmup_steps"), int)
    opt.set(libsae.Option.LR, 2e-3)
    opt.set(1, 3e-3)  # the option's number
    opt.set("SAE_OPT_BETA1", 0.8)
    assert opt.configure(beta2=0.99, grad_clip=0) is opt
    options = opt.options()
    assert options["lr"] == 3e-3 and options["beta1"] == 0.8 and options["grad_clip"] == 0
    assert list(options) == [o.name.lower() for o in libsae.Option]


def test_bad_options_set_nothing():
    m = libsae.Model(8, 16)
    with pytest.raises(TypeError, match="unknown option 'learning_rate'"):
        libsae.Optimizer(m, learning_rate=1e-3)
    with pytest.raises(TypeError, match="expected a number"):
        libsae.Optimizer(m, lr="fast")
    with pytest.raises(ValueError, match="unknown LrSchedule 'exp'"):
        libsae.Optimizer(m, lr_schedule="exp")
    opt = libsae.Optimizer(m, lr=1e-3)
    before = opt.options()
    with pytest.raises(libsae.InvalidArgError) as e:
        opt.configure(l1_coeff=3, lr=-1)  # checked before anything is set
    assert e.value.status == libsae.Status.E_INVALID_ARG
    assert "lr = -1 is outside (0, inf)" in str(e.value)
    with pytest.raises(libsae.NonFiniteError):
        opt.set("eps", float("nan"))
    with pytest.raises(libsae.InvalidArgError, match=r"beta1 = 1 is outside \[0, 1\)"):
        opt.set("beta1", 1.0)
    with pytest.raises(libsae.InvalidArgError, match="a whole number"):
        opt.set("threads", 2.5)
    with pytest.raises(libsae.NonFiniteError):
        opt.set("lr", float("inf"))
    assert opt.options() == before


def test_option_table_is_the_library_s():
    """option_info is sae_option_name/_default/_bounds, and the library's own
    checks agree with it at and around each bound."""
    lr = libsae.option_info("lr")
    assert (lr.name, lr.default, lr.lower, lr.lower_open, lr.whole) == ("lr", 5e-5, 0, True, False)
    assert libsae.option_info(libsae.Option.THREADS).whole
    opt = libsae.Optimizer(libsae.Model(4, 8))
    lib = capi.lib
    for o in libsae.Option:
        row = libsae.option_info(o)
        assert opt.get(o) == row.default
        for v in (row.lower, row.upper, row.lower - 1, row.upper + 1, row.lower + 0.5):
            if not np.isfinite(v):
                continue
            allowed = lib.sae_optimizer_set(opt.handle, o, v) == 0
            assert allowed == row.allows(v), (o, v)
    assert lib.sae_option_name(999) is None
    with pytest.raises(TypeError):
        libsae.option_info("nope")


def test_error_detail_names_the_problem(rng):
    m = libsae.Model(4, 8)
    opt = libsae.Optimizer(m)
    x = data(rng, 3, 4)
    x[1, 2] = np.nan
    with pytest.raises(libsae.NonFiniteError) as e:
        opt.step(m, x)
    assert e.value.detail and e.value.detail in str(e.value)
    assert e.value.detail == libsae.error_detail()


def raw_run(d_in, d_sae, seed, x, steps, **options):
    """The same run through libsae.capi alone: the binding must pass the same bits."""
    lib = capi.lib
    m, o = ctypes.c_void_p(), ctypes.c_void_p()
    assert lib.sae_model_create(ctypes.byref(m), d_in, d_sae, seed) == 0
    assert lib.sae_optimizer_create(ctypes.byref(o), m) == 0
    for name, value in options.items():
        assert lib.sae_optimizer_set(o, libsae.Option[name.upper()], value) == 0
    losses = capi.Losses()
    ptr = x.ctypes.data_as(capi.float_ptr)
    out = []
    for _ in range(steps):
        assert lib.sae_step(m, o, ptr, x.shape[0], ctypes.byref(losses)) == 0
        out.append((losses.loss, losses.l2, losses.l1, losses.l0))
    w = np.empty((d_sae, d_in), np.float32)
    assert lib.sae_model_get_tensor(m, libsae.Tensor.W_DEC, w.ctypes.data_as(capi.float_ptr),
                                    w.size) == 0
    lib.sae_optimizer_free(o)
    lib.sae_model_free(m)
    return out, w


def test_steps_are_the_c_api_steps(rng):
    x = data(rng, 64, 10)
    want, w = raw_run(10, 32, 3, x, 5, lr=1e-2, l1_coeff=0.5)
    with libsae.Model(10, 32, seed=3) as m, libsae.Optimizer(m, lr=1e-2, l1_coeff=0.5) as opt:
        got = [tuple(opt.step(m, x)) for _ in range(5)]
        assert got == want and same_bits(m.W_dec, w) and opt.steps == 5


@needs_torch
def test_first_step_against_torch_autograd(rng):
    """Loss and Adam's first update (lr * sign(g)) against torch's gradient."""
    m = random_model(d_in=10, d_sae=24)
    x = data(rng, 32, 10)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in m.tensors().items()}
    xt = torch.tensor(x, dtype=torch.float64)
    f = torch.relu((xt - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    x_hat = f @ t["W_dec"] + t["b_dec"]
    l2 = ((x_hat - xt) ** 2).sum(1).mean()
    l1 = (f * t["W_dec"].norm(dim=1)).sum(1).mean()
    (l2 + 0.7 * l1).backward()
    lr = 1e-3
    opt = libsae.Optimizer(m, lr=lr, l1_coeff=0.7, grad_clip=0)
    before = m.tensors()
    losses = opt.step(m, x)
    assert losses.loss == pytest.approx((l2 + 0.7 * l1).item(), rel=1e-5)
    assert losses.l2 == pytest.approx(l2.item(), rel=1e-5)
    for name, value in m.tensors().items():
        g = t[name].grad.numpy()
        step = (value.astype(np.float64) - before[name])
        big = np.abs(g) > 1e-3
        np.testing.assert_allclose(step[big], -lr * np.sign(g[big]), rtol=1e-3)


def test_schedule_queries():
    opt = libsae.Optimizer(libsae.Model(4, 8), lr=1e-3, l1_coeff=5, total_steps=100,
                           lr_schedule="linear", lr_decay_fraction=0.2, lr_warmup_steps=10,
                           l1_warmup_fraction=0.05)
    assert opt.lr_at(1) == pytest.approx(1e-3 / 10)
    assert opt.lr_at(50) == 1e-3
    assert opt.lr_at(90) == pytest.approx(1e-3 * 10 / 20)
    assert opt.lr_at(100) == 0
    assert opt.l1_coeff_at(1) == pytest.approx(5 / 5) and opt.l1_coeff_at(7) == 5
    with pytest.raises(libsae.InvalidArgError):
        opt.lr_at(0)


def test_feature_activity_and_resampling(rng):
    m = random_model(d_in=8, d_sae=64)
    b_enc = m.b_enc
    b_enc[:10] = -100  # features 0..9 never fire
    m.b_enc = b_enc
    opt = libsae.Optimizer(m, lr=1e-3)
    x = data(rng, 16, 8)
    for _ in range(2):
        opt.step(m, x)
    since = opt.tokens_since_fired()
    assert since.dtype == np.uint64 and since.shape == (64,)
    assert np.all(since[:10] == 32) and np.all(since[10:] < 32)
    dead = opt.dead_features(32)
    assert np.array_equal(dead, np.arange(10)) and opt.dead_count(32) == 10
    assert np.array_equal(opt.dead_features(4), np.flatnonzero(since >= 4))
    with pytest.raises(libsae.InvalidArgError):
        opt.dead_count(0)
    before = snapshot(m, opt)
    with pytest.raises(libsae.InvalidArgError):
        opt.resample_dead(m, np.zeros((4, 8), np.float32), 32)  # every input zero
    assert snapshot(m, opt) == before
    assert opt.resample_dead(m, x, 32, seed=7) == 10
    assert opt.dead_count(32) == 0
    np.testing.assert_allclose(np.linalg.norm(m.W_dec[:10], axis=1), 1.0, rtol=1e-5)


def test_wrong_model_for_the_optimizer(rng):
    m, other = libsae.Model(8, 16), libsae.Model(8, 17)
    opt = libsae.Optimizer(m)
    with pytest.raises(libsae.InvalidArgError) as e:
        opt.step(other, data(rng, 4, 8))
    assert e.value.function == "sae_step" and opt.steps == 0
    with pytest.raises(libsae.InvalidArgError):
        libsae.Optimizer.from_bytes(other, opt.to_bytes())


def test_resume_bit_for_bit(rng, tmp_path):
    """N steps, save (bytes, pickle, directory), N more: the bits of 2N."""
    x = [data(rng, 32, 8) for _ in range(6)]
    m, opt = random_model(d_in=8, d_sae=24, arch="jumprelu"), None
    opt = libsae.Optimizer(m, lr=1e-2, jumprelu_bandwidth=0.5)
    for b in x[:3]:
        opt.step(m, b)
    m.save(tmp_path)
    opt.save(tmp_path)
    copies = [(libsae.Model.from_bytes(m.to_bytes()), opt.to_bytes()),
              (pickle.loads(pickle.dumps(m)), pickle.dumps(opt)),
              (libsae.Model.load(tmp_path), tmp_path)]
    for b in x[3:]:
        opt.step(m, b)
    for m2, saved in copies:
        if isinstance(saved, bytes) and saved[:1] == b"\x80":
            o2 = pickle.loads(saved)
        elif isinstance(saved, bytes):
            o2 = libsae.Optimizer.from_bytes(m2, saved)
        else:
            o2 = libsae.Optimizer.load(m2, saved)
        assert o2.steps == 3 and o2.get("jumprelu_bandwidth") == 0.5
        for b in x[3:]:
            o2.step(m2, b)
        assert m2.to_bytes() == m.to_bytes() and o2.to_bytes() == opt.to_bytes()


def test_adopted_optimizer():
    m = libsae.Model(4, 8)
    raw = ctypes.c_void_p()
    assert capi.lib.sae_optimizer_create(ctypes.byref(raw), m.handle) == 0
    opt = libsae.Optimizer.from_handle(raw)
    with pytest.raises(TypeError, match="pass d_sae"):
        opt.tokens_since_fired()
    assert opt.tokens_since_fired(8).shape == (8,)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(opt)
    assert libsae.Optimizer.from_handle(opt.release(), m).tokens_since_fired().shape == (8,)


def test_gemm_backend_and_precision_options():
    # auto and onednn run on one of the two backends; cblas is always itself
    assert libsae.gemm_backend("cblas") is libsae.Gemm.CBLAS
    auto = libsae.gemm_backend()
    assert auto in (libsae.Gemm.CBLAS, libsae.Gemm.ONEDNN)
    assert libsae.gemm_backend(libsae.Gemm.ONEDNN) is auto  # oneDNN when built in, else CBLAS
    with pytest.raises(ValueError, match="not a Gemm"):
        libsae.gemm_backend(3)
    assert capi.lib.sae_gemm_backend(3) == libsae.Status.E_INVALID_ARG
    m = libsae.Model(8, 16)
    opt = libsae.Optimizer(m, gemm="cblas", precision="bf16")
    assert opt.get("gemm") is libsae.Gemm.CBLAS
    assert opt.get(libsae.Option.PRECISION) is libsae.Precision.BF16
    with pytest.raises(ValueError):
        opt.set("precision", 2)
    assert opt.get("precision") is libsae.Precision.BF16
