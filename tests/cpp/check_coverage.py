#!/usr/bin/python3
"""include/libsae/sae.hpp reaches all of sae.h: every function of the header
is used by the wrapper's code (called, or passed as a function, as the
deleters are; comments do not count), and every enum constant is a value of a scoped enum
(`name = SAE_CONSTANT`). A function or constant added to sae.h without its
C++ wrapper fails here, naming it.

usage: check_coverage.py [sae.hpp]
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from sae_header import SOURCE_DIR, parse  # noqa: E402


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def main(path):
    header = parse()
    with open(path, encoding="utf-8") as f:
        code = strip_comments(f.read())
    problems = []
    used = set(re.findall(r"\b(sae_\w+)\b", code))
    for name in header.functions:
        if name not in used:
            problems.append(f"{name}: declared in sae.h, never used in {path}")
    mapped = set(re.findall(r"\b\w+\s*=\s*(SAE_\w+)\s*,", code))
    n_constants = 0
    for tag, values in header.enums.items():
        for constant in values:
            n_constants += 1
            if constant not in mapped:
                problems.append(f"{constant} ({tag}): no `name = {constant},` in a scoped enum "
                                f"of {path}")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"sae.hpp: {len(header.functions)}/{len(header.functions)} functions and "
          f"{n_constants}/{n_constants} enum constants of sae.h "
          f"({len(header.enums['sae_option'])} options) reachable")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else
                  os.path.join(SOURCE_DIR, "include", "libsae", "sae.hpp")))
