#!/usr/bin/python3
"""The exported symbols of libsae are exactly the functions of its header.

Three lists must name the same set of functions:
  - the declarations marked SAE_API in include/libsae/sae.h (read through the
    C preprocessor, so comments and #if blocks are handled as a compiler would),
  - the global: entries of the linker version script cmake/libsae.map,
  - the defined dynamic symbols of the built libsae.so (nm -D --defined-only),
and every exported symbol must carry a version node of the map. With
--baseline (an abidw dump of a release, abi/<version>/libsae.abi, repeatable),
the released nodes are pinned: every function of the release is still
exported with the version it had, and a node of a release lists exactly that
release's functions (new functions go into a new node). With --static,
every global symbol that libsae.a defines must be a public function of the
header or an internal one prefixed sae__, so that static linking cannot clash
with a program's own names. With --pins (tests/abi/header_alone.c), every
function of the map must also be pinned there: assigned by name in one of its
initializers of function pointers of the exact type, so that a changed
signature fails to compile.

Each problem is reported on its own line, naming the symbol and the file it is
missing from; the exit status is 1 if there is any.

usage: check_exports.py --cc CC --header sae.h --map libsae.map
                        --shared libsae.so [--static libsae.a] [--nm nm]
                        [--baseline abi/0.1/libsae.abi ...]
                        [--api-macro SAE_API] [--prefix sae_] [--min-functions 20]
                        [--cflag FLAG]... [--pins header_alone.c]
(the companion library libsae-mpi is checked with --api-macro SAE_MPI_API
--prefix sae_mpi_ and its header's include flags)
"""
import argparse
import re
import subprocess
import sys

MARK = "__sae_api_marker__"


def header_functions(cc, header, api_macro="SAE_API", cflags=()):
    """Names declared in `header` (not in what it includes), split into those
    marked api_macro and those declared without it."""
    text = subprocess.run([cc, "-E", "-x", "c", *cflags, "-D", api_macro + "=" + MARK, header],
                          check=True, capture_output=True, text=True).stdout
    own = []
    in_header = False
    for line in text.splitlines():
        m = re.match(r'#\s*\d+\s+"([^"]*)"', line)
        if m:
            in_header = m.group(1) == header
            continue
        if in_header:
            own.append(line)
    marked, unmarked = [], []
    # Drop braces' contents (enumerator lists, struct members) so that
    # splitting at ';' leaves one declaration per piece.
    body = " ".join(own)
    while True:
        stripped = re.sub(r"\{[^{}]*\}", " ", body)
        if stripped == body:
            break
        body = stripped
    for decl in body.split(";"):
        decl = " ".join(decl.split())
        if not decl or decl.startswith("typedef "):
            continue
        call = re.search(r"([A-Za-z_]\w*)\s*\(", decl)
        if MARK in decl:
            decl = decl.replace(MARK, " ")
            name = call.group(1) if call else re.findall(r"[A-Za-z_]\w*", decl)[-1]
            marked.append(name)
        elif call:
            unmarked.append(call.group(1))
    return marked, unmarked


def map_symbols(path):
    """{symbol: node} of the global: entries, and the node names, of a GNU ld
    version script."""
    text = re.sub(r"/\*.*?\*/", " ", open(path, encoding="utf-8").read(), flags=re.S)
    text = re.sub(r"#[^\n]*", " ", text)
    symbols, nodes = {}, []
    for node, inner in re.findall(r"([A-Za-z_][\w.]*)\s*\{(.*?)\}\s*[\w.]*\s*;", text, flags=re.S):
        nodes.append(node)
        glob = re.split(r"\blocal\s*:", inner)[0]
        glob = re.sub(r"\bglobal\s*:", " ", glob)
        for sym in re.findall(r"([A-Za-z_*][\w*]*)\s*;", glob):
            symbols[sym] = node
    return symbols, nodes


def baseline_symbols(path):
    """{symbol: version} of the functions an abidw dump records."""
    text = open(path, encoding="utf-8").read()
    return {name: version for name, version in
            re.findall(r"<elf-symbol name='([^']+)' version='([^']*)'", text)}


