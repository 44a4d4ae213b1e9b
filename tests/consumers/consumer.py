#!/usr/bin/python3
"""Python loads the INSTALLED libsae.so.0 with ctypes, as an FFI caller would.

It checks sae_version_number() and sae_version_string() against the installed
header's SAE_VERSION_* macros, runs the same computation as consumer.c (same
seed, same data, same options) and requires exactly the lines the C program
printed: ctypes passes the same bits, so the losses must agree to the last
digit.

usage: consumer.py LIBSAE_SO INSTALLED_SAE_H C_OUTPUT
"""
import ctypes
import re
import sys

D_IN, D_SAE, N_TOKENS, N_STEPS = 8, 32, 64, 5
SEED = 20240501
SAE_OK, SAE_OPT_LR, SAE_OPT_L1_COEFF = 0, 1, 5


class Losses(ctypes.Structure):
    """struct sae_losses, frozen: four doubles."""
    _fields_ = [("loss", ctypes.c_double), ("l2", ctypes.c_double),
                ("l1", ctypes.c_double), ("l0", ctypes.c_double)]


def bind(lib):
    c = ctypes
    sigs = {
        "sae_version_number": (c.c_uint, []),
        "sae_version_string": (c.c_char_p, []),
        "sae_status_string": (c.c_char_p, [c.c_int]),
        "sae_model_create": (c.c_int, [c.POINTER(c.c_void_p), c.c_size_t, c.c_size_t, c.c_uint64]),
        "sae_model_free": (None, [c.c_void_p]),
        "sae_optimizer_create": (c.c_int, [c.POINTER(c.c_void_p), c.c_void_p]),
        "sae_optimizer_free": (None, [c.c_void_p]),
        "sae_optimizer_set": (c.c_int, [c.c_void_p, c.c_int, c.c_double]),
        "sae_optimizer_steps": (c.c_uint64, [c.c_void_p]),
        "sae_step": (c.c_int, [c.c_void_p, c.c_void_p, c.POINTER(c.c_float), c.c_size_t,
                               c.POINTER(Losses)]),
        "sae_loss": (c.c_int, [c.c_void_p, c.POINTER(c.c_float), c.c_size_t, c.c_double,
                               c.POINTER(Losses)]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def header_version(path):
    text = open(path, encoding="utf-8").read()
    parts = [int(re.search(rf"#define SAE_VERSION_{p} (\d+)", text).group(1))
             for p in ("MAJOR", "MINOR", "PATCH")]
    return parts[0] * 10000 + parts[1] * 100 + parts[2], "%d.%d.%d" % tuple(parts)


def fmt(what, i, l):
    return "%s %d loss %.17g l2 %.17g l1 %.17g l0 %.17g" % (what, i, l.loss, l.l2, l.l1, l.l0)


def main(so_path, header_path, c_output):
    lib = ctypes.CDLL(so_path)
    bind(lib)

    number, string = header_version(header_path)
    got_number, got_string = lib.sae_version_number(), lib.sae_version_string().decode()
    print(f"# header {string} ({number}), library {got_string} ({got_number})")
    if (got_number, got_string) != (number, string):
        print(f"consumer.py: {so_path} is {got_string} ({got_number}) but {header_path} "
              f"says {string} ({number})", file=sys.stderr)
        return 1

    def check(rc):
        if rc != SAE_OK:
            raise RuntimeError("libsae: " + lib.sae_status_string(rc).decode())

    x = (ctypes.c_float * (N_TOKENS * D_IN))()
    for t in range(N_TOKENS):
        for j in range(D_IN):
            x[t * D_IN + j] = (((7 * t + 3 * j) % 41) - 20) / 16.0

    model, opt = ctypes.c_void_p(), ctypes.c_void_p()
    lines = []
    check(lib.sae_model_create(ctypes.byref(model), D_IN, D_SAE, SEED))
    try:
        check(lib.sae_optimizer_create(ctypes.byref(opt), model))
        check(lib.sae_optimizer_set(opt, SAE_OPT_LR, 1e-2))
        check(lib.sae_optimizer_set(opt, SAE_OPT_L1_COEFF, 0.5))
        losses = Losses()
        for s in range(N_STEPS):
            check(lib.sae_step(model, opt, x, N_TOKENS, ctypes.byref(losses)))
            lines.append(fmt("step", s, losses))
        check(lib.sae_loss(model, x, N_TOKENS, 0.5, ctypes.byref(losses)))
        lines.append(fmt("final", N_STEPS, losses))
        if lib.sae_optimizer_steps(opt) != N_STEPS:
            raise RuntimeError("sae_optimizer_steps does not count the steps")
    finally:
        lib.sae_optimizer_free(opt)
        lib.sae_model_free(model)
    print("\n".join(lines))

    expected = [ln for ln in open(c_output, encoding="utf-8").read().splitlines()
                if not ln.startswith("#")]
    if lines != expected:
        print(f"consumer.py: the losses differ from the C program's ({c_output}):",
              file=sys.stderr)
        for got, want in zip(lines, expected):
            mark = "  " if got == want else "!="
            print(f"  {mark} python: {got}\n     C:      {want}", file=sys.stderr)
        if len(lines) != len(expected):
            print(f"  {len(lines)} lines from Python, {len(expected)} from C", file=sys.stderr)
        return 1
    print(f"consumer.py: {len(lines)} lines of losses identical to the C program's")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
