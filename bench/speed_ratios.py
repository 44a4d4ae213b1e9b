#!/usr/bin/python3
"""Every figure of issue 13's target list, measured in one run of this script
(B = 4096, 768 x 10,000, 2 threads by default), ending with a markdown table
ready for bench/RESULTS.md:

1. every architecture's step against the floor (the best fp32 encoder GEMM
   + the Adam pass) at L0 ~ 300 and ~ 30 (k = 300 and 32 for TopK and
   BatchTopK), in fp32 and with the bf16 encoder (whose step is also set
   against the fp32 floor): one sae-bench process, every configuration
   interleaved;
2. each architecture's step against ReLU's at the same L0 (same process);
3. libsae against PyTorch fp32 and PyTorch with bf16 autocast, ReLU at
   L0 ~ 300 and ~ 30 (bench/compare.py's measure(), same data, without the
   peak-memory runs unless --rss);
4. sae-train's steady-state tokens/s on its synthetic data (lambda 0.3,
   steps 20 on) against a sae-bench ReLU step at the L0 the run reached (the
   mean of two sae-bench processes right after the training), in fp32 and
   in bf16 (sae-train --precision, sae-bench --precision).

OpenBLAS picks its kernel when it loads; an environment may force a slower
one. Every command here runs without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
(sae-bench drops them itself; sae-train and PyTorch get an environment
without them), and the kernel that ran is printed from sae-bench's and
sae-train's headers (openblas_get_corename). --smoke runs every part at tiny
sizes in a few seconds, keeping the environment's variables (it is what the
test bench_speed_ratios_smoke runs: tests leave them as they are).

  bench/speed_ratios.py [--build build] [--reps 3] [--steps 60] [--rss]
                        [--train-only] [--no-torch] [--smoke]

On 2 quiet cores of the reference machine the full run should take about
10 minutes, 15 at most (estimated from its parts' sizes, not yet timed on a
quiet machine: sae-bench's 16 configurations ~2-3, PyTorch and its sae-bench
~3, the two sae-train runs and their four sae-bench runs ~4-5).
"""
import argparse
import csv
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLAS_KNOBS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ARCHS = ("relu", "topk", "batchtopk", "jumprelu")


def run(cmd, env=None, stderr=None):
    print("$ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env, text=True,
                          stderr=stderr)
    return done.stdout if stderr is None else (done.stdout, done.stderr)


def bench_table(out):
    """sae-bench's header lines and its rows as dicts."""
    header, rows, names = [], [], None
    for line in out.splitlines():
        if line.startswith("#"):
            header.append(line)
        elif line.split() and line.split()[0] == "batch":
            names = line.split()
        elif names and line.strip():
            rows.append(dict(zip(names, line.split())))
    return header, rows


def bench_core(header):
    """The OpenBLAS kernel sae-bench's header names."""
    for line in header:
        m = re.match(r"# BLAS core: (\S+)", line)
        if m:
            return m.group(1)
    return "?"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--torch-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=10000)
    ap.add_argument("--regimes", default="300,30",
                    help="L0 targets (k for TopK and BatchTopK: 30 is run as 32)")
    ap.add_argument("--steps", type=int, default=60, help="sae-train steps per precision")
    ap.add_argument("--gemm", default="auto")
    ap.add_argument("--lambda", dest="lam", type=float, default=0.3,
                    help="sae-train's lambda (0.3: L0 settles near 40 by step 20 on the "
                         "synthetic data; 1 collapses it towards 0)")
    ap.add_argument("--steady-from", type=int, default=20,
                    help="the first step of sae-train's steady state")
    ap.add_argument("--train-only", action="store_true",
                    help="only part 4 (sae-train against sae-bench)")
    ap.add_argument("--no-torch", action="store_true", help="skip part 3 (PyTorch)")
    ap.add_argument("--rss", action="store_true", help="part 3 with the peak-memory runs")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, one repetition, the environment kept: checks that "
                         "every part runs (its figures mean nothing)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.d_in, args.d_sae, args.batch, args.reps, args.torch_reps = 32, 256, 128, 1, 1
        args.regimes, args.steps, args.steady_from = "40,8", 26, 20
        args.keep_blas_env = True
    return args