def nm_defined(nm, args, path):
    """[(name, version or None, type)] of the defined global symbols."""
    out = subprocess.run([nm, *args, "--defined-only", "-P", path],
                         check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.endswith(":"):
            continue  # blank lines and "libsae.a[alloc.c.o]:" member headers
        name, kind = parts[0], parts[1]
        base, _, version = name.partition("@")
        syms.append((base, version.lstrip("@") or None, kind))
    return syms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cc", required=True)
    ap.add_argument("--nm", default="nm")
    ap.add_argument("--header", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--static")
    ap.add_argument("--api-macro", default="SAE_API")
    ap.add_argument("--prefix", default="sae_")
    ap.add_argument("--min-functions", type=int, default=20)
    ap.add_argument("--cflag", action="append", default=[])
    ap.add_argument("--baseline", action="append", default=[])
    ap.add_argument("--pins")
    a = ap.parse_args()

    errors = []
    hdr = a.header
    api = a.api_macro
    marked, unmarked = header_functions(a.cc, hdr, api, a.cflag)
    header_set = set(marked)
    for name in unmarked:
        errors.append(f"{name}: declared in {hdr} without {api} "
                      f"(every public function is marked {api})")
    for name in marked:
        if not name.startswith(a.prefix) or name.startswith("sae__"):
            errors.append(f"{name}: declared with {api} in {hdr}, but public names "
                          f"start with {a.prefix} (and sae__ is reserved for internals)")
    if len(header_set) < a.min_functions:
        errors.append(f"found only {len(header_set)} {api} functions in {hdr}: "
                      f"the header parser is broken")

    mapped, nodes = map_symbols(a.map)
    for sym in sorted(mapped):
        if "*" in sym:
            errors.append(f"{sym}: {a.map} exports a wildcard; name each symbol")

    exported = {}
    for name, version, kind in nm_defined(a.nm, ["-D"], a.shared):
        if kind == "A":
            # an absolute symbol: the definition of a version node ("SAE_0.1 A 0")
            if name not in nodes:
                errors.append(f"{name}: a version node of {a.shared} that {a.map} "
                              f"does not define (the library was linked with another map)")
            continue
        exported[name] = version
    for name in sorted(header_set - set(exported)):
        if name in mapped:
            errors.append(f"{name}: declared with {api} in {hdr} and listed in {a.map}, "
                          f"but {a.shared} does not define it (no source implements it)")
        else:
            errors.append(f"{name}: declared with {api} in {hdr} but missing from {a.map}, "
                          f"so {a.shared} does not export it: add '{name};' to the newest "
                          f"node of {a.map}")
    for name in sorted(set(exported) - header_set):
        fix = (f"remove it from {a.map}" if name in mapped else
               f"it is not in {a.map} either, so the library was not linked with that map")
        errors.append(f"{name}: exported by {a.shared} but not declared with {api} in "
                      f"{hdr}: {fix}; or, if it is meant to be public, declare it in the header")
    for name in sorted(set(mapped) - header_set - set(exported)):
        errors.append(f"{name}: listed in {a.map} but neither declared with {api} in "
                      f"{hdr} nor exported by {a.shared}: remove it from {a.map}")
    for name, version in sorted(exported.items()):
        if name in header_set and version is None:
            errors.append(f"{name}: exported by {a.shared} without a symbol version "
                          f"(the version script {a.map} is not applied)")
        elif name in header_set and version not in nodes:
            errors.append(f"{name}: exported by {a.shared} as version {version}, "
                          f"which is not a node of {a.map}")
        elif name in mapped and version != mapped[name]:
            errors.append(f"{name}: exported by {a.shared} as version {version}, "
                          f"but {a.map} puts it in {mapped[name]}")

    for base in a.baseline:
        released = baseline_symbols(base)
        if not released:
            errors.append(f"{base}: no functions found in the baseline")
        for name, version in sorted(released.items()):
            if name not in exported:
                errors.append(f"{name}: released as {name}@{version} ({base}) but no longer "
                              f"exported by {a.shared}")
            elif exported[name] != version:
                errors.append(f"{name}: released as {name}@{version} ({base}) but exported as "
                              f"{name}@{exported[name]}: a released symbol keeps its version")
        for node in sorted(set(released.values())):
            for name in sorted(n for n, v in mapped.items() if v == node and n not in released):
                errors.append(f"{name}: listed in released node {node} of {a.map}, which "
                              f"{base} fixes: add it to a new node instead")

    if a.pins:
        pinned = set(re.findall(r"^\s*(\w+),\s*$", open(a.pins, encoding="utf-8").read(),
                                flags=re.M))
        for name in sorted(set(mapped) - pinned):
            errors.append(f"{name}: listed in {a.map} ({mapped[name]}) but not pinned in "
                          f"{a.pins}: add its exact type to the struct of its version and "
                          f"'{name},' to that struct's initializer")

    n_static = 0
    if a.static:
        for name, _, kind in nm_defined(a.nm, ["-g"], a.static):
            n_static += 1
            if name.startswith("sae__"):
                continue
            if name not in header_set:
                errors.append(f"{name}: a global symbol of {a.static} that is neither a "
                              f"{api} function of {hdr} nor prefixed sae__ (internal): "
                              f"make it static or rename it sae__{name.removeprefix('sae_')}")

    if errors:
        print(f"check_exports: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 1
    print(f"check_exports: {len(header_set)} {api} functions in {hdr}, {len(mapped)} in "
          f"{a.map} (nodes {', '.join(nodes)}), {len(exported)} exported by {a.shared}: "
          f"the same set, all versioned" +
          (f"; released nodes as in {', '.join(a.baseline)}" if a.baseline else "") +
          (f"; every one pinned in {a.pins}" if a.pins else "") +
          (f"; {n_static} global symbols in {a.static}, all sae_/sae__" if a.static else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
