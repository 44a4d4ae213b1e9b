"""libsae.train and sae-train resume each other's runs, for every family
(ReLU, TopK, Gated, Matryoshka, a BatchTopK skip transcoder and a JumpReLU
transcoder with their target file): a
run stopped by one and finished by the other has, byte for byte, the
checkpoint of the run done in one go (by either), and the same log (l2, l0
and fvu, whose definitions the two share). Needs the built sae-train ($SAE_BUILD_DIR/tools,
set by CTest); skipped without it."""
import csv
import os
import subprocess

import numpy as np
import pytest

import libsae

SAE_TRAIN = os.path.join(os.environ.get("SAE_BUILD_DIR", "build"), "tools", "sae-train")
pytestmark = pytest.mark.skipif(not os.access(SAE_TRAIN, os.X_OK),
                                reason=f"no sae-train at {SAE_TRAIN} (set SAE_BUILD_DIR)")
FILES = ("sae_weights.safetensors", "cfg.json", "optimizer.safetensors",
         "train_weights.safetensors")

# One run, spelled for both: sae-train's options and libsae.train's arguments.
CLI = ["--d-sae", "32", "--batch", "64", "--seed", "5", "--lr", "0.002", "--clip", "1",
       "--dead-window", "200", "--lr-schedule", "linear", "--lr-decay", "0.3", "--log-every", "2"]
PY = dict(d_sae=32, batch_size=64, seed=5, lr=0.002, grad_clip=1, dead_window=200,
          lr_schedule="linear", lr_decay_fraction=0.3, log_every=2, progress=False,
          jumprelu_bandwidth=0.02)  # sae-train's default --bandwidth, set in every run
# The recipe (autoencoders; Gated without resampling)
RECIPE_CLI = ["--normalize", "--b-dec-init", "median", "--sample", "300"]
RECIPE_PY = dict(normalize=True, b_dec_init="median", sample=300)
RESAMPLE_CLI = ["--resample-every", "3", "--resample-window", "64"]
RESAMPLE_PY = dict(resample_every=3, resample_window=64)
# Each family: its options; TARGET is replaced by the target file's path.
TARGET = object()
ARCHS = {
    "relu": (RECIPE_CLI + RESAMPLE_CLI + ["--lambda", "0.3"],
             {**RECIPE_PY, **RESAMPLE_PY, "l1_coeff": 0.3}),
    "topk": (RECIPE_CLI + RESAMPLE_CLI + ["--arch", "topk", "--k", "4"],
             {**RECIPE_PY, **RESAMPLE_PY, "arch": "topk", "k": 4, "l1_coeff": 0}),
    "gated": (RECIPE_CLI + ["--arch", "gated", "--lambda", "1", "--decoder-init-norm", "0.3"],
              {**RECIPE_PY, "arch": "gated", "l1_coeff": 1, "decoder_init_norm": 0.3}),
    "matryoshka": (RECIPE_CLI + RESAMPLE_CLI + ["--arch", "matryoshka", "--k", "4", "--widths",
                                                "8,16"],
                   {**RECIPE_PY, **RESAMPLE_PY, "arch": "matryoshka", "k": 4, "widths": [8, 16],
                    "l1_coeff": 0}),
    "skip_transcoder": (["--target", TARGET, "--skip", "--arch", "batchtopk", "--k", "4"],
                        {"target": TARGET, "skip": True, "arch": "batchtopk", "k": 4,
                         "l1_coeff": 0}),
    "jumprelu_transcoder": (["--target", TARGET, "--arch", "jumprelu", "--threshold", "0.01",
                             "--lambda", "0.1"],
                            {"target": TARGET, "arch": "jumprelu", "threshold": 0.01,
                             "l1_coeff": 0.1}),
}