def bench_regimes(args):
    """--regimes for sae-bench's architectures: L0 ~ 30 is k = 32."""
    return ",".join("32" if r == "30" else r for r in args.regimes.split(","))


def arch_ratios(args, bench, shape):
    """Parts 1 and 2: one process, every architecture, both precisions."""
    regimes = bench_regimes(args)
    out = run([bench] + shape + ["--arch", ",".join(ARCHS), "--regimes", regimes,
                                 "--precision", "fp32,bf16"])
    header, rows = bench_table(out)
    print(out)
    relu = {(r["regime"].replace("k=", "L0~"), r["prec"]): float(r["step_ms"])
            for r in rows if r["arch"] == "relu"}
    result = []
    for r in rows:
        key = (r["regime"].replace("k=", "L0~"), r["prec"])
        result.append({"arch": r["arch"], "regime": key[0], "prec": r["prec"],
                       "L0": float(r["L0"]), "step_ms": float(r["step_ms"]),
                       "floor_ms": float(r["floor_ms"]), "ratio": float(r["ratio"]),
                       "vs_relu": float(r["step_ms"]) / relu[key] if key in relu
                       else float("nan")})
    return {"rows": result, "core": bench_core(header), "header": header}


def torch_ratios(args):
    """Part 3: bench/compare.py's measurement, ReLU at the regimes, 4096 tokens."""
    sys.path.insert(0, HERE)
    import compare  # noqa: E402  (bench/compare.py, beside this script)
    cargs = compare.parse_args(
        ["--build", args.build, "--reps", str(args.torch_reps), "--threads", str(args.threads),
         "--d-in", str(args.d_in), "--d-sae", str(args.d_sae), "--batch", str(args.batch),
         "--regimes", args.regimes, "--python", args.python]
        + ([] if args.rss else ["--no-rss"]) + (["--keep-blas-env"] if args.keep_blas_env else []))
    r = compare.measure(cargs)
    for line in r["header"]:
        print(line)
    rows = []
    for (batch, arch, regime, prec), f in r["lib"].items():
        peer = r["torch32" if prec == "fp32" else "torch16"].get((batch, regime))
        tok = float(f["tokens/s"])
        rows.append({"regime": regime, "prec": prec, "L0": float(f["L0"]), "tok": tok,
                     "peer_tok": peer["tok"] if peer else float("nan"),
                     "peer": "PyTorch fp32" if prec == "fp32" else "PyTorch bf16 autocast",
                     "speedup": tok / peer["tok"] if peer else float("nan"),
                     "rss": r["lib_rss"].get((batch, regime)),
                     "peer_rss": r["torch_rss"].get((batch, regime))})
    return rows


def bench_relu(bench, shape, l0, prec):
    out = run([bench] + shape + ["--arch", "relu", "--regimes", f"{max(l0, 1.0):.0f}",
                                 "--precision", prec])
    _, rows = bench_table(out)
    return float(rows[0]["tokens/s"]), float(rows[0]["L0"])


