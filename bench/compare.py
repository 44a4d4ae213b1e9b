#!/usr/bin/env python3
"""Run the whole benchmark and print one table: libsae against its floor and
against PyTorch, on the same data, in the same run.

  bench/compare.py [--build DIR] [--reps N] [--threads N]

1. writes a batch of N(0, 1) activations (4096 x 768 float32) to a temp file;
2. runs build/bench/sae-bench on it: step vs (encoder SGEMM + Adam pass),
   interleaved in one process;
3. runs bench/torch_step.py on the same file (PyTorch, same thread count);
4. runs sae-bench --rss and torch_step.py once per (batch, regime) in fresh
   processes, for each one's peak resident memory;
5. prints the merged table with the ratios.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return out


def parse_rows(text, ncols):
    rows = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == ncols and f[0].isdigit():
            rows[(int(f[0]), f[1])] = f
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="256,1024,4096")
    ap.add_argument("--regimes", default="dense,300,30")
    ap.add_argument("--python", default="/usr/bin/python3")
    args = ap.parse_args()
    bench = os.path.join(args.build, "bench", "sae-bench")
    if not os.access(bench, os.X_OK):
        sys.exit(f"compare.py: {bench} not found; build first (cmake --build build)")
    import numpy as np

    d_in, n_max = 768, max(int(b) for b in args.batch.split(","))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "x.f32")
        np.random.default_rng(12345).standard_normal((n_max, d_in), dtype=np.float32).tofile(data)
        common = ["--batch", args.batch, "--regimes", args.regimes, "--reps", str(args.reps)]
        print("running sae-bench ...", file=sys.stderr, flush=True)
        lib_out = run([bench, "--data", data, "--threads", str(args.threads)] + common, env)
        print("running torch_step.py ...", file=sys.stderr, flush=True)
        torch_out = run([args.python, os.path.join(HERE, "torch_step.py"), "--data", data,
                         "--threads", str(args.threads)] + common, env)
        lib_rss, torch_rss = {}, {}
        for b in args.batch.split(","):
            for r in args.regimes.split(","):
                print(f"measuring peak RSS: batch {b}, regime {r} ...", file=sys.stderr, flush=True)
                out = run([bench, "--data", data, "--rss", "--batch", b, "--regimes", r,
                           "--reps", "2", "--threads", str(args.threads)], env)
                m = re.search(r"peak RSS ([0-9.]+) MB", out)
                key = (int(b), "dense" if r == "dense" else f"L0~{r}")
                lib_rss[key] = float(m.group(1))
                out = run([args.python, os.path.join(HERE, "torch_step.py"), "--data", data,
                           "--batch", b, "--regimes", r, "--reps", "1",
                           "--threads", str(args.threads)], env)
                torch_rss[key] = float(out.splitlines()[-1].split()[-1])
    lib = parse_rows(lib_out, 8)
    torch = parse_rows(torch_out, 6)
    print(lib_out.splitlines()[0])
    print(torch_out.splitlines()[0])
    hdr = (f"{'batch':>6} {'regime':>8} {'L0':>6} {'step ms':>8} {'floor ms':>9} {'/floor':>7} "
           f"{'tok/s':>8} {'torch L0':>8} {'torch ms':>9} {'torch tok/s':>11} {'speedup':>8} "
           f"{'RSS MB':>7} {'torch RSS':>9}")
    print(hdr)
    for key in lib:
        f = lib[key]
        t = torch.get(key)
        floor = float(f[4]) + float(f[5])
        line = (f"{key[0]:>6} {key[1]:>8} {f[2]:>6} {float(f[3]):>8.1f} {floor:>9.1f} "
                f"{float(f[6]):>7.2f} {int(f[7]):>8}")
        if t:
            speed = int(f[7]) / int(t[4])
            line += f" {t[2]:>8} {float(t[3]):>9.1f} {int(t[4]):>11} {speed:>7.1f}x"
        line += f" {lib_rss.get(key, float('nan')):>7.0f} {torch_rss.get(key, float('nan')):>9.0f}"
        print(line)


if __name__ == "__main__":
    main()
