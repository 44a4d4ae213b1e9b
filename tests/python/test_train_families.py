"""libsae.train for every family beyond ReLU/TopK: Gated, Matryoshka
BatchTopK, transcoders and skip transcoders. Each recovers the ground truth
of a synthetic set (the numbers of tests/test_families_train.c and
test_matryoshka.c), resumes bit for bit from its checkpoint directory, and
refuses the argument combinations that mean nothing."""
import numpy as np
import pytest

import libsae
from helpers import mmcs, synthetic


def level_l2(model, x, width):
    """l2 of the reconstruction from the first `width` features alone."""
    f = model.encode(x)
    f[:, width:] = 0
    return float(np.mean(np.sum((model.decode(f) - x) ** 2, axis=1)))


def test_gated_recovers_the_ground_truth():
    x, truth = synthetic(n=8192, d_in=32, n_true=48, seed=1, active=3)
    r = libsae.train(x, d_sae=96, arch="gated", steps=400, batch_size=256, lr=3e-3,
                     l1_coeff=2.0, progress=False)
    assert r.model.arch == libsae.Arch.GATED and r.steps == 400
    assert r.metrics[-1]["loss"] < 0.6 * r.metrics[0]["loss"]  # measured: 3.44 from 6.58
    assert mmcs(truth, r.model.W_dec) > 0.9                    # measured: 0.986
    assert r.model.fvu(x[:2048]) < 0.2                         # measured: 0.11
    assert r.metrics[-1]["l0"] < 15                            # 3 active per token; measured 9.4


def test_matryoshka_recovers_and_nests():
    """The first level alone reconstructs far better than the same first
    features of a BatchTopK SAE trained alike (the nesting works)."""
    x, truth = synthetic(n=8192, d_in=32, n_true=48, seed=1, active=3)
    kw = dict(d_sae=96, k=3, steps=400, batch_size=256, lr=3e-3, l1_coeff=0, progress=False)
    r = libsae.train(x, arch="matryoshka", widths=[24, 48], **kw)
    assert r.model.widths == (24, 48, 96) and r.model.k == 3  # d_sae appended
    assert mmcs(truth, r.model.W_dec) > 0.9                   # measured: 0.982
    assert r.model.fvu(x[:2048]) < 0.35                       # measured: 0.26 (BatchTopK alike: 0.26)
    levels = r.model.loss_levels(x[:2048])
    assert levels.shape == (3,) and levels[0] == pytest.approx(level_l2(r.model, x[:2048], 24),
                                                               rel=1e-4)
    plain = libsae.train(x, arch="batchtopk", **kw).model
    assert level_l2(r.model, x[:2048], 24) < 0.7 * level_l2(plain, x[:2048], 24)


@pytest.mark.parametrize("skip", [False, True])
def test_transcoders_learn_the_sparse_map(skip):
    """x -> y through 32 sparse directions; the skip transcoder's data adds a
    dense linear part y += A x, which W_skip learns (as test_families_train.c)."""
    x, y, truth_out = synthetic(n=8192, d_in=24, n_true=32, seed=2, active=3, d_out=16)
    a = None
    if skip:
        rng = np.random.default_rng(3)
        a = rng.standard_normal((16, 24)) / np.sqrt(24)
        x = (x + 0.5 * rng.standard_normal(x.shape)).astype(np.float32)
        y = (y + x @ a.T).astype(np.float32)
    r = libsae.train(x, target=y, skip=skip, d_sae=64, arch="topk", k=6, steps=400,
                     batch_size=256, lr=1e-2 if skip else 3e-3, l1_coeff=0, progress=False)
    m = r.model
    assert (m.d_in, m.d_out, m.kind) == (24, 16, libsae.ModelKind.SKIP_TRANSCODER if skip
                                         else libsae.ModelKind.TRANSCODER)
    assert r.metrics[-1]["loss"] < 0.3 * r.metrics[0]["loss"]
    assert mmcs(truth_out, m.W_dec) > 0.9                     # measured: 0.97, 0.95
    assert m.fvu_target(x[:2048], y[:2048]) < (0.3 if skip else 0.15)  # measured: 0.09, 0.20
    if skip:
        assert np.linalg.norm(m.get("W_skip") - a) / np.linalg.norm(a) < 0.3  # measured: 0.20


