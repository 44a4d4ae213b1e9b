"""libsae.train: ground truth recovered from synthetic data, every source
kind (array, memmap, .npy path, iterator), the log against a replica through
the library's calls, checkpoints resumed bit for bit, Ctrl-C, and errors."""
import csv
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import libsae
from libsae.train import COLUMNS
from helpers import mmcs, synthetic

SHUFFLE_STREAM = 0x5BA7C4  # the batch order's stream (python/libsae/_data.py)


def test_recovers_the_ground_truth():
    x, truth = synthetic()
    r = libsae.train(x, d_sae=64, steps=600, batch_size=128, lr=3e-3, l1_coeff=1.0,
                     normalize=True, b_dec_init="median", progress=False)
    assert (r.steps, r.tokens, r.interrupted) == (600, 600 * 128, False)
    assert mmcs(truth, r.model.W_dec) > 0.9
    # the exported model takes raw x: its reconstruction of x is the trained
    # model's reconstruction of s x, divided by s
    assert r.scale != 1.0 and r.model.fvu(x[:512]) < 0.2
    np.testing.assert_allclose(r.model(x[:64]), r.train_model(x[:64] * np.float32(r.scale)) / r.scale,
                               rtol=1e-3, atol=1e-4)


def test_the_log_is_the_library_s_numbers(tmp_path):
    """A replica through Model/Optimizer and the same batch order gives the
    same bits and the same rows."""
    x, _ = synthetic(n=300)
    r = libsae.train(x, d_sae=32, steps=12, batch_size=64, seed=3, lr=1e-3, log_every=5,
                     metrics_csv=tmp_path / "log.csv", progress=False, lr_schedule="linear",
                     lr_decay_fraction=0.5)
    m = libsae.Model(16, 32, seed=3)
    opt = libsae.Optimizer(m, lr=1e-3, lr_schedule="linear", lr_decay_fraction=0.5,
                           total_steps=12, dead_window=100_000)  # the trainer's dead window
    # each epoch shuffles the previous epoch's order again (as sae-train)
    rng, order, pos, losses = libsae.Rng(3, SHUFFLE_STREAM), np.arange(300, dtype=np.uint64), 300, []
    fvus = []  # each batch's l2 over its total variance (sae-train's log fvu)
    for _ in range(12):
        rows = []
        while len(rows) < 64:
            if pos == 300:
                rng.shuffle(order)
                pos = 0
            rows.append(int(order[pos]))
            pos += 1
        batch = x[rows]
        losses.append(opt.step(m, batch))
        fvus.append(losses[-1].l2 / libsae.total_variance(batch))
    assert m.to_bytes() == r.model.to_bytes() and opt.to_bytes() == r.optimizer.to_bytes()
    assert [row["step"] for row in r.metrics] == [1, 2, 5, 10, 12]
    row = r.metrics[-1]
    assert row["loss"] == pytest.approx(np.mean([l.loss for l in losses[10:12]]), rel=1e-12)
    assert row["l0"] == pytest.approx(np.mean([l.l0 for l in losses[10:12]]), rel=1e-12)
    assert row["lr_t"] == opt.lr_at(12) and row["lambda_t"] == opt.l1_coeff_at(12)
    assert row["fvu"] == pytest.approx(np.mean(fvus[10:12]), rel=1e-12) and row["tokens"] == 12 * 64
    assert row["dead_frac"] == opt.dead_count(100_000) / 32
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == COLUMNS and [int(r["step"]) for r in rows] == [1, 2, 5, 10, 12]
    assert float(rows[-1]["loss"]) == pytest.approx(row["loss"], rel=1e-8)


def test_sources_array_memmap_npy_and_torch(tmp_path):
    x, _ = synthetic(n=500)
    np.save(tmp_path / "x.npy", x)
    x.tofile(tmp_path / "x.f32")
    kw = dict(d_sae=32, steps=6, batch_size=50, progress=False)
    want = libsae.train(x, **kw).model.to_bytes()
    assert libsae.train(tmp_path / "x.npy", **kw).model.to_bytes() == want
    assert libsae.train(np.load(tmp_path / "x.npy", mmap_mode="r"), **kw).model.to_bytes() == want
    assert libsae.train(str(tmp_path / "x.f32"), d_in=16, **kw).model.to_bytes() == want
    torch = pytest.importorskip("torch")
    assert libsae.train(torch.from_numpy(x), **kw).model.to_bytes() == want
    with pytest.raises(TypeError, match="float64"):
        libsae.train(x.astype(np.float64), **kw)
    with pytest.raises(ValueError, match="needs d_in"):
        libsae.train(str(tmp_path / "x.f32"), **kw)


