"""libsae.train's checkpoint directories: sae-train's (tools/common/checkpoint.h
and run_state.h), so that each resumes the other's runs.

Transcoders record their target file (the key "target", its path as given)
and width ("d_out"); the kind (skip or not), the architecture, k and
Matryoshka's widths are the model's own.

A checkpoint directory is the library's (sae_checkpoint_begin / _commit /
_current): DIR/gen-<n>/ holds a complete checkpoint, DIR/current points to
it and changes in one rename, and DIR/<file> are links through current, so
SAELens opens DIR as it is. A generation holds

    sae_weights.safetensors, cfg.json  the model as SAELens opens it (with the
                                       input scale folded in under normalize)
    optimizer.safetensors              Adam moments, step count, options
    train_weights.safetensors          under normalize: the model as trained
    train_state.txt                    what else resuming needs: "key value"
                                       lines, then "end" (format 3)
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import numpy as np

from ._data import Rows
from .capi import lib
from .checkpoint_dir import CheckpointWriter, checkpoint_current
from .enums import Arch, ModelKind, enum_value
from .model import Model
from .optimizer import Optimizer
from .rng import Rng

STATE_FILE = "train_state.txt"
TRAIN_WEIGHTS = "train_weights.safetensors"
STATE_FORMAT = 3  # format 3: the batches, the sample and resampling from sae_rng_*
SAMPLE_STREAM = 0x5A3E1E  # the stream of the seed for the recipe's sample
RESAMPLE_STREAM = 0x7E5A000000000000  # + step: the stream of the resampling after a step
ARCH_NAMES = {Arch.RELU: "relu", Arch.TOPK: "topk", Arch.BATCHTOPK: "batchtopk",
              Arch.JUMPRELU: "jumprelu", Arch.GATED: "gated", Arch.MATRYOSHKA: "matryoshka"}
# The keys of train_state.txt in sae-train's order, and their types.
KEYS = {"format": int, "step": int, "tokens": int, "seconds": float, "steps": int, "seed": int,
        "batch": int, "log_every": int, "dead_window": int, "data": str, "rows": int,
        "d_in": int, "input": str, "target": str, "d_out": int, "arch": str, "k": int, "threshold0": float, "scale": float,
        "b_dec_init": str, "sample": int, "resample_every": int, "resample_window": int,
        "hist_every": int}
# Written only when they mean something (as sae-train writes them).
OPTIONAL = {"input": lambda v: bool(v), "target": lambda v: bool(v), "d_out": lambda v: v != 0,
            "k": lambda v: v != 0, "threshold0": lambda v: v > 0,
            "scale": lambda v: v != 1.0, "sample": lambda v: v != 0}


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: missing, corrupt, inconsistent,
    or contradicting the arguments."""


def state_text(state: Dict[str, Any]) -> str:
    lines = [f"# libsae.train checkpoint state (libsae {lib.sae_version_string().decode()}); "
             f"see tools/common/run_state.h"]
    for key, kind in KEYS.items():
        v = state.get(key, kind())  # 0, 0.0 or ""
        if key in OPTIONAL and not OPTIONAL[key](v):
            continue
        if key == "arch" and not isinstance(v, str):
            v = ARCH_NAMES[Arch(v)]
        elif key == "seconds":
            v = f"{v:.3f}"
        elif kind is float:
            v = repr(float(v))  # the shortest text that reads back as the same double
        lines.append(f"{key} {v}")
    return "\n".join(lines + ["end"]) + "\n"


