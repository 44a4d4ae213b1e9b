"""What include/libsae/sae.h declares, read through the C preprocessor (so
comments and #if blocks count as a compiler sees them): its functions with
their return and parameter types, its enums with their values, and its
structs. The bindings' coverage tests (tests/python/test_coverage.py,
tests/cpp/check_coverage.py) compare the bindings against it.
"""
import os
import re
import shutil
import subprocess
from typing import Dict, List, NamedTuple, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
HEADER = os.path.join(SOURCE_DIR, "include", "libsae", "sae.h")
MARK = "__sae_api_marker__"


class Function(NamedTuple):
    name: str
    returns: str           # normalised C type, e.g. "const char *"
    params: List[str]      # normalised C types, without names


class Header(NamedTuple):
    functions: Dict[str, Function]               # in declaration order
    enums: Dict[str, Dict[str, int]]              # enum tag: {constant: value}
    structs: Dict[str, List[Tuple[str, str]]]     # typedef name: [(C type, member)]
    opaque: List[str]                             # typedef struct X X; without a body


def _compiler() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise RuntimeError("no C compiler to preprocess sae.h (set CC)")


def _own_text(header: str) -> str:
    out = subprocess.run([_compiler(), "-E", "-x", "c", "-D", "SAE_API=" + MARK, header],
                         check=True, capture_output=True, text=True).stdout
    own, mine = [], False
    for line in out.splitlines():
        m = re.match(r'#\s*\d+\s+"([^"]*)"', line)
        if m:
            mine = os.path.realpath(m.group(1)) == os.path.realpath(header)
        elif mine:
            own.append(line)
    return " ".join(own)


def normalise(ctype: str) -> str:
    """"const  float*" -> "const float *"; "unsigned int" -> "unsigned"."""
    t = re.sub(r"\s*\*\s*", " * ", ctype)
    t = " ".join(t.split()).replace("* *", "**").replace("unsigned int", "unsigned")
    return t.replace(" *", " *").strip()


def _split_param(param: str) -> str:
    param = " ".join(param.split())
    if param == "void":
        return ""
    m = re.match(r"^(.*?)([A-Za-z_]\w*)\s*(\[\s*\d*\s*\])?$", param)
    if not m or not m.group(1).strip():
        return normalise(param)  # an unnamed parameter
    ctype = m.group(1) + ("*" if m.group(3) else "")
    return normalise(ctype)


def _int(expr: str, known: Dict[str, int]) -> int:
    expr = expr.strip()
    for name, value in known.items():
        expr = re.sub(rf"\b{name}\b", str(value), expr)
    if not re.fullmatch(r"[-+()\s0-9xXa-fA-FuUlL<|&~]*", expr):
        raise ValueError(f"cannot evaluate enum value {expr!r}")
    return int(eval(re.sub(r"(?<=[0-9a-fA-F])[uUlL]+", "", expr), {"__builtins__": {}}))


def parse(header: str = HEADER) -> Header:
    text = _own_text(header)
    enums: Dict[str, Dict[str, int]] = {}
    known: Dict[str, int] = {}
    for tag, body in re.findall(r"\benum\s+([A-Za-z_]\w*)\s*\{([^}]*)\}", text):
        values, nxt = {}, 0
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, expr = item.partition("=")
            name = name.strip()
            nxt = _int(expr, known) if expr.strip() else nxt
            values[name] = known[name] = nxt
            nxt += 1
        enums[tag] = values
    structs = {}
    for body, name in re.findall(r"typedef\s+struct\s+\w*\s*\{([^}]*)\}\s*(\w+)\s*;", text):
        members = []
        for decl in body.split(";"):
            decl = " ".join(decl.split())
            if not decl:
                continue
            fn = re.match(r"^(.*)\(\s*\*\s*([A-Za-z_]\w*)\s*\)\s*\((.*)\)$", decl)
            if fn:  # a function pointer: "int (void *, float *, size_t)"
                params = [p for p in (_split_param(p) for p in fn.group(3).split(",")) if p]
                members.append((f"{normalise(fn.group(1))} ({', '.join(params)})", fn.group(2)))
                continue
            first, *more = decl.split(",")  # "int rank, n_ranks"
            base = None
            for declarator in [first] + more:
                if base is not None:
                    declarator = base + " " + declarator
                m = re.match(r"^(.*?)([A-Za-z_]\w*)\s*(\[\s*(\d+)\s*\])?$", declarator.strip())
                if not m:
                    raise ValueError(f"cannot read the member {decl!r} of struct {name}")
                ctype = normalise(m.group(1)) + (f"[{m.group(4)}]" if m.group(3) else "")
                members.append((ctype, m.group(2)))
                base = m.group(1).replace("*", " ").strip() if base is None else base
        structs[name] = members
    opaque = re.findall(r"typedef\s+struct\s+(\w+)\s+\1\s*;", text)
    # Drop braces' contents, then one declaration per ';'.
    body = text
    while True:
        stripped = re.sub(r"\{[^{}]*\}", " ", body)
        if stripped == body:
            break
        body = stripped
    functions: Dict[str, Function] = {}
    for decl in body.split(";"):
        if MARK not in decl:
            continue
        decl = " ".join(decl.replace(MARK, " ").split())
        m = re.match(r"^(.*?)\b([A-Za-z_]\w*)\s*\((.*)\)$", decl)
        if not m:
            raise ValueError(f"cannot read the declaration {decl!r}")
        params = [p for p in (_split_param(p) for p in m.group(3).split(",")) if p]
        functions[m.group(2)] = Function(m.group(2), normalise(m.group(1)), params)
    return Header(functions, enums, structs, opaque)


if __name__ == "__main__":
    h = parse()
    for f in h.functions.values():
        print(f"{f.returns} {f.name}({', '.join(f.params)})")
    for tag, values in h.enums.items():
        print(tag, values)
    print("structs", h.structs, "opaque", h.opaque)
