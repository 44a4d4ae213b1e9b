"""libsae.train: a whole training run in one call, in the spirit of SAELens's
runner. It only loops the library's calls: every number it reports comes
from the library.

    result = libsae.train("acts.npy", d_sae=16384, l1_coeff=5, lr=5e-5,
                          steps=50_000, normalize=True, b_dec_init="median",
                          lr_schedule="linear", lr_decay_fraction=0.2,
                          checkpoint_dir="run", checkpoint_every=10_000,
                          metrics_csv="run.csv")
    result.model        # the trained model, taking raw activations
    result.metrics      # a dict per log row, with sae-train's CSV columns

The source is an array (numpy, np.memmap, torch CPU tensor), a .npy path (or
raw float32 with d_in=), or any iterable of (n, d_in) batches (a host
streaming activations, e.g. from a PyTorch forward hook).

Every family libsae trains:

    libsae.train(x, d_sae=4096, l1_coeff=5)                          # ReLU
    libsae.train(x, d_sae=4096, arch="topk", k=32, l1_coeff=0)       # TopK, BatchTopK
    libsae.train(x, d_sae=4096, arch="jumprelu", threshold=0.001)    # JumpReLU
    libsae.train(x, d_sae=4096, arch="gated", l1_coeff=1)            # Gated
    libsae.train(x, d_sae=4096, arch="matryoshka", k=32,             # Matryoshka
                 widths=[256, 1024, 4096], l1_coeff=0)               #   BatchTopK
    libsae.train("mlp_in.npy", target="mlp_out.npy", d_sae=4096,     # transcoder
                 arch="topk", k=32, skip=True, l1_coeff=0)           #   (skip=True: with W_skip)

A transcoder reads x and reconstructs its target y: target is an array or
file with a row per row of the source (raw float32 with d_out=), or, for a
stream, an iterable yielding the targets of the stream's rows in order.

Checkpoints are sae-train's: checkpoint_dir holds the model as SAELens opens
it, the optimizer and train_state.txt, and a run started here resumes with
`sae-train --resume DIR` and the other way round (resume=True), for every
family (a transcoder's target file is recorded as sae-train's --target is).
"""

from __future__ import annotations

import csv
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np

from . import _checkpoint
from ._data import Rows, nonfinite_row, open_source, open_target, scaled
from ._progress import Progress, choose
from .enums import Arch, BDecInit, ModelKind, Option, enum_value
from .errors import NonFiniteError
from .model import JUMPRELU_THRESHOLD, Model, estimate_input_scale, total_variance
from .optimizer import Optimizer
from .options import parse_options

# sae-train's CSV columns, in order.
COLUMNS = ["step", "tokens", "seconds", "loss", "l2", "l1", "l0", "l0_frac", "dead_frac",
           "checkpoint", "lr_t", "lambda_t", "fvu", "resampled"]
# Defaults of the run's settings that a resumed run takes from its checkpoint.
DEFAULTS = {"batch": 4096, "log_every": 100, "dead_window": 100_000, "sample": 8192,
            "resample_every": 0, "resample_window": 0, "seed": 0}


@dataclass
class TrainResult:
    """What libsae.train returns."""
    model: Model                 # takes raw activations (the input scale folded in)
    optimizer: Optimizer         # its moments refer to train_model
    train_model: Model           # the model as trained (on scale * x); model if scale == 1
    scale: float                 # the input scale (1.0 without normalize)
    steps: int                   # steps taken in all, those of resumed runs included
    tokens: int                  # training rows drawn in all
    seconds: float               # training wall-clock seconds in all
    interrupted: bool            # stopped by Ctrl-C (after a whole step)
    metrics: List[Dict[str, Any]] = field(default_factory=list)  # this call's log rows


