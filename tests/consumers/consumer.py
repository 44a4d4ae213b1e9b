#!/usr/bin/python3
"""Python uses the INSTALLED libsae package, as a user's program would.

It checks that `import libsae` loaded the expected libsae.so.0 (the library
installed with the package, or $LIBSAE_PATH) and that its version matches the
installed header's SAE_VERSION_* macros, runs the same computation as
consumer.c (same seed, data and options) through the package's Model and
Optimizer, and requires exactly the lines the C program printed: the package
passes the same bits, so the losses must agree to the last digit.

usage: consumer.py EXPECTED_LIBSAE_SO INSTALLED_SAE_H C_OUTPUT
"""
import os
import re
import sys

import numpy as np

import libsae

D_IN, D_SAE, N_TOKENS, N_STEPS = 8, 32, 64, 5
SEED = 20240501


def header_version(path):
    text = open(path, encoding="utf-8").read()
    parts = [int(re.search(rf"#define SAE_VERSION_{p} (\d+)", text).group(1))
             for p in ("MAJOR", "MINOR", "PATCH")]
    return parts[0] * 10000 + parts[1] * 100 + parts[2], "%d.%d.%d" % tuple(parts)


def fmt(what, i, l):
    return "%s %d loss %.17g l2 %.17g l1 %.17g l0 %.17g" % (what, i, l.loss, l.l2, l.l1, l.l0)


def main(so_path, header_path, c_output):
    print(f"# package {libsae.__file__}, library {libsae.library_path()}")
    if os.path.realpath(libsae.library_path()) != os.path.realpath(so_path):
        print(f"consumer.py: the package loaded {libsae.library_path()}, not {so_path}",
              file=sys.stderr)
        return 1
    number, string = header_version(header_path)
    print(f"# header {string} ({number}), library {libsae.version()} ({libsae.version_number()})")
    if (libsae.version_number(), libsae.version()) != (number, string):
        print(f"consumer.py: the library is {libsae.version()} but {header_path} says {string}",
              file=sys.stderr)
        return 1

    t, j = np.meshgrid(np.arange(N_TOKENS), np.arange(D_IN), indexing="ij")
    x = ((((7 * t + 3 * j) % 41) - 20) / np.float32(16)).astype(np.float32)
    lines = []
    with libsae.Model(D_IN, D_SAE, seed=SEED) as model, \
            libsae.Optimizer(model, lr=1e-2, l1_coeff=0.5) as opt:
        for s in range(N_STEPS):
            lines.append(fmt("step", s, opt.step(model, x)))
        lines.append(fmt("final", N_STEPS, model.loss(x, 0.5)))
        if opt.steps != N_STEPS:
            raise RuntimeError("Optimizer.steps does not count the steps")
    print("\n".join(lines))

    expected = [ln for ln in open(c_output, encoding="utf-8").read().splitlines()
                if not ln.startswith("#")]
    if lines != expected:
        print(f"consumer.py: the losses differ from the C program's ({c_output}):",
              file=sys.stderr)
        for got, want in zip(lines, expected):
            mark = "  " if got == want else "!="
            print(f"  {mark} python: {got}\n     C:      {want}", file=sys.stderr)
        return 1
    print(f"consumer.py: {len(lines)} lines of losses identical to the C program's")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
