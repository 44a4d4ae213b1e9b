"""libsae.train and sae-train resume each other's runs: a run stopped by
one and finished by the other has, byte for byte, the checkpoint of the run
done in one go (by either). Needs the built sae-train ($SAE_BUILD_DIR/tools,
set by CTest); skipped without it."""
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
CLI = ["--d-sae", "32", "--batch", "64", "--seed", "5", "--lr", "0.002", "--clip", "1", "--dead-window", "200", "--normalize", "--b-dec-init", "median",
       "--resample-every", "3", "--resample-window", "64", "--sample", "300",
       "--lr-schedule", "linear", "--lr-decay", "0.3", "--log-every", "2"]
PY = dict(d_sae=32, batch_size=64, seed=5, lr=0.002, grad_clip=1, dead_window=200,
          normalize=True, b_dec_init="median", resample_every=3, resample_window=64,
          sample=300, lr_schedule="linear", lr_decay_fraction=0.3, log_every=2, progress=False,
          jumprelu_bandwidth=0.02)  # sae-train's default --bandwidth, set in every run


@pytest.fixture(scope="module")
def acts(tmp_path_factory):
    d = tmp_path_factory.mktemp("acts")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((700, 12)) * rng.uniform(0.5, 2, 12)).astype(np.float32)
    np.save(d / "acts.npy", x)
    return str(d / "acts.npy")


def sae_train(*args):
    p = subprocess.run([SAE_TRAIN, *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p


def files(d):
    return {name: (d / name).read_bytes() for name in FILES if (d / name).exists()}


ARCHS = {"relu": (["--lambda", "0.3"], {"l1_coeff": 0.3}),
         "topk": (["--arch", "topk", "--k", "4"], {"arch": "topk", "k": 4, "l1_coeff": 0})}


@pytest.mark.parametrize("arch", ARCHS)
def test_python_finishes_an_sae_train_run(acts, tmp_path, arch):
    cli, py = CLI + ARCHS[arch][0], {**PY, **ARCHS[arch][1]}
    sae_train(acts, *cli, "--steps", "10", "--save", str(tmp_path / "whole"))
    sae_train(acts, *cli, "--steps", "10", "--stop-at", "5", "--save", str(tmp_path / "run"),
              "--log", str(tmp_path / "run.csv"))
    r = libsae.train(checkpoint_dir=tmp_path / "run", resume=True, progress=False,
                     metrics_csv=tmp_path / "run.csv")  # appends to sae-train's log
    assert (r.steps, r.tokens, r.model.arch) == (10, 640, libsae.Arch[arch.upper()])
    assert files(tmp_path / "run") == files(tmp_path / "whole")
    with open(tmp_path / "run.csv") as f:
        steps = [line.split(",")[0] for line in f.read().splitlines()[1:]]
    assert steps == ["1", "2", "4", "5", "6", "8", "10"]
    # and the same run in one go in Python, too
    libsae.train(acts, steps=10, checkpoint_dir=tmp_path / "py", **py)
    assert files(tmp_path / "py") == files(tmp_path / "whole")


def test_sae_train_finishes_a_python_run(acts, tmp_path):
    libsae.train(acts, steps=10, checkpoint_dir=tmp_path / "whole", l1_coeff=0.3, **PY)
    libsae.train(acts, steps=10, stop_at=4, checkpoint_dir=tmp_path / "run", l1_coeff=0.3, **PY)
    sae_train("--resume", str(tmp_path / "run"))
    assert files(tmp_path / "run") == files(tmp_path / "whole")
    with open(tmp_path / "run" / "train_state.txt") as f:
        assert "step 10\n" in f.read()
