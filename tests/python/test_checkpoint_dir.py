"""libsae.checkpoint_*: a training run's checkpoint directory from Python, as
sae-train writes it -- the layout, resuming from it, SAELens's view of it
(cfg.json and the weights through DIR), a failed write aborted, and errors
as exceptions."""
import json
import os

import numpy as np
import pytest

import libsae
from helpers import same_bits


def write_generation(directory, model, opt, note):
    stage = libsae.checkpoint_begin(directory)
    model.save(stage)
    opt.save(stage)
    with open(os.path.join(stage, "note.txt"), "w") as f:
        f.write(note)
    libsae.checkpoint_commit(directory, stage)
    return stage


def test_generations(tmp_path, rng):
    run = tmp_path / "run"
    x = rng.standard_normal((64, 8)).astype(np.float32)
    with libsae.Model(8, 16, seed=3) as m, libsae.Optimizer(m, lr=1e-3) as o:
        first = write_generation(run, m, o, "step 0")
        assert first == os.path.join(str(run), "gen-1")
        assert libsae.checkpoint_current(run) == first
        o.step(m, x)
        second = write_generation(run, m, o, "step 1")
        assert libsae.checkpoint_current(str(run)) == second == os.path.join(str(run), "gen-2")
        assert sorted(os.listdir(run)) == ["cfg.json", "current", "gen-2", "note.txt",
                                           "optimizer.safetensors", "sae_weights.safetensors"]
        assert os.readlink(run / "current") == "gen-2"
        assert os.readlink(run / "cfg.json") == "current/cfg.json"
        # what SAELens's SAE.load_from_disk reads: DIR/cfg.json and the weights
        cfg = json.loads((run / "cfg.json").read_text())
        assert (cfg["d_in"], cfg["d_sae"]) == (8, 16)
        with libsae.Model.load(str(run)) as back, libsae.Model.load(second) as back2:
            assert same_bits(back.W_dec, m.W_dec) and same_bits(back2.W_dec, m.W_dec)
            with libsae.Optimizer.load(back, libsae.checkpoint_current(run)) as o2:
                assert o2.steps == 1
        assert (run / "note.txt").read_text() == "step 1"


def test_abort_and_errors(tmp_path):
    run = tmp_path / "run"
    with libsae.Model(4, 8, seed=1) as m, libsae.Optimizer(m) as o:
        write_generation(run, m, o, "kept")
        before = sorted(os.listdir(run))
        stage = libsae.checkpoint_begin(run)
        (tmp_path / "run" / "gen-2" / "half.bin").write_bytes(b"\0" * 10)
        libsae.checkpoint_abort(run, stage)
        assert sorted(os.listdir(run)) == before
        with pytest.raises(libsae.InvalidArgError) as e:  # (the detail: tests/test_checkpoint_dir.c)
            libsae.checkpoint_commit(run, tmp_path / "elsewhere" / "gen-3")
        assert e.value.status == libsae.Status.E_INVALID_ARG
        with pytest.raises(libsae.InvalidArgError):
            libsae.checkpoint_abort(run, libsae.checkpoint_current(run))
        with pytest.raises(libsae.SAEIOError):
            libsae.checkpoint_current(tmp_path)
        with pytest.raises(libsae.SAEIOError):
            libsae.checkpoint_current(tmp_path / "missing")
        assert sorted(os.listdir(run)) == before


def test_the_writer_commits_or_aborts(tmp_path):
    """CheckpointWriter: committed at the end of a with block, aborted when
    the block raises, once only."""
    run = tmp_path / "run"
    m = libsae.Model(4, 8, seed=1)
    opt = libsae.Optimizer(m)
    with libsae.CheckpointWriter(run) as stage:
        m.save(stage.path)
        opt.save(stage.path)
    first = libsae.checkpoint_current(run)
    assert first == stage.path and libsae.Model.load(run).to_bytes() == m.to_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with libsae.CheckpointWriter(run) as stage:
            m.save(stage.path)
            raise RuntimeError("boom")
    assert not os.path.exists(stage.path) and libsae.checkpoint_current(run) == first
    w = libsae.CheckpointWriter(run)
    w.abort()
    w.abort()  # idempotent
    with pytest.raises(ValueError, match="already"):
        w.commit()
    with pytest.raises(libsae.InvalidArgError):  # an empty stage cannot be committed
        with libsae.CheckpointWriter(run):
            pass
    assert libsae.checkpoint_current(run) == first
