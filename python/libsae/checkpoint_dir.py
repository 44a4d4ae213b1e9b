"""Crash-safe checkpoint directories (sae_checkpoint_begin / _commit / _abort
/ _current): a run's directory changes from one complete checkpoint to the
next in one atomic rename, and always reads as a plain checkpoint directory
(SAELens's SAE.load_from_disk, Model.load, Optimizer.load).

    with libsae.CheckpointWriter("run") as stage:   # run/gen-<n>, a new generation
        model.save(stage.path)
        opt.save(stage.path)
    # committed at the end of the block (aborted if it raised): run is the new checkpoint
    model = libsae.Model.load(libsae.current_checkpoint("run"))
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Optional

from .capi import lib
from .errors import check


def _buffer(directory: bytes) -> Any:
    return ctypes.create_string_buffer(len(directory) + 64)  # strlen(dir) + 32 suffice


class CheckpointWriter:
    """A new generation of checkpoint directory `directory` (created if
    missing, its parent must exist): write its files into .path, then
    commit() makes it current atomically, or abort() removes it. As a context
    manager it commits when the block ends normally and aborts otherwise."""

    def __init__(self, directory: Any) -> None:
        self._dir = os.fsencode(directory)
        stage = _buffer(self._dir)
        check(lib.sae_checkpoint_begin(self._dir, stage, len(stage)), "sae_checkpoint_begin")
        self._stage: Optional[bytes] = stage.value
        self.path = os.fsdecode(stage.value)

    def commit(self) -> None:
        """Make the staged generation the directory's current checkpoint."""
        if self._stage is None:
            raise ValueError("this checkpoint was already committed or aborted")
        check(lib.sae_checkpoint_commit(self._dir, self._stage), "sae_checkpoint_commit")
        self._stage = None

    def abort(self) -> None:
        """Remove the staged generation; the directory stays as it was."""
        if self._stage is not None:
            stage, self._stage = self._stage, None
            check(lib.sae_checkpoint_abort(self._dir, stage), "sae_checkpoint_abort")

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def current_checkpoint(directory: Any) -> str:
    """The directory holding `directory`'s complete current checkpoint
    (directory/gen-<n>, or directory itself for flat files from before)."""
    d = os.fsencode(directory)
    path = _buffer(d)
    check(lib.sae_checkpoint_current(d, path, len(path)), "sae_checkpoint_current")
    return os.fsdecode(path.value)
