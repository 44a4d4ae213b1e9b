"""libsae.CheckpointWriter / current_checkpoint: the library's crash-safe
checkpoint directories from Python."""
import os

import pytest

import libsae


def test_commit_abort_and_current(tmp_path):
    run = tmp_path / "run"
    m = libsae.Model(4, 8, seed=1)
    opt = libsae.Optimizer(m)
    with libsae.CheckpointWriter(run) as stage:
        m.save(stage.path)
        opt.save(stage.path)
    first = libsae.current_checkpoint(run)
    assert os.path.dirname(first) == str(run) and os.path.basename(first).startswith("gen-")
    assert libsae.Model.load(run).to_bytes() == m.to_bytes()  # the directory reads as flat files
    with pytest.raises(RuntimeError, match="boom"):
        with libsae.CheckpointWriter(run) as stage:  # an exception: aborted
            m.save(stage.path)
            raise RuntimeError("boom")
    assert not os.path.exists(stage.path) and libsae.current_checkpoint(run) == first
    w = libsae.CheckpointWriter(run)
    w.abort()
    w.abort()  # idempotent
    with pytest.raises(ValueError, match="already"):
        w.commit()
    with pytest.raises(libsae.SAEIOError):
        libsae.current_checkpoint(tmp_path / "missing")
    with pytest.raises(libsae.InvalidArgError):  # an empty stage cannot be committed
        with libsae.CheckpointWriter(run):
            pass
    assert libsae.current_checkpoint(run) == first