def spelled(arch, target):
    """sae-train's options and libsae.train's arguments of the family."""
    cli, py = ARCHS[arch]
    return ([target if v is TARGET else v for v in CLI + cli],
            {**PY, **{k: target if v is TARGET else v for k, v in py.items()}})


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    """The activations' file and a target file (a row per row) for transcoders."""
    d = tmp_path_factory.mktemp("acts")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((700, 12)) * rng.uniform(0.5, 2, 12)).astype(np.float32)
    np.save(d / "acts.npy", x)
    y = (np.tanh(x @ rng.standard_normal((12, 8)))).astype(np.float32)
    np.save(d / "target.npy", y)
    return str(d / "acts.npy"), str(d / "target.npy")


def sae_train(*args):
    p = subprocess.run([SAE_TRAIN, *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


def files(d):
    return {name: (d / name).read_bytes() for name in FILES if (d / name).exists()}


def log_rows(path):
    """A training log's rows: (step, l2, l0, fvu) each."""
    with open(path) as f:
        return [(int(r["step"]), float(r["l2"]), float(r["l0"]), float(r["fvu"]))
                for r in csv.DictReader(f)]


def same_log(got, want):
    """The rows of two logs of one run: same steps, and l2, l0 and fvu equal up
    to sae-train's 6 printed digits (half a unit of the 6th: 5e-6 relative)."""
    assert [r[0] for r in got] == [r[0] for r in want]
    for g, w in zip(got, want):
        assert g[1:] == pytest.approx(w[1:], rel=5e-6, abs=1e-9), f"step {g[0]}"


@pytest.mark.parametrize("arch", ARCHS)
def test_python_finishes_an_sae_train_run(acts, tmp_path, arch):
    acts, target = acts
    cli, py = spelled(arch, target)
    sae_train(acts, *cli, "--steps", "10", "--save", str(tmp_path / "whole"),
              "--log", str(tmp_path / "whole.csv"))
    sae_train(acts, *cli, "--steps", "10", "--stop-at", "5", "--save", str(tmp_path / "run"),
              "--log", str(tmp_path / "run.csv"))
    r = libsae.train(checkpoint_dir=tmp_path / "run", resume=True, progress=False,
                     metrics_csv=tmp_path / "run.csv")  # appends to sae-train's log
    kind = (libsae.ModelKind.SKIP_TRANSCODER if "skip" in py else
            libsae.ModelKind.TRANSCODER if "target" in py else libsae.ModelKind.AUTOENCODER)
    assert (r.steps, r.tokens, r.model.arch, r.model.kind) == \
        (10, 640, libsae.Arch[py.get("arch", "relu").upper()], kind)
    assert len(files(tmp_path / "whole")) >= 3  # weights, cfg.json, optimizer
    assert files(tmp_path / "run") == files(tmp_path / "whole")
    with open(tmp_path / "run.csv") as f:
        steps = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    assert steps == ["1", "2", "4", "5", "6", "8", "10"]
    whole = log_rows(tmp_path / "whole.csv")
    # the stop after step 5 splits the row of steps 5-6 in two; the others match
    same_log([r for r in log_rows(tmp_path / "run.csv") if r[0] not in (5, 6)],
             [r for r in whole if r[0] != 6])
    # and the same run in one go in Python, too, with sae-train's log
    py_run = libsae.train(acts, steps=10, checkpoint_dir=tmp_path / "py", **py)
    assert files(tmp_path / "py") == files(tmp_path / "whole")
    same_log([(r["step"], r["l2"], r["l0"], r["fvu"]) for r in py_run.metrics], whole)
    assert all(0 < r[3] < 2 for r in whole)  # a fraction of the variance, not NaN


@pytest.mark.parametrize("arch", ARCHS)
def test_sae_train_finishes_a_python_run(acts, tmp_path, arch):
    acts, target = acts
    _, py = spelled(arch, target)
    libsae.train(acts, steps=10, checkpoint_dir=tmp_path / "whole", **py)
    libsae.train(acts, steps=10, stop_at=4, checkpoint_dir=tmp_path / "run", **py)
    sae_train("--resume", str(tmp_path / "run"))
    assert files(tmp_path / "run") == files(tmp_path / "whole")
    with open(tmp_path / "run" / "train_state.txt") as f:
        assert "step 10\n" in f.read()
