"""Every family SAELens 6.18 registers loads for inference as SAELens computes
it, and libsae's own files of every family round-trip and say what SAELens
needs (issue 16).

SAELens files are written by tests/python/saelens_files.py (an independent
writer following SAELens 6.18's source: state dict names, shapes, cfg.json);
libsae's encode and output are compared with its numpy forward of SAELens's
formulas. libsae's files are read back with st_min (an independent
safetensors reader) and evaluated by the same numpy forward, so a file libsae
writes computes in SAELens what it computes in libsae."""
import json
import os

import numpy as np
import pytest

import libsae
import saelens_files as sl
import st_min

D_IN, D_OUT, D_SAE = 10, 7, 24


def batch(seed, n=48, d=D_IN):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def check_forward(path, architecture, t, cfg, x):
    m = libsae.Model.load(path)
    f_want, out_want = sl.forward(architecture, t, cfg, x)
    f = m.encode(x)
    assert (f > 0).sum() > len(x)  # the check is not vacuous
    np.testing.assert_allclose(f, f_want, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(m.output(x), out_want, rtol=2e-4, atol=2e-4)
    return m


# (SAELens architecture, d_out, skip, libsae arch, libsae kind)
SAELENS_FAMILIES = [
    ("standard", None, False, libsae.Arch.RELU, libsae.ModelKind.AUTOENCODER),
    ("gated", None, False, libsae.Arch.GATED, libsae.ModelKind.AUTOENCODER),
    ("jumprelu", None, False, libsae.Arch.JUMPRELU, libsae.ModelKind.AUTOENCODER),
    ("transcoder", D_OUT, False, libsae.Arch.RELU, libsae.ModelKind.TRANSCODER),
    ("skip_transcoder", D_OUT, True, libsae.Arch.RELU, libsae.ModelKind.SKIP_TRANSCODER),
    ("jumprelu_transcoder", D_OUT, False, libsae.Arch.JUMPRELU, libsae.ModelKind.TRANSCODER),
    ("jumprelu_skip_transcoder", D_OUT, True, libsae.Arch.JUMPRELU,
     libsae.ModelKind.SKIP_TRANSCODER),
]


@pytest.mark.parametrize("architecture, d_out, skip, arch, kind", SAELENS_FAMILIES)
def test_saelens_inference_saves_load(tmp_path, architecture, d_out, skip, arch, kind):
    rng = np.random.default_rng(len(architecture))
    t = sl.random_tensors(architecture, D_IN, D_SAE, rng, d_out=d_out, skip=skip)
    fields = {"d_out": d_out} if d_out else {}
    cfg = sl.inference_cfg(architecture, D_IN, D_SAE, **fields)
    sl.write_sae(str(tmp_path), t, cfg)
    m = check_forward(str(tmp_path), architecture, t, cfg, batch(1))
    assert m.arch == arch and m.kind == kind and m.d_out == (d_out or D_IN)


def test_topk_inference_save(tmp_path):
    rng = np.random.default_rng(3)
    t = sl.random_tensors("topk", D_IN, D_SAE, rng)
    cfg = sl.inference_cfg("topk", D_IN, D_SAE, k=5, rescale_acts_by_decoder_norm=False)
    sl.write_sae(str(tmp_path), t, cfg)
    m = check_forward(str(tmp_path), "topk", t, cfg, batch(4))
    assert m.arch == libsae.Arch.TOPK and m.k == 5


def test_jumprelu_training_checkpoint_with_log_threshold(tmp_path):
    """A JumpReLU training checkpoint holds log_threshold, not threshold."""
    rng = np.random.default_rng(5)
    t = sl.random_tensors("jumprelu", D_IN, D_SAE, rng)
    t["log_threshold"] = np.log(t.pop("threshold")).astype(np.float32)
    cfg = sl.training_cfg("jumprelu", D_IN, D_SAE)
    sl.write_sae(str(tmp_path), t, cfg)
    m = check_forward(str(tmp_path), "jumprelu", t, cfg, batch(6))
    assert m.arch == libsae.Arch.JUMPRELU
    np.testing.assert_allclose(m.threshold, np.exp(t["log_threshold"]), rtol=1e-6)


def test_pre6_gated_configuration(tmp_path):
    rng = np.random.default_rng(7)
    t = sl.random_tensors("gated", D_IN, D_SAE, rng)
    cfg = sl.pre6_cfg("gated", D_IN, D_SAE)
    sl.write_sae(str(tmp_path), t, cfg)
    check_forward(str(tmp_path), "gated", t, cfg, batch(8))


@pytest.mark.parametrize("edit, key", [
    (lambda t, c: c.update(architecture="temporal"), '"architecture"'),
    (lambda t, c: c.update(normalize_activations="layer_norm"), '"normalize_activations"'),
    (lambda t, c: c.update(d_out=D_OUT + 1), '"d_out"'),
    (lambda t, c: t.pop("r_mag"), '"r_mag"'),
    (lambda t, c: t.update(b_enc=np.zeros(D_SAE)), '"b_enc"'),
    (lambda t, c: t.update(W_skip=np.zeros((D_OUT, D_IN))), '"W_skip"'),
    (lambda t, c: t.update(threshold=np.ones(D_SAE), log_threshold=np.zeros(D_SAE)),
     '"log_threshold"'),
])
def test_what_cannot_load_is_refused_naming_the_key(tmp_path, edit, key):
    """Refusals are SAE_E_FORMAT with a detail naming the key or tensor."""
    gated = key in ('"r_mag"', '"b_enc"')
    architecture = "gated" if gated else "transcoder"
    rng = np.random.default_rng(9)
    d_out = None if gated else D_OUT
    t = sl.random_tensors(architecture, D_IN, D_SAE, rng, d_out=d_out)
    cfg = sl.inference_cfg(architecture, D_IN, D_SAE, **({} if gated else {"d_out": D_OUT}))
    edit(t, cfg)
    sl.write_sae(str(tmp_path), t, cfg)
    with pytest.raises(libsae.FormatError) as e:
        libsae.Model.load(str(tmp_path))
    assert key in str(e.value) or key in libsae.error_detail()


def libsae_models():
    """One model of every family libsae trains or computes, with nonzero
    parameters everywhere."""
    rng = np.random.default_rng(11)
    models = [
        ("gated", libsae.Model(D_IN, D_SAE, arch="gated", seed=1)),
        ("matryoshka_batchtopk", libsae.Model(D_IN, D_SAE, arch="matryoshka", k=4,
                                              widths=[6, 12], seed=2)),
        ("transcoder", libsae.Model.transcoder(D_IN, D_OUT, D_SAE, seed=3)),
        ("skip_transcoder", libsae.Model.transcoder(D_IN, D_OUT, D_SAE, skip=True, seed=4)),
        ("jumprelu_transcoder", libsae.Model.transcoder(D_IN, D_OUT, D_SAE, arch="jumprelu",
                                                        threshold=0.05, seed=5)),
        ("topk_skip_transcoder", libsae.Model.transcoder(D_IN, D_OUT, D_SAE, arch="topk", k=3,
                                                         skip=True, seed=6)),
        ("batchtopk_transcoder", libsae.Model.transcoder(D_IN, D_OUT, D_SAE, arch="batchtopk",
                                                         k=3, seed=7)),
    ]
    for _, m in models:
        m.set("B_ENC", rng.normal(0, 0.1, D_SAE).astype(np.float32))
        m.set("B_DEC", rng.normal(0, 0.1, m.d_out).astype(np.float32))
        if m.arch == libsae.Arch.GATED:
            m.set("B_MAG", rng.normal(0, 0.1, D_SAE).astype(np.float32))
            m.set("R_MAG", rng.normal(0, 0.3, D_SAE).astype(np.float32))
        if m.kind == libsae.ModelKind.SKIP_TRANSCODER:
            m.set("W_SKIP", rng.normal(0, 0.3, (m.d_out, D_IN)).astype(np.float32))
    return models


def train_a_little(m, seed):
    """An optimizer with moments in every parameter (a few steps)."""
    o = libsae.Optimizer(m, lr=1e-3)
    for s in range(3):
        x = batch(seed + s, n=32)
        if m.kind == libsae.ModelKind.AUTOENCODER:
            o.step(m, x)
        else:
            o.step_target(m, x, batch(seed + 100 + s, n=32, d=m.d_out))
    return o


def read_libsae_file(path):
    meta, raw = st_min.unpack(open(os.path.join(path, "sae_weights.safetensors"), "rb").read())
    tensors = {}
    for name, (dtype, shape, data) in raw.items():
        assert dtype == "F32", name
        tensors[name] = np.frombuffer(data, dtype="<f4").reshape(shape)
    with open(os.path.join(path, "cfg.json")) as f:
        return meta, tensors, json.load(f)


@pytest.mark.parametrize("name", [name for name, _ in libsae_models()])
def test_libsae_files_round_trip_and_read_as_saelens(tmp_path, name):
    m = dict(libsae_models())[name]
    trains = name != "matryoshka_batchtopk"  # not trained in this version
    o = train_a_little(m, 20) if trains else None
    m.save(str(tmp_path))
    back = libsae.Model.load(str(tmp_path))
    assert (back.arch, back.kind, back.d_in, back.d_out, back.d_sae) == \
        (m.arch, m.kind, m.d_in, m.d_out, m.d_sae)
    extra = (["B_MAG", "R_MAG"] if m.arch == libsae.Arch.GATED else []) + \
        (["W_SKIP"] if m.kind == libsae.ModelKind.SKIP_TRANSCODER else [])
    for which in ["W_ENC", "W_DEC", "B_ENC", "B_DEC"] + extra:
        np.testing.assert_array_equal(back.get(which), m.get(which))
    x = batch(30)
    np.testing.assert_array_equal(back.output(x), m.output(x))
    # what SAELens reads: its tensor names and cfg.json, computing the same
    meta, t, cfg = read_libsae_file(str(tmp_path))
    saelens_arch = cfg["architecture"]
    expect = {"gated": "gated", "matryoshka_batchtopk": "jumprelu",
              "batchtopk_transcoder": "jumprelu_transcoder"}.get(name, name)
    assert saelens_arch == expect
    if m.kind != libsae.ModelKind.AUTOENCODER:
        assert cfg["d_out"] == D_OUT and cfg["apply_b_dec_to_input"] is False
    if m.arch == libsae.Arch.GATED:
        assert {"b_gate", "b_mag", "r_mag"} <= set(t) and "b_enc" not in t
    if name == "matryoshka_batchtopk":
        assert meta["libsae_matryoshka_widths"] == "6,12,%d" % D_SAE
    if saelens_arch != "topk_skip_transcoder":  # no SAELens class: libsae's own name
        _, out_want = sl.forward(saelens_arch, t, cfg, x)
        np.testing.assert_allclose(back.output(x), out_want, rtol=2e-4, atol=2e-4)
    if trains:
        o.save(str(tmp_path / "optimizer.safetensors"))
        o_back = libsae.Optimizer.load(back, str(tmp_path / "optimizer.safetensors"))
        assert o_back.steps == 3
        # the same next step, bit for bit
        y = batch(31, n=32, d=m.d_out)
        for model, opt in ((m, o), (back, o_back)):
            if m.kind == libsae.ModelKind.AUTOENCODER:
                opt.step(model, x[:32])
            else:
                opt.step_target(model, x[:32], y)
        np.testing.assert_array_equal(back.get("W_ENC"), m.get("W_ENC"))


def test_shards_of_the_families_are_their_slices(tmp_path):
    # a skip transcoder's shard: its features' W_enc columns and W_dec rows,
    # b_dec and W_skip whole; loaded from a file, or made fresh
    half = D_SAE // 2
    m = libsae.Model.transcoder(D_IN, D_OUT, D_SAE, skip=True, seed=1)
    m.set("W_SKIP", np.random.default_rng(2).normal(0, 0.3, (D_OUT, D_IN)).astype(np.float32))
    m.save(str(tmp_path))
    part = libsae.Model.load_shard(str(tmp_path), half, D_SAE)
    assert part.shard == (half, D_SAE, D_SAE)
    np.testing.assert_array_equal(part.get("W_ENC"), m.get("W_ENC")[:, half:])
    np.testing.assert_array_equal(part.get("W_DEC"), m.get("W_DEC")[half:])
    np.testing.assert_array_equal(part.get("W_SKIP"), m.get("W_SKIP"))
    np.testing.assert_array_equal(part.get("B_DEC"), m.get("B_DEC"))
    fresh = libsae.Model.create_transcoder_shard(D_IN, D_OUT, D_SAE, 0, half, skip=True, seed=1)
    np.testing.assert_array_equal(fresh.get("W_DEC"), libsae.Model.transcoder(
        D_IN, D_OUT, D_SAE, skip=True, seed=1).get("W_DEC")[:half])
    # a Matryoshka SAE's shard keeps the whole model's widths, loaded or made
    mat = libsae.Model(D_IN, D_SAE, arch="matryoshka", k=3, widths=[6], seed=1)
    mat.save(str(tmp_path / "m.safetensors"))
    loaded = libsae.Model.load_shard(str(tmp_path / "m.safetensors"), 0, half)
    made = libsae.Model.create_matryoshka_shard(D_IN, D_SAE, 0, half, k=3, widths=[6], seed=1)
    for part in (loaded, made):
        assert part.shard == (0, half, D_SAE)
        assert part.widths == mat.widths == (6, D_SAE)
        np.testing.assert_array_equal(part.get("W_DEC"), mat.get("W_DEC")[:half])
    with pytest.raises(libsae.InvalidArgError):
        libsae.Model.create_matryoshka_shard(D_IN, D_SAE, half, half, k=3, widths=[6])