class _Interrupt:
    """Ctrl-C sets a flag that the loop reads after each step; a second
    Ctrl-C interrupts at once (KeyboardInterrupt). Only in the main thread,
    where Python delivers signals."""

    def __init__(self) -> None:
        self.hit = False
        self.previous: Any = None

    def __enter__(self) -> "_Interrupt":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class _CsvLog:
    """sae-train's CSV log: a new or empty file gets the header, an existing
    one must start with it and is appended to."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        header = ",".join(COLUMNS)
        append = os.path.exists(path) and os.path.getsize(path) > 0
        if append:
            with open(path, encoding="utf-8") as f:
                if f.readline().rstrip("\n") != header:
                    raise ValueError(f"{os.fspath(path)}: not a libsae training log (its "
                                     f"first line is not {header!r})")
        self.f = open(path, "a" if append else "w", encoding="utf-8", newline="")
        self.w = csv.writer(self.f, lineterminator="\n")
        if not append:
            self.w.writerow(COLUMNS)

    def write(self, row: Dict[str, Any]) -> None:
        self.w.writerow([f"{row[c]:.9g}" if isinstance(row[c], float) else row[c]
                         for c in COLUMNS])
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _log_steps(log_every: int) -> set:
    """Steps 1, 2, 5, 10, 20, 50, ... before the first regular row."""
    out: set = set()
    base = 1
    while base < log_every:
        out.update(s for s in (base, 2 * base, 5 * base) if s < log_every)
        base *= 10
    return out


def _b_dec_name(v: Union[BDecInit, str]) -> str:
    if isinstance(v, str) and v.lower() in ("median", "geometric_median", "mean"):
        return "mean" if v.lower() == "mean" else "median"
    return "mean" if enum_value(BDecInit, v, "b_dec_init") == BDecInit.MEAN else "median"


def _total(steps: Optional[int], tokens: Optional[int], batch: int, data: Any,
           recorded: int) -> Optional[int]:
    """The run's total number of steps."""
    if steps is not None and tokens is not None:
        raise TypeError("give steps or tokens, not both")
    if steps is not None:
        return int(steps)
    if tokens is not None:
        return -(-int(tokens) // batch)
    if recorded:
        return recorded
    if isinstance(data, Rows):
        return -(-data.rows // batch)  # one pass over the rows
    return None  # a stream: until it ends


def _check_family(arch: Optional[Union[Arch, str]], widths: Any, target: Any,
                  skip: Optional[bool], d_out: Optional[int], normalize: bool,
                  b_dec_init: Any, resample_every: Optional[int]) -> None:
    """Refuse the combinations of family arguments that mean nothing (as
    sae-train refuses them), before any work."""
    a = None if arch is None else enum_value(Arch, arch, "arch")
    name = "relu" if a is None else a.name.lower()
    if widths is not None and a != Arch.MATRYOSHKA:
        raise TypeError(f"widths apply to arch='matryoshka', not to {name}")
    if a == Arch.MATRYOSHKA and widths is None:
        raise TypeError("arch='matryoshka' needs widths (the nested level widths, e.g. "
                        "widths=[d_sae // 4, d_sae])")
    if target is None:
        for key, v in (("skip", skip or None), ("d_out", d_out)):  # skip=False: harmless
            if v is not None:
                raise TypeError(f"{key} applies to transcoders (give target=)")
        if resample_every and a == Arch.GATED:
            raise ValueError("resample_every: the library resamples the features of relu, "
                             "topk, batchtopk, jumprelu and matryoshka SAEs, not of gated ones")
        return
    if a in (Arch.GATED, Arch.MATRYOSHKA):
        raise TypeError(f"arch {name!r}: transcoders are relu, topk, batchtopk or jumprelu")
    for key, v in (("normalize", normalize), ("b_dec_init", b_dec_init),
                   ("resample_every", resample_every)):
        if v:
            why = {"normalize": "x and its target would need two scales",
                   "b_dec_init": "a transcoder's b_dec is in the target's space",
                   "resample_every": "the library does not resample transcoders' features"}
            raise ValueError(f"{key}: applies to autoencoders, not transcoders ({why[key]})")


def train(source: Any = None, *, d_sae: Optional[int] = None,
          arch: Optional[Union[Arch, str]] = None,
          k: Optional[int] = None, threshold: Optional[float] = None,
          widths: Optional[List[int]] = None, target: Any = None,
          skip: Optional[bool] = None, d_out: Optional[int] = None,
          decoder_init_norm: Optional[float] = None,
          steps: Optional[int] = None, tokens: Optional[int] = None,
          batch_size: Optional[int] = None, seed: Optional[int] = None,
          normalize: bool = False, b_dec_init: Optional[Union[BDecInit, str]] = None,
          sample: Optional[int] = None, resample_every: Optional[int] = None,
          resample_window: Optional[int] = None, dead_window: Optional[int] = None,
          checkpoint_dir: Optional[Union[str, os.PathLike]] = None,
          checkpoint_every: int = 0, resume: bool = False, stop_at: Optional[int] = None,
          log_every: Optional[int] = None, metrics_csv: Optional[Union[str, os.PathLike]] = None,
          progress: Any = True, d_in: Optional[int] = None, **options: Any) -> TrainResult:
    """Train an SAE on `source`; see the module's documentation.

    Model: d_sae, arch (default "relu"; "topk", "batchtopk", "jumprelu",
    "gated", "matryoshka"), k, threshold, widths (Matryoshka's level widths,
    d_sae appended when missing) as libsae.Model, seed (default 0: the
    initialisation and the batch order), decoder_init_norm (the decoder
    rows' initial L2 norm, SAELens's option; default 0.1, the library's:
    Model.reinit, as sae-train --decoder-init-norm).
    Transcoders: target (the rows x reconstructs: an array or file with a row
    per source row, raw float32 with d_out=, or an iterable of batches for a
    stream source), skip=True for a skip transcoder; relu, topk, batchtopk or
    jumprelu; normalize, b_dec_init and resample_every apply to autoencoders
    only (as in sae-train).
    Length: steps or tokens, the run's total counted from its start (resumed
    runs included); without either, one pass over an array's rows, or until a
    stream ends. batch_size: rows per step (default 4096).
    Recipe: normalize trains on s x, s = estimate_input_scale(sample), folded
    into result.model at the end; b_dec_init "mean" or "median" (geometric)
    of the sample; sample: its rows (default 8192); resample_every: resample
    the features dead for resample_window tokens (default dead_window) every
    so many steps, from the sample. **options: optimizer options by name
    (lr, l1_coeff, lr_schedule, lr_warmup_steps, auxk_coeff, ...), checked
    before anything runs; total_steps defaults to the run's total.
    Checkpoints: into checkpoint_dir after every checkpoint_every steps and
    at the end (also after Ctrl-C); resume=True continues the run found there,
    taking the data (a file's recorded path when source is None), the model,
    seed and recipe from it, and the batch size, log and resampling settings
    unless given; options given apply from the next step. stop_at: end after
    that step as if done (for jobs with a time limit).
    Log: a row every log_every steps (default 100), at steps 1, 2, 5, 10, ...
    before the first, and at the last: step, tokens, seconds, the means of
    loss, l2, l1 and l0 over the steps since the last row, l0_frac, dead_frac
    (features silent for dead_window tokens, default 100000), checkpoint,
    lr_t and lambda_t (the step's, from the schedules), fvu (the mean over
    the steps since the last row of each batch's l2 / total_variance(batch),
    the batch's FVU as its step measured it, of the target for a transcoder;
    sae-train's definition, at no extra forward pass) and resampled. metrics_csv: also append
    them to a CSV file (sae-train's columns). progress: True (tqdm when
    installed, else a plain line per row on stderr), "plain", "tqdm" or False.

    Ctrl-C stops the run after the step in progress; the row, the checkpoint
    and the result are written as at the end, with result.interrupted True.
    """
    values = parse_options(options, "sae_optimizer_set")  # checked before any work
    mode = choose(progress)
    if not resume:
        _check_family(arch, widths, target, skip, d_out, normalize, b_dec_init, resample_every)
    given = {"batch": batch_size, "log_every": log_every, "dead_window": dead_window,
             "sample": sample, "resample_every": resample_every,
             "resample_window": resample_window, "seed": seed}
    for name, v in given.items():
        if v is not None and (not isinstance(v, (int, np.integer)) or v < 0 or
                              (v == 0 and name not in ("resample_every", "resample_window",
                                                       "seed"))):
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")

    if resume:
        if checkpoint_dir is None:
            raise TypeError("resume=True needs checkpoint_dir")
        model, opt, state = _checkpoint.load(checkpoint_dir)
        if decoder_init_norm is not None:
            raise _checkpoint.CheckpointError(
                f"{os.fspath(checkpoint_dir)}: decoder_init_norm applies to a new model, not "
                f"to the checkpoint's")
        _checkpoint.check_given(state, model, checkpoint_dir, d_sae=d_sae, arch=arch, k=k,
                                widths=widths, seed=seed, normalize=normalize,
                                target=target, skip=skip, d_out=d_out)
        transcoder = model.kind != ModelKind.AUTOENCODER
        if transcoder and target is None:
            if not state.get("target"):
                raise TypeError(f"{os.fspath(checkpoint_dir)}: the run is a transcoder's and did "
                                f"not record a target file: give its target")
            target = state["target"]
        if source is None:
            if not state.get("input"):
                raise TypeError(f"{os.fspath(checkpoint_dir)}: the run did not train on a "
                                f"file: give its source")
            source = state["input"]
        settings = {key: state.get(key, DEFAULTS[key]) if given[key] is None else given[key]
                    for key in DEFAULTS}
        data = open_source(source, int(state["seed"]), d_in or int(state["d_in"]))
        if transcoder:
            open_target(data, target, model.d_out)
        _checkpoint.check_data(state, data, model, checkpoint_dir)
        if isinstance(data, Rows):
            data.skip(int(state["tokens"]))
        scale = float(state.get("scale", 1.0))
        start, drawn, seconds0 = int(state["step"]), int(state["tokens"]), float(state["seconds"])
        recorded_total = int(state.get("steps", 0))
    else:
        if d_sae is None:
            raise TypeError("train() needs d_sae (or resume=True)")
        settings = {key: DEFAULTS[key] if given[key] is None else given[key] for key in DEFAULTS}
        data = open_source(source, settings["seed"], d_in)
        if target is not None:
            open_target(data, target, d_out)
        width = data.d_in if isinstance(data, Rows) else data.peek_d_in()
        a = arch if arch is not None else Arch.RELU
        if target is not None:
            model = Model.transcoder(width, data.d_out, d_sae, arch=a, skip=bool(skip), k=k,
                                     threshold=threshold, seed=settings["seed"])
        else:
            model = Model(width, d_sae, arch=a, k=k, threshold=threshold, widths=widths,
                          seed=settings["seed"])
        if decoder_init_norm is not None:  # the same draws: create's is reinit's at 0.1
            model.reinit(settings["seed"], float(decoder_init_norm))
        opt = Optimizer(model)
        scale = 1.0
        if normalize or b_dec_init:
            x_sample = _checkpoint.sample_rows(data, settings["sample"], settings["seed"])
            if normalize:
                scale = estimate_input_scale(x_sample)
                x_sample = scaled(x_sample, scale)
            if b_dec_init:
                model.init_b_dec(x_sample, BDecInit.MEAN if _b_dec_name(b_dec_init) == "mean"
                                 else BDecInit.GEOMETRIC_MEDIAN)
        state = {"seed": settings["seed"], "arch": model.arch, "k": model.k,
                 "threshold0": (JUMPRELU_THRESHOLD if threshold is None else float(threshold))
                 if model.arch == Arch.JUMPRELU else 0.0,
                 "b_dec_init": _b_dec_name(b_dec_init) if b_dec_init else "none"}
        start, drawn, seconds0, recorded_total = 0, 0, 0.0, 0

    batch = int(settings["batch"])
    total = _total(steps, tokens, batch, data, recorded_total)
    if total is not None and total < start:
        raise ValueError(f"steps {total}: the checkpoint in {str(checkpoint_dir)!r} is "
                         f"already at step {start} (steps is the run's total)")
    for opt_key, value in values.items():
        opt._set(opt_key, value)
    if total is not None and Option.TOTAL_STEPS not in values:
        opt._set(Option.TOTAL_STEPS, float(total))
    # the dead window is also AuxK's and resampling's, as in sae-train
    opt._set(Option.DEAD_WINDOW, float(settings["dead_window"]))
    end = total if stop_at is None else (stop_at if total is None else min(stop_at, total))
    resample_every = int(settings["resample_every"])
    window = int(settings["resample_window"] or settings["dead_window"])
    x_resample = None
    if resample_every:
        x_resample = scaled(_checkpoint.sample_rows(data, settings["sample"], settings["seed"]),
                            scale)
    state.update(settings)
    state.update({"steps": total or 0, "scale": scale, "data": data.kind,
                  "rows": getattr(data, "rows", 0), "d_in": model.d_in, "input": data.path or "",
                  "target": data.target_path or "",
                  "d_out": model.d_out if model.kind != ModelKind.AUTOENCODER else 0})

    log = _CsvLog(metrics_csv) if metrics_csv is not None else None
    bar = Progress(mode, end, start)
    run = _Run(model, opt, state, checkpoint_dir, log, bar, int(settings["dead_window"]),
               start, drawn, seconds0)
    early, log_every_n = _log_steps(int(settings["log_every"])), int(settings["log_every"])
    step, stopping = start, False
    try:
        with _Interrupt() as stop:
            while end is None or step < end:
                pair = data.next(batch, scale)
                if pair is None:
                    break  # the stream ended
                x, y = pair
                try:
                    losses = opt.step(model, x) if y is None else opt.step_target(model, x, y)
                except NonFiniteError as e:  # bad data, or a diverging step?
                    raise nonfinite_row(e, data, x, y) from None
                run.add(losses, x, y)
                step += 1
                bar.step()
                if resample_every and step % resample_every == 0 and step != total:
                    # (not after the last step: those features would never train)
                    run.resampled += opt.resample_dead(
                        model, x_resample, window,
                        seed=_checkpoint.resample_seed(int(settings["seed"]), step))
                stopping = stop.hit  # read once: a Ctrl-C from here on stops after the next step
                last = step == end or stopping
                periodic = bool(checkpoint_every and step % checkpoint_every == 0 and not last)
                if periodic or last or step % log_every_n == 0 or step in early:
                    run.row(step, checkpoint=periodic or (last and checkpoint_dir is not None))
                if periodic:
                    run.save(step)
                    bar.note(f"checkpoint at step {step}: {checkpoint_dir}")
                if stopping:
                    bar.note(f"interrupted: stopped after step {step}")
                    break
            if run.n_acc:  # a stream that ended between rows
                run.row(step, checkpoint=checkpoint_dir is not None)
            if checkpoint_dir is not None and step > start:
                run.save(step)
        interrupted = stopping
    finally:
        bar.close()
        if log:
            log.close()

    exported = model
    if scale != 1.0:
        exported = model.clone()
        exported.fold_input_scale(scale)
    return TrainResult(exported, opt, model, scale, step, run.drawn, run.seconds(),
                       interrupted, run.metrics)


class _Run:
    """The bookkeeping of the loop: the means since the last row, the rows,
    the checkpoints."""

    def __init__(self, model: Model, opt: Optimizer, state: Dict[str, Any], directory: Any,
                 log: Optional[_CsvLog], bar: Progress, dead_window: int, start: int,
                 drawn: int, seconds0: float) -> None:
        self.model, self.opt, self.state, self.directory = model, opt, state, directory
        self.log, self.bar, self.dead_window = log, bar, dead_window
        self.drawn, self.seconds0, self.t0 = drawn, seconds0, time.monotonic()
        self.acc = np.zeros(4)
        self.fvu_sum = 0.0  # the batches' l2 / total variance since the last row
        self.n_acc = self.resampled = 0
        self.t_row, self.drawn_row = self.t0, drawn
        self.metrics: List[Dict[str, Any]] = []

    def seconds(self) -> float:
        return self.seconds0 + time.monotonic() - self.t0

    def add(self, losses: Any, x: np.ndarray, y: Optional[np.ndarray]) -> None:
        self.acc += losses
        # the batch's FVU from its step's l2 (as sae-train: tools/common/train.c)
        variance = total_variance(x if y is None else y)
        self.fvu_sum += losses.l2 / variance if variance > 0 else math.nan
        self.n_acc += 1
        self.drawn += x.shape[0]

    def row(self, step: int, checkpoint: bool) -> None:
        o, d_sae = self.opt, self.model.d_sae
        means = self.acc / max(self.n_acc, 1)
        row = {"step": step, "tokens": self.drawn, "seconds": round(self.seconds(), 3),
               "loss": float(means[0]), "l2": float(means[1]), "l1": float(means[2]),
               "l0": float(means[3]), "l0_frac": float(means[3]) / d_sae,
               "dead_frac": o.dead_count(self.dead_window) / d_sae, "checkpoint": int(checkpoint),
               "lr_t": o.lr_at(step), "lambda_t": o.l1_coeff_at(step),
               "fvu": self.fvu_sum / self.n_acc if self.n_acc else math.nan,
               "resampled": self.resampled}
        self.metrics.append(row)
        if self.log:
            self.log.write(row)
        now = time.monotonic()
        self.bar.row(row, (self.drawn - self.drawn_row) / max(now - self.t_row, 1e-9))
        self.acc[:] = 0
        self.fvu_sum = 0.0
        self.n_acc = self.resampled = 0
        self.t_row, self.drawn_row = now, self.drawn

    def save(self, step: int) -> None:
        self.state.update({"step": step, "tokens": self.drawn, "seconds": self.seconds()})
        _checkpoint.save(self.directory, self.model, self.opt, self.state)


__all__ = ["train", "TrainResult", "COLUMNS"]
