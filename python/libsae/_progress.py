"""libsae.train's progress display: a tqdm bar when tqdm is installed
(Debian: python3-tqdm), otherwise one plain line per log row on stderr, in
sae-train's format:

    step 2900/3000  563k tok/s  ETA 0:00  loss 0.5822  l2 0.2244  l1 1.193  l0 7.9  dead 1.0%
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional


def _si(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.0f}{unit}" if v / div >= 100 else f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def summary(row: Dict[str, Any]) -> str:
    return (f"loss {row['loss']:.4g}  l2 {row['l2']:.4g}  l1 {row['l1']:.4g}  "
            f"l0 {row['l0']:.1f}  dead {100 * row['dead_frac']:.1f}%")


class Progress:
    """mode: "tqdm", "plain" or None (silent)."""

    def __init__(self, mode: Optional[str], total: Optional[int], start: int,
                 stream: Any = None) -> None:
        self.total, self.start, self.mode = total, start, mode
        self.out = stream if stream is not None else sys.stderr
        self.t0 = time.monotonic()
        self.bar = None
        if mode == "tqdm":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", file=self.out,
                            dynamic_ncols=True, smoothing=0.05)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def row(self, row: Dict[str, Any], tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(summary(row), refresh=False)
        elif self.mode == "plain":
            step = row["step"]
            total = f"/{self.total}" if self.total else ""
            eta = ""
            if self.total and step > self.start:
                rate = (time.monotonic() - self.t0) / (step - self.start)
                eta = f"  ETA {_clock(rate * (self.total - step))}"
            print(f"step {step}{total}  {_si(tokens_per_s)} tok/s{eta}  {summary(row)}",
                  file=self.out, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        elif self.mode == "plain":
            print(text, file=self.out, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def choose(progress: Any) -> Optional[str]:
    """True: tqdm if importable, else plain; False/None: silent; or a mode."""
    if progress is True:
        try:
            import tqdm
        except ImportError:
            return "plain"
        return "tqdm" if tqdm else "plain"
    if not progress:
        return None
    if progress in ("tqdm", "plain"):
        return str(progress)
    raise ValueError(f"progress must be True, False, 'tqdm' or 'plain', got {progress!r}")
