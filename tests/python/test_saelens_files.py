"""SAELens files of the TopK family load as SAELens computes them (issue 16):
TopK, BatchTopK and Matryoshka BatchTopK SAEs trained with SAELens's default
rescale_acts_by_decoder_norm: true, both as training checkpoints (weights not
folded; BatchTopK's topk_threshold a 0-dim float64) and as inference saves
(weights folded by SAELens's _fold_norm_topk, cfg still saying true). The files
are written by tests/python/saelens_files.py, an independent writer that
follows SAELens 6.18's source, and libsae's encode and output are compared with
its numpy forward of SAELens's formulas."""
import json
import os

import numpy as np
import pytest

import libsae
import saelens_files as sl

D_IN, D_SAE = 12, 40


def batch(seed, n=64):
    return np.random.default_rng(seed).standard_normal((n, D_IN)).astype(np.float32)


def tensors(architecture, seed):
    rng = np.random.default_rng(seed)
    # decoder rows of very different norms, so that folding matters
    scale = rng.uniform(0.2, 3.0, D_SAE)
    return sl.random_tensors(architecture, D_IN, D_SAE, rng, decoder_scale=scale)


def check_forward(path, architecture, t, cfg, x, threshold=None):
    m = libsae.Model.load(path)
    f_want, out_want = sl.forward(architecture, t, cfg, x, threshold=threshold)
    f = m.encode(x)
    assert (f > 0).sum() > len(x)  # the check is not vacuous
    np.testing.assert_allclose(f, f_want, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(m(x), out_want, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(m.output(x), out_want, rtol=2e-4, atol=2e-4)
    return m


def test_topk_training_checkpoint_is_folded_at_load(tmp_path):
    t = tensors("topk", 1)
    cfg = sl.training_cfg("topk", D_IN, D_SAE, k=5)
    assert cfg["rescale_acts_by_decoder_norm"] is True
    sl.write_sae(str(tmp_path), t, cfg)
    m = check_forward(str(tmp_path), "topk", t, cfg, batch(2))
    assert m.arch == libsae.Arch.TOPK and m.k == 5
    # the folded decoder has unit rows, as SAELens's inference save
    np.testing.assert_allclose(np.linalg.norm(m.get("W_dec"), axis=1), 1.0, rtol=1e-5)


def test_topk_inference_save_folded_by_saelens(tmp_path):
    t = tensors("topk", 3)
    folded = sl.fold_norm_topk(t)
    cfg = sl.inference_cfg("topk", D_IN, D_SAE, k=5, rescale_acts_by_decoder_norm=True)
    sl.write_sae(str(tmp_path), folded, cfg)
    x = batch(4)
    # the same function as the unfolded training model
    check_forward(str(tmp_path), "topk", folded, cfg, x)
    _, out_unfolded = sl.forward("topk", t, dict(cfg), x)
    np.testing.assert_allclose(libsae.Model.load(str(tmp_path))(x), out_unfolded, rtol=2e-4,
                               atol=2e-4)


def test_batchtopk_training_checkpoint(tmp_path):
    t = tensors("batchtopk", 5)
    t["topk_threshold"] = np.array(0.8)  # 0-dim float64, as SAELens's buffer
    cfg = sl.training_cfg("batchtopk", D_IN, D_SAE, k=6.0)
    sl.write_sae(str(tmp_path), t, cfg)
    with open(os.path.join(str(tmp_path), "cfg.json")) as f:
        assert '"k": 6.0' in f.read()  # k as SAELens's float
    m = check_forward(str(tmp_path), "batchtopk", t, cfg, batch(6))
    assert m.arch == libsae.Arch.BATCHTOPK and m.k == 6
    assert m.threshold[0] == pytest.approx(0.8)


def test_matryoshka_training_checkpoint(tmp_path):
    t = tensors("matryoshka_batchtopk", 7)
    t["topk_threshold"] = np.array(0.5)
    cfg = sl.training_cfg("matryoshka_batchtopk", D_IN, D_SAE, k=4.0, matryoshka_widths=[8, 20])
    sl.write_sae(str(tmp_path), t, cfg)
    m = check_forward(str(tmp_path), "matryoshka_batchtopk", t, cfg, batch(8))
    assert m.arch == libsae.Arch.MATRYOSHKA and m.k == 4
    assert m.widths == (8, 20, D_SAE)  # d_sae appended, as SAELens does


def test_without_rescale_nothing_is_folded(tmp_path):
    t = tensors("topk", 9)
    cfg = sl.training_cfg("topk", D_IN, D_SAE, k=5, rescale_acts_by_decoder_norm=False)
    sl.write_sae(str(tmp_path), t, cfg)
    m = check_forward(str(tmp_path), "topk", t, cfg, batch(10))
    np.testing.assert_array_equal(m.get("W_dec"), np.asarray(t["W_dec"], dtype=np.float32))


@pytest.mark.parametrize("change, key", [
    ({"architecture": "standard", "rescale_acts_by_decoder_norm": True},
     "rescale_acts_by_decoder_norm"),
    ({"k": 4.5}, '"k"'),
    ({"matryoshka_widths": [8, 8]}, "matryoshka_widths"),
    ({"matryoshka_widths": [8, 99]}, "matryoshka_widths"),
    ({"architecture": "batchtopk"}, "topk_threshold"),
])
def test_what_cannot_load_is_refused_naming_the_key(tmp_path, change, key):
    t = tensors("matryoshka_batchtopk", 11)
    cfg = sl.training_cfg("matryoshka_batchtopk", D_IN, D_SAE, k=4.0)
    cfg.update(change)
    if change.get("architecture") != "batchtopk":
        t["topk_threshold"] = np.array(0.5)
    if cfg["architecture"] == "standard":
        del cfg["k"]
    sl.write_sae(str(tmp_path), t, cfg)
    with pytest.raises(libsae.FormatError) as e:
        libsae.Model.load(str(tmp_path))
    assert key in str(e.value) or key in libsae.error_detail()
