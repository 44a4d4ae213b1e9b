"""Checkpoint directories that change in one atomic step (sae.h, "Checkpoint
directories"): DIR/gen-<n>/ holds a complete checkpoint, DIR/current points
to it and is replaced by one rename, DIR/<file> are links through current
(SAELens opens DIR as it is). After a crash at any moment DIR holds the
complete previous checkpoint or the complete new one.

    stage = libsae.checkpoint_begin("run")       # "run/gen-8", empty
    try:
        model.save(stage)
        opt.save(stage)
        libsae.checkpoint_commit("run", stage)   # atomic
    except BaseException:
        libsae.checkpoint_abort("run", stage)    # "run" as it was
        raise
    model = libsae.Model.load(libsae.checkpoint_current("run"))

Paths are str or os.PathLike, passed to the library as os.fsencode bytes;
results come back as str (os.fsdecode).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Optional, Union

from . import capi
from .errors import check

__all__ = ["checkpoint_begin", "checkpoint_commit", "checkpoint_abort", "checkpoint_current",
           "CheckpointWriter"]

PathLike = Union[str, "os.PathLike[str]"]

# what sae_checkpoint_begin and _current add to dir's length, at most
_EXTRA = 32


def _path_buffer(directory: bytes) -> ctypes.Array:
    return ctypes.create_string_buffer(len(directory) + _EXTRA + 1)


def checkpoint_begin(directory: PathLike) -> str:
    """Start a new generation (sae_checkpoint_begin): create the directory if
    missing (one level), clear what a crashed writer left, and return the
    empty staging directory to write the checkpoint's files into."""
    d = os.fsencode(directory)
    out = _path_buffer(d)
    check(capi.lib.sae_checkpoint_begin(d, out, len(out)), "sae_checkpoint_begin")
    return os.fsdecode(out.value)


def checkpoint_commit(directory: PathLike, stage: PathLike) -> None:
    """Make stage (from checkpoint_begin) the current generation, atomically
    (sae_checkpoint_commit)."""
    check(capi.lib.sae_checkpoint_commit(os.fsencode(directory), os.fsencode(stage)),
          "sae_checkpoint_commit")


def checkpoint_abort(directory: PathLike, stage: PathLike) -> None:
    """Remove the staging directory after a failed write
    (sae_checkpoint_abort); the directory is as it was."""
    check(capi.lib.sae_checkpoint_abort(os.fsencode(directory), os.fsencode(stage)),
          "sae_checkpoint_abort")


def checkpoint_current(directory: PathLike) -> str:
    """The directory holding the current checkpoint (sae_checkpoint_current):
    DIR/gen-<n>, or DIR itself for a flat directory from before."""
    d = os.fsencode(directory)
    out = _path_buffer(d)
    check(capi.lib.sae_checkpoint_current(d, out, len(out)), "sae_checkpoint_current")
    return os.fsdecode(out.value)


class CheckpointWriter:
    """A new generation as a context manager: checkpoint_begin on creation,
    checkpoint_commit when the block ends normally, checkpoint_abort when it
    raises (or on abort()).

        with libsae.CheckpointWriter("run") as stage:
            model.save(stage.path)
            opt.save(stage.path)
    """

    def __init__(self, directory: PathLike) -> None:
        self.directory = directory
        self.path = checkpoint_begin(directory)
        self._open: Optional[bool] = True

    def commit(self) -> None:
        """Make the staged generation current."""
        if not self._open:
            raise ValueError("this checkpoint was already committed or aborted")
        checkpoint_commit(self.directory, self.path)
        self._open = False

    def abort(self) -> None:
        """Remove the staged generation (idempotent)."""
        if self._open:
            self._open = False
            checkpoint_abort(self.directory, self.path)

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