def read_state(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: {e.strerror}") from None
    state: Dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key == "end":
            break
        kind = KEYS.get(key)
        if kind is None:
            continue  # a key of a newer writer
        try:
            state[key] = float.fromhex(value) if kind is float and "0x" in value else kind(value)
        except ValueError:
            raise CheckpointError(f"{path}: {key}: {value!r} is not a {kind.__name__}") from None
    else:
        raise CheckpointError(f"{path}: truncated (no 'end' line)")
    for key in ("format", "step", "tokens", "seed", "batch", "d_in", "data"):
        if key not in state:
            raise CheckpointError(f"{path}: no '{key}' line")
    if state["format"] < STATE_FORMAT:
        raise CheckpointError(f"{path}: format {state['format']} (an sae-train before the "
                              f"library's random numbers): its batch order cannot be followed "
                              f"here; resume it with that sae-train")
    if state["data"] == "synthetic":
        raise CheckpointError(f"{path}: the run trained on sae-train's synthetic data: "
                              f"resume it with sae-train")
    return state


def save(directory: Any, model: Model, opt: Optimizer, state: Dict[str, Any]) -> None:
    """The checkpoint of model, opt and the run state as directory's new
    generation, atomically."""
    with CheckpointWriter(directory) as stage:
        scale = float(state.get("scale", 1.0))
        if scale != 1.0:
            with model.clone() as exported:
                exported.fold_input_scale(scale)
                exported.save(stage.path)
            model.save(os.path.join(stage.path, TRAIN_WEIGHTS))
        else:
            model.save(stage.path)
        opt.save(stage.path)
        with open(os.path.join(stage.path, STATE_FILE), "w", encoding="utf-8") as f:
            f.write(state_text({**state, "format": STATE_FORMAT}))


def load(directory: Any) -> Tuple[Model, Optimizer, Dict[str, Any]]:
    """The model as trained, its optimizer and the run state."""
    where = checkpoint_current(directory)
    state = read_state(os.path.join(where, STATE_FILE))
    trained = os.path.join(where, TRAIN_WEIGHTS)
    model = Model.load(trained if state.get("scale", 1.0) != 1.0 else where)
    opt = Optimizer.load(model, where)
    if opt.steps != state["step"]:
        raise CheckpointError(f"{where}: the optimizer is at step {opt.steps} but {STATE_FILE} at "
                              f"step {state['step']}")
    return model, opt, state


def _name(model: Model) -> str:
    kind = {ModelKind.TRANSCODER: " transcoder", ModelKind.SKIP_TRANSCODER: " skip transcoder"}
    return ARCH_NAMES.get(model.arch, str(model.arch)) + kind.get(model.kind, "")


def check_given(state: Dict[str, Any], model: Model, directory: Any, **given: Any) -> None:
    """Arguments given to a resumed run must agree with its checkpoint."""
    where = os.fspath(directory)
    if state.get("arch") and ARCH_NAMES.get(model.arch) != state["arch"]:
        raise CheckpointError(f"{where}: the model is {ARCH_NAMES.get(model.arch)} but "
                              f"{STATE_FILE} says {state['arch']}")
    transcoder = model.kind != ModelKind.AUTOENCODER
    if transcoder != bool(state.get("d_out")) or (transcoder and model.d_out != state["d_out"]):
        raise CheckpointError(f"{where}: the model is a {_name(model)} (d_out {model.d_out}) but "
                              f"{STATE_FILE} says d_out {state.get('d_out', 0)}")
    problems = []
    if given.get("d_sae") is not None and given["d_sae"] != model.d_sae:
        problems.append(f"d_sae {given['d_sae']}: the checkpoint has {model.d_sae}")
    if given.get("arch") is not None and enum_value(Arch, given["arch"], "arch") != model.arch:
        problems.append(f"arch {given['arch']}: the checkpoint is {ARCH_NAMES[model.arch]}")
    if given.get("k") is not None and given["k"] != model.k:
        problems.append(f"k {given['k']}: the checkpoint has {model.k}")
    widths = given.get("widths")
    if widths is not None:
        w = [int(v) for v in widths]
        if model.arch != Arch.MATRYOSHKA or w not in (list(model.widths), list(model.widths[:-1])):
            have = (f"widths {list(model.widths)}" if model.arch == Arch.MATRYOSHKA
                    else f"a {_name(model)}")
            problems.append(f"widths {w}: the checkpoint has {have}")
    if given.get("seed") is not None and given["seed"] != state["seed"]:
        problems.append(f"seed {given['seed']}: the checkpoint has {state['seed']}")
    if given.get("normalize") and state.get("scale", 1.0) == 1.0:
        problems.append("normalize: the checkpointed run did not normalize")
    if given.get("target") is not None and not transcoder:
        problems.append(f"target: the checkpoint is an autoencoder ({_name(model)})")
    if given.get("skip") is not None and transcoder and \
            bool(given["skip"]) != (model.kind == ModelKind.SKIP_TRANSCODER):
        problems.append(f"skip {given['skip']}: the checkpoint is a {_name(model)}")
    if given.get("d_out") is not None and transcoder and given["d_out"] != model.d_out:
        problems.append(f"d_out {given['d_out']}: the checkpoint has {model.d_out}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def check_data(state: Dict[str, Any], data: Any, model: Model, directory: Any) -> None:
    """The data of a resumed run must have the checkpoint's shape (its
    targets were opened with the model's d_out)."""
    where = os.fspath(directory)
    if isinstance(data, Rows):
        if (data.rows, data.d_in) != (state.get("rows"), state.get("d_in")):
            raise CheckpointError(f"the data is {data.rows} x {data.d_in} but the run in "
                                  f"{where!r} trained on {state.get('rows')} x {state.get('d_in')}")
    elif data.peek_d_in() != model.d_in:
        raise CheckpointError(f"the stream's rows have {data.d_in} values, the model in "
                              f"{where!r} takes {model.d_in}")


def sample_rows(data: Any, n: int, seed: int) -> np.ndarray:
    """The recipe's sample (input scale, b_dec, resampling), as sae-train
    draws it: n rows uniformly at random with replacement from a stream of the
    seed of its own, or all rows in order when there are no more than n; a
    stream's first n rows."""
    if isinstance(data, Rows):
        if n >= data.rows:
            return np.array(data.x)
        r = Rng(seed, SAMPLE_STREAM)
        rows = np.fromiter((r.below(data.rows) for _ in range(n)), dtype=np.intp, count=n)
        return np.ascontiguousarray(data.x[rows])
    return data.peek(n)


def resample_seed(seed: int, step: int) -> int:
    """The seed of the resampling after `step`, as sae-train draws it: the
    first draw of stream RESAMPLE_STREAM + step of the run's seed."""
    return Rng(seed, (RESAMPLE_STREAM + step) & ((1 << 64) - 1)).next()
