#!/usr/bin/env python3
"""Run the whole benchmark and print one table: libsae against its floor and
against PyTorch (float32, and bfloat16 autocast), on the same data, in the
same run.

  bench/compare.py [--build DIR] [--reps N] [--threads N] [--batch LIST] [--regimes LIST]
                   [--d-in N] [--d-sae N] [--no-rss] [--keep-blas-env]

1. writes a batch of N(0, 1) activations (max batch x 768 float32) to a temp file;
2. runs build/bench/sae-bench on it: step vs (best fp32 encoder GEMM + Adam
   pass), interleaved in one process;
   libsae in float32 and with its bf16 encoder (--precision fp32,bf16);
3. runs bench/torch_step.py on the same file (PyTorch, same thread count),
   once in float32 and once under torch.autocast(cpu, bfloat16); each libsae
   row gets both speedups (fp32 against PyTorch fp32, bf16 against autocast
   are the issue's pairs);
4. runs sae-bench --rss and torch_step.py once per (batch, regime) in fresh
   processes, for each one's peak resident memory;
5. prints the merged table with the ratios.

OpenBLAS picks its kernel when it loads, and an environment may force a slower
one (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE); every command here runs without
those two variables (sae-bench drops them itself and says so), PyTorch too,
whose float32 products also run on the system BLAS (--keep-blas-env keeps
them: a smoke run inside a test). bench/speed_ratios.py imports measure().
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BLAS_KNOBS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return out


def lib_rows(text):
    """sae-bench's table: (batch, arch, regime, prec) -> dict of columns."""
    rows, names = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        f = line.split()
        if f and f[0] == "batch":
            names = f
        elif names and len(f) == len(names) and f[0].isdigit():
            row = dict(zip(names, f))
            rows[(int(f[0]), f[1], f[2], row.get("prec", "fp32"))] = row
    return rows


def torch_rows(text):
    rows = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 6 and f[0].isdigit():
            rows[(int(f[0]), f[1])] = {"L0": f[2], "ms": float(f[3]), "tok": int(f[4]),
                                       "rss": float(f[5])}
    return rows


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=10000)
    ap.add_argument("--batch", default="256,1024,4096")
    ap.add_argument("--regimes", default="dense,300,30")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--precision", default="fp32,bf16",
                    help="libsae's encoder precisions (sae-bench --precision)")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (a smoke run inside a "
                         "test: tests leave them as the environment sets them)")
    return ap.parse_args(argv)


def measure(args):
    """Every command of the comparison; returns a dict: lib (sae-bench rows
    by (batch, arch, regime, prec)), torch32 and torch16 (torch_step.py rows
    by (batch, regime)), lib_rss and torch_rss (MB by (batch, regime)), the
    header lines of the three runs, and the variables unset."""
    bench = os.path.join(args.build, "bench", "sae-bench")
    if not os.access(bench, os.X_OK):
        sys.exit(f"compare.py: {bench} not found; build first (cmake --build build)")
    import numpy as np

    d_in, n_max = args.d_in, max(int(b) for b in args.batch.split(","))
    keep = ["--keep-blas-env"] if args.keep_blas_env else []
    env = {k: v for k, v in os.environ.items() if args.keep_blas_env or k not in BLAS_KNOBS}
    env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    unset = [] if args.keep_blas_env else [f"{k}={os.environ[k]}" for k in BLAS_KNOBS
                                           if k in os.environ]
    shape = ["--d-in", str(d_in), "--d-sae", str(args.d_sae)]
    torch_cmd = [args.python, os.path.join(HERE, "torch_step.py"), "--threads",
                 str(args.threads)] + shape
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "x.f32")
        np.random.default_rng(12345).standard_normal((n_max, d_in), dtype=np.float32).tofile(data)
        common = ["--batch", args.batch, "--regimes", args.regimes, "--reps", str(args.reps)]
        print("running sae-bench ...", file=sys.stderr, flush=True)
        lib_out = run([bench, "--data", data, "--threads", str(args.threads),
                       "--precision", args.precision] + shape + keep + common, env)
        torch_out = {}
        for mode in ("off", "bf16"):
            print(f"running torch_step.py (autocast {mode}) ...", file=sys.stderr, flush=True)
            torch_out[mode] = run(torch_cmd + ["--data", data, "--autocast", mode] + common, env)
        lib_rss, torch_rss = {}, {}
        for b in ([] if args.no_rss else args.batch.split(",")):
            for r in args.regimes.split(","):
                print(f"measuring peak RSS: batch {b}, regime {r} ...", file=sys.stderr, flush=True)
                out = run([bench, "--data", data, "--rss", "--batch", b, "--regimes", r,
                           "--reps", "2", "--threads", str(args.threads)] + shape + keep, env)
                m = re.search(r"peak RSS ([0-9.]+) MB", out)
                key = (int(b), "dense" if r == "dense" else f"L0~{r}")
                lib_rss[key] = float(m.group(1))
                out = run(torch_cmd + ["--data", data, "--batch", b, "--regimes", r,
                                       "--reps", "1"], env)
                torch_rss[key] = float(out.splitlines()[-1].split()[-1])
    return {"lib": lib_rows(lib_out), "torch32": torch_rows(torch_out["off"]),
            "torch16": torch_rows(torch_out["bf16"]), "lib_rss": lib_rss,
            "torch_rss": torch_rss, "unset": unset,
            "header": [line for line in lib_out.splitlines() if line.startswith("#")]
            + ["# " + torch_out["off"].splitlines()[0], "# " + torch_out["bf16"].splitlines()[0]]}


def main():
    args = parse_args()
    r = measure(args)
    lib, t32, t16 = r["lib"], r["torch32"], r["torch16"]
    for line in r["header"]:
        print(line)
    if r["unset"]:
        print("# compare.py ran every command without " + " ".join(r["unset"]))
    hdr = (f"{'batch':>6} {'regime':>8} {'prec':>5} {'L0':>6} {'step ms':>8} {'floor ms':>9} {'/floor':>7} "
           f"{'tok/s':>8} {'torch ms':>9} {'torch tok/s':>12} {'speedup':>8} "
           f"{'bf16ac ms':>9} {'bf16ac tok/s':>12} {'speedup':>8} {'RSS MB':>7} {'torch RSS':>9}")
    print(hdr)
    for key, f in lib.items():
        batch, arch, regime, prec = key
        tk = (batch, regime)
        tok = float(f["tokens/s"])
        line = (f"{batch:>6} {regime:>8} {prec:>5} {f['L0']:>6} {float(f['step_ms']):>8.1f} "
                f"{float(f['floor_ms']):>9.1f} {float(f['ratio']):>7.2f} {tok:>8.0f}")
        for t in (t32, t16):
            if tk in t:
                line += f" {t[tk]['ms']:>9.1f} {t[tk]['tok']:>12} {tok / t[tk]['tok']:>7.1f}x"
            else:
                line += f" {'-':>9} {'-':>12} {'-':>8}"
        line += (f" {r['lib_rss'].get(tk, float('nan')):>7.0f}"
                 f" {r['torch_rss'].get(tk, float('nan')):>9.0f}")
        print(line)


if __name__ == "__main__":
    main()
