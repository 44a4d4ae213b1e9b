#!/usr/bin/python3
"""The public header declares nothing outside the sae_/SAE_ namespace.

  - Macros: the header is preprocessed with -dM, once alone and once as just
    the system headers it includes; every macro the header adds must start with
    SAE_ (the include guard too).
  - Names: the header's own declarations (read from the preprocessor's output,
    so comments and #if blocks are handled like a compiler does) may only
    introduce struct/union/enum tags, typedef names and functions starting with
    sae_, and enumerators starting with SAE_.

Both checks run as C and as C++ with the given compilers. Each problem is
reported on its own line; the exit status is 1 if there is any.

usage: check_header_names.py --header include/libsae/sae.h [--min-names N]
                             [--cflag FLAG]... CC [CC...]
  (a C++ compiler is recognised by "++" in its name; --cflag adds an include
  directory or definition, e.g. MPI's for include/libsae/sae_mpi.h)
"""
import argparse
import re
import subprocess
import sys
import tempfile
import os


CFLAGS = []  # --cflag


def preprocess(cc, lang, source, flags):
    return subprocess.run([cc, "-x", lang, *CFLAGS, *flags, source], check=True,
                          capture_output=True, text=True).stdout


def macros(cc, lang, source):
    names = set()
    for line in preprocess(cc, lang, source, ["-dM", "-E"]).splitlines():
        m = re.match(r"#define\s+([A-Za-z_]\w*)", line)
        if m:
            names.add(m.group(1))
    return names


def own_text(cc, lang, header):
    """The preprocessed text that comes from `header` itself."""
    own, in_header = [], False
    # SAE_API / SAE_MPI_API (attributes; their names are checked with the
    # macros) expand to nothing.
    for line in preprocess(cc, lang, header, ["-E", "-DSAE_API=", "-DSAE_MPI_API="]).splitlines():
        m = re.match(r'#\s*\d+\s+"([^"]*)"', line)
        if m:
            in_header = m.group(1) == header
        elif in_header:
            own.append(line)
    return " ".join(own)


def declared_names(text):
    """[(kind, name)] declared by a C declaration sequence."""
    names = []
    text = re.sub(r'extern\s+"C"\s*\{', " ", text)  # C++ linkage block
    for tag_kind, tag in re.findall(r"\b(struct|union|enum)\s+([A-Za-z_]\w*)", text):
        names.append((tag_kind + " tag", tag))
    for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", text):
        for item in body.split(","):
            m = re.match(r"\s*([A-Za-z_]\w*)", item)
            if m:
                names.append(("enumerator", m.group(1)))
    while True:  # drop braces' contents: struct members and enumerator lists
        stripped = re.sub(r"\{[^{}]*\}", " ", text)
        if stripped == text:
            break
        text = stripped
    for decl in text.split(";"):
        decl = " ".join(decl.split())
        if not decl or decl == "}":
            continue
        decl = decl.lstrip("} ")
        call = re.search(r"([A-Za-z_]\w*)\s*\(", decl)
        if decl.startswith("typedef "):
            ident = re.findall(r"[A-Za-z_]\w*", decl)
            names.append(("typedef", ident[-1]))
        elif call:
            names.append(("function", call.group(1)))
        elif not re.fullmatch(r"(struct|union|enum)(\s+\w+)?(\s*\{\s*\})?", decl):
            ident = re.findall(r"[A-Za-z_]\w*", decl)
            names.append(("declaration", ident[-1] if ident else decl))
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--header", required=True)
    ap.add_argument("--min-names", type=int, default=0,
                    help="fail if fewer names are found (guards the parser)")
    ap.add_argument("--cflag", action="append", default=[])
    ap.add_argument("compilers", nargs="+")
    a = ap.parse_args()
    CFLAGS.extend(a.cflag)
    hdr = os.path.abspath(a.header)
    src = open(hdr, encoding="utf-8").read()
    system_includes = re.findall(r"^\s*#\s*include\s*(<[^>]+>)", src, flags=re.M)
    # A header of the same directory ("sae.h" in sae_mpi.h) is checked on its
    # own: what it defines is not the including header's.
    for name in re.findall(r'^\s*#\s*include\s*"([^"]+)"', src, flags=re.M):
        system_includes.append('"' + os.path.join(os.path.dirname(hdr), name) + '"')

    errors = []
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        only_sys = os.path.join(tmp, "system_only.h")
        with open(only_sys, "w", encoding="utf-8") as f:
            f.write("".join(f"#include {inc}\n" for inc in system_includes))
        for cc in a.compilers:
            for lang in (["c++"] if "++" in cc else ["c"]):
                where = f"{os.path.basename(cc)} -x {lang}"
                added = macros(cc, lang, hdr) - macros(cc, lang, only_sys)
                for name in sorted(added):
                    if not name.startswith("SAE_"):
                        errors.append(f"macro {name}: defined by {a.header} ({where}) "
                                      f"without the SAE_ prefix")
                names = declared_names(own_text(cc, lang, hdr))
                for kind, name in names:
                    prefix = "SAE_" if kind == "enumerator" else "sae_"
                    if not name.startswith(prefix):
                        errors.append(f"{kind} {name}: declared by {a.header} ({where}) "
                                      f"without the {prefix} prefix")
                kinds = sorted({k for k, _ in names})
                summary.append(f"{where}: {len(added)} macros, {len(names)} names "
                               f"({', '.join(kinds)})")
                if len(names) < a.min_names:
                    errors.append(f"{where}: found only {len(names)} names in {a.header} "
                                  f"(at least {a.min_names} expected): the parser is broken")
    if errors:
        print(f"check_header_names: {len(errors)} problem(s):", file=sys.stderr)
        for e in sorted(set(errors)):
            print("  " + e, file=sys.stderr)
        return 1
    print("check_header_names: every macro and name of the header is SAE_/sae_")
    for s in summary:
        print("  " + s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
