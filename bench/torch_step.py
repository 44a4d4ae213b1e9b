#!/usr/bin/env python3
"""The same SAE training step in PyTorch, for comparison with sae-bench.

One step = forward, loss = l2 + lambda * l1 with the L1 term from decoder row
norms (the same trick libsae uses, so PyTorch is not handicapped by the naive
tensor), backward, clip_grad_norm_(1.0), Adam (lr 5e-5, torch defaults).
With --autocast bf16 the forward runs under torch.autocast("cpu", bfloat16),
as SAELens trains with autocast: its matrix products take bf16 inputs (oneDNN's
bf16 kernels where the CPU has them), parameters and Adam stay float32.
Initialisation as libsae's: decoder rows random directions of norm 0.1,
W_enc = W_dec^T; b_enc lowered uniformly to reach a target L0 (bisection).

Prints one line per (batch, regime) with the median step time, tokens/s, the
measured L0 and the process's peak RSS so far. Data: a raw float32 file
(--data) holding at least max(batch) x d_in values, or N(0, 1) from a seed.
"""
import argparse
import contextlib
import resource
import statistics
import sys
import time

import numpy as np
import torch


def make_model(d_in, d_sae, seed):
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec = 0.1 * w_dec / w_dec.norm(dim=1, keepdim=True)
    params = {
        "W_enc": w_dec.t().contiguous().requires_grad_(True),
        "b_enc": torch.zeros(d_sae, requires_grad=True),
        "W_dec": w_dec.clone().requires_grad_(True),
        "b_dec": torch.zeros(d_in, requires_grad=True),
    }
    return params


def losses(p, x, lam):
    f = torch.relu((x - p["b_dec"]) @ p["W_enc"] + p["b_enc"])
    x_hat = f @ p["W_dec"] + p["b_dec"]
    l2 = (x_hat - x).pow(2).sum(dim=1).mean()
    l1 = (f * p["W_dec"].norm(dim=1)).sum(dim=1).mean()
    return l2 + lam * l1, l2, l1, (f > 0).float().sum(dim=1).mean()


def set_density(p, x, target):
    lo, hi = 0.0, 1.0
    l0 = 0.0
    with torch.no_grad():
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            p["b_enc"].fill_(-mid)
            l0 = float(losses(p, x, 0.0)[3])
            if abs(l0 - target) < 0.02 * target:
                break
            if l0 > target:
                lo = mid
            else:
                hi = mid
    return l0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=10000)
    ap.add_argument("--batch", default="256,1024,4096")
    ap.add_argument("--regimes", default="dense,300,30")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=None)
    ap.add_argument("--lam", type=float, default=5.0)
    ap.add_argument("--autocast", choices=["off", "bf16"], default="off",
                    help="run the forward under torch.autocast(cpu, bfloat16)")
    args = ap.parse_args()
    autocast = (torch.autocast(device_type="cpu", dtype=torch.bfloat16)
                if args.autocast == "bf16" else contextlib.nullcontext())

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    regimes = [0.0 if r == "dense" else float(r) for r in args.regimes.split(",")]
    n_max = max(batches)
    if args.data:
        x_all = np.fromfile(args.data, dtype=np.float32, count=n_max * args.d_in)
        if x_all.size < n_max * args.d_in:
            sys.exit("torch_step.py: --data file too small")
        x_all = torch.from_numpy(x_all.reshape(n_max, args.d_in))
    else:
        x_all = torch.randn(n_max, args.d_in, generator=torch.Generator().manual_seed(12345))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, d_in {args.d_in}, "
          f"d_sae {args.d_sae}, {args.reps} reps (medians), autocast {args.autocast}")
    print(f"{'batch':>6} {'regime':>8} {'L0':>8} {'step ms':>10} {'tokens/s':>11} {'peak RSS MB':>12}")
    for n in batches:
        x = x_all[:n]
        for target in regimes:
            p = make_model(args.d_in, args.d_sae, 1)
            if target > 0:
                set_density(p, x, target)
            opt = torch.optim.Adam(p.values(), lr=5e-5)
            times, l0s = [], []
            for rep in range(args.reps + 1):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with autocast:
                    loss, l2, l1, l0 = losses(p, x, args.lam)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(p.values(), 1.0)
                opt.step()
                dt = time.perf_counter() - t0
                if rep > 0:  # the first step warms up allocators and threads
                    times.append(dt)
                    l0s.append(float(l0))
            step = statistics.median(times)
            regime = "dense" if target == 0 else f"L0~{target:g}"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            print(f"{n:>6} {regime:>8} {statistics.mean(l0s):>8.0f} {step * 1e3:>10.1f} "
                  f"{n / step:>11.0f} {rss:>12.1f}", flush=True)


if __name__ == "__main__":
    main()
