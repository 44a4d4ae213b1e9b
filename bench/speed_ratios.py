#!/usr/bin/python3
"""The ratios of issue 13, measured in one run of this script (B = 4096,
768 x 10,000 by default):

1. every architecture's step against the floor (the best fp32 encoder GEMM
   + the Adam pass) at L0 ~ 300 and ~ 30 (k = 300 and 32 for TopK and
   BatchTopK), in fp32 and with the bf16 encoder: one sae-bench process,
   every configuration interleaved;
2. each architecture's step against ReLU's at the same L0 (same process);
3. sae-train's steady-state tokens/s on its synthetic data (lambda 0.3,
   steps 20 on) against a sae-bench ReLU step at the L0 the run reached (the
   mean of two sae-bench processes right after the training: the load of a
   shared machine drifts).

sae-bench re-runs itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (its
header says which OpenBLAS kernel ran, openblas_get_corename); sae-train is
run with them unset too, for its own command only, so both use the same
kernel. Usage: bench/speed_ratios.py [--build build] [--reps 3] [--steps 40]
[--train-only]
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile


def run(cmd, env=None):
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env, text=True).stdout
    return out


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=10000)
    ap.add_argument("--steps", type=int, default=40, help="sae-train steps (4096 tokens each)")
    ap.add_argument("--gemm", default="auto")
    ap.add_argument("--lambda", dest="lam", type=float, default=0.3,
                    help="sae-train's lambda (0.3: L0 settles near 40 by step 20 on the "
                         "synthetic data; 1 collapses it towards 0)")
    ap.add_argument("--steady-from", type=int, default=20,
                    help="the first step of sae-train's steady state")
    ap.add_argument("--train-only", action="store_true",
                    help="only part 3 (sae-train against sae-bench)")
    args = ap.parse_args()
    bench = os.path.join(args.build, "bench", "sae-bench")
    train = os.path.join(args.build, "tools", "sae-train")
    shape = ["--d-in", str(args.d_in), "--d-sae", str(args.d_sae), "--batch", str(args.batch),
             "--reps", str(args.reps), "--gemm", args.gemm]

    if not args.train_only:
        arch_ratios(bench, shape)
    return train_ratio(args, bench, train, shape)


def arch_ratios(bench, shape):
    # 1 and 2: one process, every architecture, both precisions
    out = run([bench] + shape + ["--arch", "relu,topk,batchtopk,jumprelu",
                                 "--regimes", "300,32", "--precision", "fp32,bf16"])
    _, rows = bench_table(out)
    print(out)
    relu = {(r["regime"].replace("k=", "L0~"), r["prec"]): float(r["step_ms"])
            for r in rows if r["arch"] == "relu"}
    print("step / floor (targets fp32: <= 1.25 at L0~30, <= 1.5 at L0~300; "
          "bf16 at L0~30: <= 0.75)")
    print(f"{'arch':>10} {'regime':>8} {'prec':>5} {'L0':>6} {'step/floor':>11} "
          f"{'step/relu':>10}")
    for r in rows:
        key = (r["regime"].replace("k=", "L0~"), r["prec"])
        vs_relu = float(r["step_ms"]) / relu[key] if key in relu else float("nan")
        print(f"{r['arch']:>10} {r['regime']:>8} {r['prec']:>5} {float(r['L0']):6.0f} "
              f"{float(r['ratio']):11.2f} {vs_relu:10.2f}")


def bench_relu(bench, shape, l0):
    out = run([bench] + shape + ["--arch", "relu", "--regimes", f"{max(l0, 1.0):.0f}"])
    _, rows = bench_table(out)
    return float(rows[0]["tokens/s"]), float(rows[0]["L0"])


def train_ratio(args, bench, train, shape):
    # 3: sae-train end to end, then the bench's ReLU step at the L0 it reached
    env = dict(os.environ)
    unset = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in env]
    for v in unset:
        del env[v]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "train.csv")
        run([train, "--d-in", str(args.d_in), "--d-sae", str(args.d_sae),
             "--batch", str(args.batch), "--steps", str(args.steps), "--log-every", "5",
             "--log", log, "--lambda", str(args.lam)], env=env)
        with open(log, encoding="utf-8") as f:
            log_rows = list(csv.DictReader(f))
    # steady state: from --steady-from on (the first steps run dense while
    # half the features fire, the workspace is allocated, and L0 falls)
    steady = [r for r in log_rows if int(r["step"]) >= args.steady_from]
    first, last = steady[0], steady[-1]
    tokens = int(last["tokens"]) - int(first["tokens"])
    seconds = float(last["seconds"]) - float(first["seconds"])
    train_rate = tokens / seconds
    l0 = sum(float(r["l0"]) for r in steady[1:]) / max(1, len(steady) - 1)
    print(f"sae-train (unset {' '.join(unset) or 'nothing'}): steps {first['step']}-"
          f"{last['step']}: {train_rate:,.0f} tokens/s at L0 {l0:.1f}")
    # the bench's step at that L0, right after the training and once more
    # after that: on a shared machine the load drifts, so the training is
    # compared with the mean of the two
    rates = []
    for _ in range(2):
        rate, bench_l0 = bench_relu(bench, shape, l0)
        print(f"sae-bench ReLU step at L0 {bench_l0:.0f}: {rate:,.0f} tokens/s")
        rates.append(rate)
    bench_rate = sum(rates) / len(rates)
    print(f"sae-train / sae-bench: {train_rate / bench_rate:.2f} (target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