def test_streaming_from_an_iterator():
    x, truth = synthetic(n=6000)
    sizes = []

    def host():  # a host producing activations in batches of its own size
        for i in range(0, len(x), 100):
            sizes.append(100)
            yield x[i:i + 100]

    r = libsae.train(host(), d_sae=64, batch_size=128, lr=3e-3, l1_coeff=0.05, progress=False)
    assert r.steps == 6000 // 128 and r.tokens == r.steps * 128 and sum(sizes) == 6000
    assert r.metrics[-1]["step"] == r.steps
    # the same rows in batches of exactly batch_size pass as they are
    exact = libsae.train((x[i:i + 128] for i in range(0, 6000 - 127, 128)), d_sae=64,
                         batch_size=128, lr=3e-3, l1_coeff=0.05, progress=False)
    assert exact.model.to_bytes() == r.model.to_bytes()
    with pytest.raises(ValueError, match="columns"):
        libsae.train(iter([x[:10], x[:10, :8].copy()]), d_sae=8, batch_size=15, progress=False)


def test_checkpoint_and_resume_bit_for_bit(tmp_path):
    x, _ = synthetic(n=700)
    kw = dict(d_sae=32, batch_size=64, lr=2e-3, normalize=True, b_dec_init="mean",
              resample_every=4, resample_window=64, progress=False)
    whole = libsae.train(x, steps=10, checkpoint_dir=tmp_path / "a", checkpoint_every=4, **kw)
    part = libsae.train(x, steps=10, stop_at=6, checkpoint_dir=tmp_path / "b", **kw)
    assert part.steps == 6
    rest = libsae.train(x, checkpoint_dir=tmp_path / "b", resume=True, progress=False)
    assert rest.steps == 10 and rest.tokens == whole.tokens
    assert rest.train_model.to_bytes() == whole.train_model.to_bytes()
    assert rest.optimizer.to_bytes() == whole.optimizer.to_bytes()
    assert [r["step"] for r in rest.metrics] == [10]
    for name in ("sae_weights.safetensors", "optimizer.safetensors", "train_weights.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the checkpoint is the model SAELens opens: the exported (folded) one
    assert libsae.Model.load(tmp_path / "a").to_bytes() == whole.model.to_bytes()
    with pytest.raises(ValueError, match="already at step 10"):
        libsae.train(x, steps=8, checkpoint_dir=tmp_path / "a", resume=True, progress=False)
    with pytest.raises(ValueError, match="d_sae 64"):
        libsae.train(x, d_sae=64, checkpoint_dir=tmp_path / "a", resume=True, progress=False)
    with pytest.raises(ValueError, match="trained on 700 x 16"):
        libsae.train(x[:600], checkpoint_dir=tmp_path / "a", resume=True, steps=12,
                     progress=False)


def test_progress_lines_and_option_errors(capsys):
    x, _ = synthetic(n=256)
    libsae.train(x, d_sae=16, steps=3, batch_size=32, progress="plain", log_every=2)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("step 1/3 ") and "loss" in err[0] and "dead" in err[0]
    assert len(err) == 3
    with pytest.raises(TypeError, match="unknown option 'learning_rate'"):
        libsae.train(x, d_sae=16, learning_rate=1)
    with pytest.raises(libsae.InvalidArgError, match="l1_coeff"):
        libsae.train(x, d_sae=16, l1_coeff=-1)
    with pytest.raises(TypeError, match="needs d_sae"):
        libsae.train(x)


def test_ctrl_c_stops_after_the_step(tmp_path):
    """SIGINT mid-run: the run ends after a whole step with its row, its
    checkpoint and interrupted=True; resuming finishes it as if uninterrupted."""
    x, _ = synthetic(n=4000)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys, libsae
        r = libsae.train({str(tmp_path / 'x.npy')!r}, d_sae=64, steps=100000, batch_size=256,
                         checkpoint_dir={str(tmp_path / 'run')!r}, metrics_csv={str(tmp_path / 'log.csv')!r},
                         log_every=1, progress="plain")
        print("RESULT", r.steps, r.interrupted, flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # wait until it trains
        if line.startswith("step 20/"):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    steps = int(out.split()[1])
    assert out.split()[2] == "True" and 20 <= steps < 100000 and "interrupted" in err
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert int(rows[-1]["step"]) == steps and rows[-1]["checkpoint"] == "1"
    m = libsae.Model.load(tmp_path / "run")
    assert libsae.Optimizer.load(m, tmp_path / "run").steps == steps