def test_a_stream_of_pairs_is_the_library_s_steps():
    """A stream source with a stream of targets, each in batches of its own
    size, gives sae_step_target on consecutive rows: the replica's bits."""
    x, y, _ = synthetic(n=1000, d_in=12, n_true=16, seed=4, active=2, d_out=6)
    r = libsae.train((x[i:i + 70] for i in range(0, 1000, 70)), d_sae=20, batch_size=64,
                     target=(y[i:i + 33] for i in range(0, 1000, 33)), lr=1e-3, l1_coeff=0.5,
                     seed=9, progress=False)
    m = libsae.Model.transcoder(12, 6, 20, seed=9)
    opt = libsae.Optimizer(m, lr=1e-3, l1_coeff=0.5, dead_window=100_000)
    fvus = []  # each batch's l2 over its target's total variance (the log's fvu)
    for t in range(1000 // 64):
        yt = y[64 * t:64 * t + 64]
        fvus.append(opt.step_target(m, x[64 * t:64 * t + 64], yt).l2 / libsae.total_variance(yt))
    assert r.steps == 1000 // 64 and m.to_bytes() == r.model.to_bytes()
    assert [row["step"] for row in r.metrics] == [1, 2, 5, 10, 15]
    assert r.metrics[-1]["fvu"] == pytest.approx(np.mean(fvus[10:15]), rel=1e-12)
    with pytest.raises(ValueError, match="target stream ended after 100 rows"):
        libsae.train(iter([x[:200]]), target=iter([y[:100]]), d_sae=8, batch_size=150,
                     progress=False)


FAMILIES = {
    "gated": dict(arch="gated", l1_coeff=1.0, normalize=True, b_dec_init="mean"),
    "matryoshka": dict(arch="matryoshka", k=3, widths=[8, 16], l1_coeff=0,
                       resample_every=3, resample_window=64),
    "skip transcoder": dict(arch="batchtopk", k=3, skip=True, l1_coeff=0),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_bit_for_bit(tmp_path, family):
    x, y, _ = synthetic(n=700, d_in=12, n_true=16, seed=5, active=2, d_out=8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    kw = dict(FAMILIES[family], d_sae=32, batch_size=64, lr=2e-3, progress=False)
    if "skip" in kw:
        kw["target"] = str(tmp_path / "y.npy")
    whole = libsae.train(tmp_path / "x.npy", steps=10, checkpoint_dir=tmp_path / "a", **kw)
    part = libsae.train(tmp_path / "x.npy", steps=10, stop_at=6, checkpoint_dir=tmp_path / "b",
                        **kw)
    assert part.steps == 6
    # the data, the target file, the family and the recipe come from the checkpoint
    rest = libsae.train(checkpoint_dir=tmp_path / "b", resume=True, progress=False)
    assert (rest.steps, rest.tokens) == (10, 640)
    assert rest.train_model.to_bytes() == whole.train_model.to_bytes()
    assert rest.optimizer.to_bytes() == whole.optimizer.to_bytes()
    state = (tmp_path / "b" / "train_state.txt").read_text()
    if "skip" in kw:
        assert f"target {tmp_path / 'y.npy'}\nd_out 8\narch batchtopk\nk 3\n" in state
    else:
        assert "d_out" not in state and "target" not in state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A Gated and a transcoder checkpoint, to resume wrongly."""
    d = tmp_path_factory.mktemp("runs")
    x, y, _ = synthetic(n=300, d_in=12, n_true=16, seed=6, active=2, d_out=8)
    libsae.train(x, d_sae=16, arch="gated", steps=2, batch_size=50, checkpoint_dir=d / "gated",
                 progress=False)
    libsae.train(x, target=y, d_sae=16, steps=2, batch_size=50, checkpoint_dir=d / "tc",
                 progress=False)
    return d, x, y


def test_bad_combinations_are_refused_before_any_work(tmp_path):
    x, y, _ = synthetic(n=300, d_in=12, n_true=16, seed=6, active=2, d_out=8)
    out = dict(checkpoint_dir=tmp_path / "run", metrics_csv=tmp_path / "log.csv",
               progress=False, steps=2, batch_size=50, d_sae=16)
    cases = [
        (TypeError, "widths apply to arch='matryoshka', not to topk",
         dict(arch="topk", k=2, widths=[4, 16])),
        (TypeError, "widths apply to arch='matryoshka', not to relu", dict(widths=[8])),
        (TypeError, "arch='matryoshka' needs widths", dict(arch="matryoshka", k=2)),
        (libsae.InvalidArgError, "sae_model_create_matryoshka",
         dict(arch="matryoshka", k=2, widths=[8, 4])),
        (TypeError, "arch 'gated': transcoders are relu, topk, batchtopk or jumprelu",
         dict(arch="gated", target=y)),
        (TypeError, "arch 'matryoshka': transcoders are",
         dict(arch="matryoshka", k=2, widths=[8], target=y)),
        (TypeError, "skip applies to transcoders", dict(skip=True)),
        (TypeError, "d_out applies to transcoders", dict(d_out=8)),
        (ValueError, "normalize: applies to autoencoders", dict(target=y, normalize=True)),
        (ValueError, "b_dec_init: applies to autoencoders", dict(target=y, b_dec_init="mean")),
        (ValueError, "resample_every: applies to autoencoders", dict(target=y, resample_every=2)),
        (ValueError, "not of gated ones", dict(arch="gated", resample_every=2)),
        (ValueError, "the target has 299 rows but the training data 300", dict(target=y[:299])),
        (ValueError, "the target has 8 columns, d_out is 6", dict(target=y, d_out=6)),
        (TypeError, "target must be an array or a file", dict(target=iter([y]))),
        (TypeError, "dtype float64", dict(target=y.astype(np.float64))),
        (libsae.InvalidArgError, "sae_model_reinit", dict(decoder_init_norm=-1.0)),
        (libsae.NonFiniteError, "sae_model_reinit", dict(decoder_init_norm=float("nan"))),
    ]
    for kind, message, kw in cases:
        with pytest.raises(kind, match=message):
            libsae.train(x, **out, **kw)
        assert not (tmp_path / "run").exists() and not (tmp_path / "log.csv").exists(), message
    with pytest.raises(TypeError, match="an iterable of batches"):
        libsae.train(iter([x]), target=y, **out)
    with pytest.raises(ValueError, match="needs d_out"):
        y.tofile(tmp_path / "y.f32")
        libsae.train(x, target=str(tmp_path / "y.f32"), **out)
    assert not (tmp_path / "run").exists()
    # skip=False without a target says nothing wrong: an autoencoder
    r = libsae.train(x, skip=False, d_sae=16, steps=1, batch_size=50, progress=False)
    assert r.model.kind == libsae.ModelKind.AUTOENCODER


def test_resuming_against_the_checkpoint_is_refused(runs, tmp_path):
    d, x, y = runs
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    cases = [
        ("gated", dict(target=y), "target: the checkpoint is an autoencoder"),
        ("gated", dict(widths=[8]), r"widths \[8\]: the checkpoint has a gated"),
        ("tc", dict(skip=True), "skip True: the checkpoint is a relu transcoder"),
        ("tc", dict(d_out=4), "d_out 4: the checkpoint has 8"),
        ("tc", dict(target=y[:, :6].copy()), "the target has 6 columns, d_out is 8"),
        ("tc", dict(target=y[:200]), "the target has 200 rows but the training data 300"),
        ("tc", dict(), "a transcoder's and did not record a target file: give its target"),
        ("gated", dict(decoder_init_norm=0.5), "decoder_init_norm applies to a new model"),
    ]
    for run, kw, message in cases:
        with pytest.raises((TypeError, ValueError), match=message):
            libsae.train(x, checkpoint_dir=d / run, resume=True, steps=4, progress=False, **kw)
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
    r = libsae.train(x, target=y, checkpoint_dir=d / "tc", resume=True, steps=3, progress=False)
    assert r.steps == 3 and r.model.kind == libsae.ModelKind.TRANSCODER


def test_a_nan_names_its_data_row(tmp_path):
    """The library's detail names the batch's index; the trainer adds the
    data row (in the shuffled order: the row of the file), as sae-train."""
    x, y, _ = synthetic(n=300, d_in=12, n_true=16, seed=6, active=2, d_out=8)
    y[205, 3] = np.nan
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(libsae.NonFiniteError,
                       match=f"sae_step_target: y.*; the target {tmp_path / 'y.npy'} has a "
                             f"NaN or Inf in row 205$"):
        libsae.train(x, target=str(tmp_path / "y.npy"), d_sae=16, steps=20, batch_size=50,
                     progress=False)
    x[123, 0] = np.inf  # a stream's rows count from its start
    with pytest.raises(libsae.NonFiniteError, match="the source has a NaN or Inf in row 123$"):
        libsae.train(iter([x[:100], x[100:]]), d_sae=16, batch_size=50, progress=False)
