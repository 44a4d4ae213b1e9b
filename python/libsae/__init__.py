"""libsae: train sparse autoencoders fast on the CPU, from Python.

A thin, complete binding of the libsae C library (ctypes + numpy):

    import numpy as np
    import libsae

    model = libsae.Model(768, 16384, arch="topk", k=32, seed=1)
    with libsae.Optimizer(model, lr=4e-4) as opt:
        for x in batches:                # (n, 768) float32: numpy, memmap or torch CPU
            losses = opt.step(model, x)  # Losses(loss, l2, l1, l0) before the update
    f = model.encode(x)                  # (n, 16384) float32
    model.save("run")                    # an existing directory: SAELens opens it

or the whole training run, with the recipe, checkpoints and a progress bar:

    result = libsae.train("acts.npy", d_sae=16384, l1_coeff=5, steps=20_000,
                          checkpoint_dir="run", checkpoint_every=5_000)

for every family: arch "relu", "topk", "batchtopk", "jumprelu", "gated" or
"matryoshka" (widths=[...]), and transcoders from x to a target y
(target="mlp_out.npy", skip=True for a skip transcoder); see libsae.train.

Buffers pass without copies when they are float32 and C-contiguous; other
dtypes or layouts raise TypeError/ValueError naming the problem. Every
failing call raises a subclass of SAEError carrying the status and the
library's message. The raw C API is libsae.capi (one typed ctypes table).
"""

from __future__ import annotations

from . import capi
from .checkpoint_dir import (CheckpointWriter, checkpoint_abort, checkpoint_begin,
                             checkpoint_commit, checkpoint_current)
from .enums import (Arch, BDecInit, Gemm, Kernel, LrSchedule, ModelKind, Option, OptionFlag,
                    Parallel, Precision, Status, Tensor)
from .errors import (ERRORS, CommError, FormatError, InvalidArgError, NoMemError, NonFiniteError, SAEError,
                     SAEIOError, StateError, error_detail, status_string)
from .model import Losses, Model, estimate_input_scale, shard_range, total_variance
from .features import FeatureStats, SparseCodes, decoder_neighbors, encode_sparse, max_cosine
from .optimizer import Optimizer
from .options import OptionInfo, gemm_backend
from .options import info as option_info
from .rng import Rng
from .train import TrainResult, train

__version__ = "0.2.0"


def version() -> str:
    """The loaded library's version string (sae_version_string)."""
    return capi.lib.sae_version_string().decode()


def version_number() -> int:
    """The loaded library's version as MAJOR*10000 + MINOR*100 + PATCH."""
    return int(capi.lib.sae_version_number())


def library_path() -> str:
    """The file of the loaded libsae.so.0."""
    return capi.library_path


__all__ = [
    "Arch", "BDecInit", "Gemm", "Kernel", "LrSchedule", "ModelKind", "Option", "OptionFlag",
    "Parallel", "Precision", "Status", "Tensor", "gemm_backend", "shard_range", "total_variance",
    "ERRORS", "SAEError", "InvalidArgError", "NoMemError", "NonFiniteError", "SAEIOError",
    "FormatError", "StateError", "CommError", "status_string", "error_detail",
    "Losses", "Model", "Optimizer", "OptionInfo", "option_info", "estimate_input_scale", "Rng",
    "train", "TrainResult", "CheckpointWriter",
    "checkpoint_begin", "checkpoint_commit", "checkpoint_abort", "checkpoint_current",
    "version", "version_number", "library_path", "capi",
    "FeatureStats", "SparseCodes", "encode_sparse", "decoder_neighbors", "max_cosine",
]