def train_ratio(args, bench, train, shape, env, prec):
    """Part 4 for one precision: sae-train end to end, then the bench's ReLU
    step at the L0 it reached."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "train.csv")
        _, err = run([train, "--d-in", str(args.d_in), "--d-sae", str(args.d_sae),
                      "--batch", str(args.batch), "--steps", str(args.steps), "--log-every", "5",
                      "--log", log, "--lambda", str(args.lam), "--precision", prec,
                      "--gemm", args.gemm], env=env, stderr=subprocess.PIPE)
        with open(log, encoding="utf-8") as f:
            log_rows = list(csv.DictReader(f))
    head = next((line for line in err.splitlines() if line.startswith("training on")), "")
    print(head)
    m = re.search(r"BLAS core (\S+)", head)
    # steady state: from --steady-from on (the first steps run dense while
    # half the features fire, the workspace is allocated, and L0 falls)
    steady = [r for r in log_rows if int(r["step"]) >= args.steady_from]
    first, last = steady[0], steady[-1]
    tokens = int(last["tokens"]) - int(first["tokens"])
    seconds = float(last["seconds"]) - float(first["seconds"])
    train_rate = tokens / seconds
    l0 = sum(float(r["l0"]) for r in steady[1:]) / max(1, len(steady) - 1)
    print(f"sae-train {prec}: steps {first['step']}-{last['step']}: {train_rate:,.0f} tokens/s "
          f"at L0 {l0:.1f}")
    # the bench's step at that L0, right after the training and once more
    # after that: on a shared machine the load drifts, so the training is
    # compared with the mean of the two
    rates = []
    for _ in range(2):
        rate, bench_l0 = bench_relu(bench, shape, l0, prec)
        print(f"sae-bench ReLU {prec} step at L0 {bench_l0:.0f}: {rate:,.0f} tokens/s")
        rates.append(rate)
    bench_rate = sum(rates) / len(rates)
    return {"prec": prec, "steps": f"{first['step']}-{last['step']}", "rate": train_rate,
            "L0": l0, "bench_rate": bench_rate, "ratio": train_rate / bench_rate,
            "core": m.group(1) if m else "?"}


def fmt_list(rows, key):
    return ", ".join(f"{r['arch']} {r[key]:.2f}" for r in rows)


def verdict(ok):
    return "**met**" if ok else "not met"


def markdown(args, arch, torch, train, seconds):
    """The tables for RESULTS.md."""
    out = ["**SMOKE RUN (--smoke): tiny sizes, one repetition; the figures mean nothing**", ""] \
        if args.smoke else []
    out += [f"{args.batch} tokens, {args.d_in} x {args.d_sae}, {args.threads} threads, "
           f"`--gemm {args.gemm}`; BLAS core (openblas_get_corename): "
           f"{arch['core'] if arch else '-'} (sae-bench), "
           + ", ".join(f"{t['core']} (sae-train {t['prec']})" for t in train)
           + f"; {'environment kept' if args.keep_blas_env else 'OPENBLAS_CORETYPE/L2_SIZE unset'}"
           f"; {seconds / 60:.1f} min", ""]
    if arch:
        out += ["| arch | regime | prec | L0 | step ms | floor ms | step / fp32 floor | "
                "step / ReLU's |", "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in arch["rows"]:
            out.append(f"| {r['arch']} | {r['regime']} | {r['prec']} | {r['L0']:.0f} | "
                       f"{r['step_ms']:.1f} | {r['floor_ms']:.1f} | {r['ratio']:.2f} | "
                       f"{r['vs_relu']:.2f} |")
        out.append("")
    if torch:
        out += ["| regime | prec | L0 | libsae tokens/s | peer | peer tokens/s | speedup |",
                "|---|---|---:|---:|---|---:|---:|"]
        for r in torch:
            out.append(f"| {r['regime']} | {r['prec']} | {r['L0']:.0f} | {r['tok']:,.0f} | "
                       f"{r['peer']} | {r['peer_tok']:,.0f} | {r['speedup']:.1f}x |")
        out.append("")
    out += ["| sae-train | steady steps | L0 | tokens/s | sae-bench ReLU step at that L0 | "
            "ratio |", "|---|---|---:|---:|---:|---:|"]
    for t in train:
        out.append(f"| {t['prec']} | {t['steps']} | {t['L0']:.1f} | {t['rate']:,.0f} | "
                   f"{t['bench_rate']:,.0f} | {t['ratio']:.2f} |")
    out += ["", "| issue 13 target | measured | status |", "|---|---|---|"]
    high, low = bench_regimes(args).split(",")
    if arch:
        def pick(regime, prec):
            return [r for r in arch["rows"] if r["regime"] == f"L0~{regime}" and r["prec"] == prec]
        lo32, hi32, lo16 = pick(low, "fp32"), pick(high, "fp32"), pick(low, "bf16")
        out.append(f"| fp32 step <= 1.25x floor at L0~{low}, every arch | {fmt_list(lo32, 'ratio')}"
                   f" | {verdict(all(r['ratio'] <= 1.25 for r in lo32))} |")
        out.append(f"| fp32 step <= 1.5x floor at L0~{high}, every arch | "
                   f"{fmt_list(hi32, 'ratio')} | {verdict(all(r['ratio'] <= 1.5 for r in hi32))} |")
        out.append(f"| bf16 step at L0~{low} <= 0.75x the fp32 floor | {fmt_list(lo16, 'ratio')} | "
                   f"{verdict(all(r['ratio'] <= 0.75 for r in lo16))} |")
        others = [r for r in lo32 + lo16 if r["arch"] != "relu"]
        out.append(f"| TopK, BatchTopK, JumpReLU within 1.15x of ReLU (L0~{low}; fp32, bf16) | "
                   + "; ".join(f"{p}: {fmt_list([r for r in others if r['prec'] == p], 'vs_relu')}"
                               for p in ("fp32", "bf16"))
                   + f" | {verdict(all(r['vs_relu'] <= 1.15 for r in others))} |")
    if torch:
        for prec, need in (("fp32", 15.0), ("bf16", 5.0)):
            rs = [r for r in torch if r["prec"] == prec]
            out.append(f"| >= {need:g}x {rs[0]['peer'] if rs else prec} | "
                       + ", ".join(f"{r['regime']} {r['speedup']:.1f}x" for r in rs)
                       + f" | {verdict(rs and all(r['speedup'] >= need for r in rs))} |")
    for t in train:
        out.append(f"| sae-train within 10% of the bench step ({t['prec']}) | {t['ratio']:.2f} "
                   f"(L0 {t['L0']:.0f}) | {verdict(t['ratio'] >= 0.90)} |")
    for t in train:
        hours = 100e6 / t["rate"] / 3600
        out.append(f"| >= 18.5k tokens/s sustained ({t['prec']}; this run's steady steps on the "
                   f"default synthetic data, not the 10M-token log) | {t['rate']:,.0f} tokens/s: "
                   f"100M tokens in {hours:.2f} h | {verdict(t['rate'] >= 18500)} |")
    return "\n".join(out)


def main():
    args = parse_args()
    started = time.time()
    bench = os.path.join(args.build, "bench", "sae-bench")
    train = os.path.join(args.build, "tools", "sae-train")
    for path in (bench, train):
        if not os.access(path, os.X_OK):
            sys.exit(f"speed_ratios.py: {path} not found; build first (cmake --build build)")
    keep = ["--keep-blas-env"] if args.keep_blas_env else []
    shape = ["--d-in", str(args.d_in), "--d-sae", str(args.d_sae), "--batch", str(args.batch),
             "--reps", str(args.reps), "--gemm", args.gemm, "--threads", str(args.threads)] + keep
    env = {k: v for k, v in os.environ.items() if args.keep_blas_env or k not in BLAS_KNOBS}
    unset = [k for k in BLAS_KNOBS if k in os.environ and k not in env]
    print(f"# speed_ratios.py: {'kept' if args.keep_blas_env else 'unset'} "
          f"{' '.join(unset) or 'none set'}", flush=True)

    if not args.no_torch and importlib.util.find_spec("torch") is None:
        print("# PyTorch is not installed (Debian: python3-torch): part 3 skipped")
        args.no_torch = True
    arch = None if args.train_only else arch_ratios(args, bench, shape)
    torch = None if args.train_only or args.no_torch else torch_ratios(args)
    train_rows = [train_ratio(args, bench, train, shape, env, prec) for prec in ("fp32", "bf16")]
    print()
    print(markdown(args, arch, torch, train_rows, time.time() - started))
    # every figure measured: 4 architectures x the regimes x 2 precisions,
    # PyTorch's 2 peers at each regime
    n_regimes = len(args.regimes.split(","))
    missing = []
    if arch and len(arch["rows"]) != len(ARCHS) * n_regimes * 2:
        missing.append(f"{len(arch['rows'])} sae-bench rows")
    if torch is not None and len(torch) != n_regimes * 2:
        missing.append(f"{len(torch)} PyTorch comparisons")
    if missing:
        sys.exit("speed_ratios.py: incomplete: " + ", ".join(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
