"""The Python package binds all of sae.h: every function (with exactly the
header's types), every enum constant (with its value), every struct (with its
members), every status (one exception class each) and every option (by its
keyword name). A function, constant or option added to the header without
its binding fails here, naming it.
"""
import ctypes
import os
import re


import libsae
from libsae import capi
from libsae.enums import C_ENUMS
from sae_header import parse

HEADER = parse()
PACKAGE_DIR = os.path.dirname(libsae.__file__)

SCALARS = {
    "int": ctypes.c_int, "unsigned": ctypes.c_uint, "size_t": ctypes.c_size_t,
    "uint64_t": ctypes.c_uint64, "uint32_t": ctypes.c_uint32, "double": ctypes.c_double,
    "float": ctypes.c_float,
}


def ctypes_of(ctype):
    """The ctypes type a C type must be bound with."""
    base = ctype.replace("const ", "").strip()
    if base in SCALARS:
        return SCALARS[base]
    if base == "void":
        return None
    if base in ("char *",):
        return ctypes.c_char_p
    if base == "void *":
        return ctypes.c_void_p
    stars = base.count("*")
    name = base.replace("*", "").strip()
    if name in HEADER.opaque:  # handles: sae_model * is c_void_p
        return ctypes.c_void_p if stars == 1 else ctypes.POINTER(ctypes.c_void_p)
    if stars == 1 and name in SCALARS:
        return ctypes.POINTER(SCALARS[name])
    if stars == 1 and name in capi.STRUCTS:
        return ctypes.POINTER(capi.STRUCTS[name])
    raise AssertionError(f"tests/python/test_coverage.py does not know the C type {ctype!r}: "
                         f"teach ctypes_of (and libsae.capi) how to bind it")


def test_every_function_is_in_the_table_with_the_header_types():
    missing = [n for n in HEADER.functions if n not in capi.FUNCTIONS]
    assert not missing, f"functions of sae.h without a ctypes signature in libsae/capi.py: {missing}"
    stale = [n for n in capi.FUNCTIONS if n not in HEADER.functions]
    assert not stale, f"libsae/capi.py binds functions sae.h does not declare: {stale}"
    wrong = []
    for fn in HEADER.functions.values():
        restype, argtypes = capi.FUNCTIONS[fn.name]
        want = (ctypes_of(fn.returns), [ctypes_of(p) for p in fn.params])
        if (restype, list(argtypes)) != want:
            wrong.append(f"{fn.name}: header {fn.returns}({', '.join(fn.params)}), "
                         f"table {restype} {argtypes}")
    assert not wrong, "signatures that differ from sae.h:\n" + "\n".join(wrong)


def test_every_function_is_reachable_from_the_package():
    """Each C function is called by the Pythonic layer (not only typed)."""
    used = set()
    for name in os.listdir(PACKAGE_DIR):
        if name.endswith(".py") and name != "capi.py":
            with open(os.path.join(PACKAGE_DIR, name), encoding="utf-8") as f:
                used.update(re.findall(r"\blib\.(sae_\w+)\b", f.read()))
    unused = [n for n in HEADER.functions if n not in used]
    assert not unused, f"functions of sae.h no method or function of the package calls: {unused}"
    print(f"\ncoverage: {len(HEADER.functions)}/{len(HEADER.functions)} functions bound and called")


def test_the_loaded_library_has_every_function():
    assert capi.lib.missing == [], f"{capi.library_path} lacks {capi.lib.missing}"


def test_every_enum_constant_with_its_value():
    missing = [tag for tag in HEADER.enums if tag not in C_ENUMS]
    assert not missing, f"enums of sae.h without a Python IntEnum in libsae/enums.py C_ENUMS: {missing}"
    problems, count = [], 0
    for tag, values in HEADER.enums.items():
        cls, prefix = C_ENUMS[tag]
        for cname, value in values.items():
            count += 1
            member = cname[len(prefix):] if cname.startswith(prefix) else None
            if member not in cls.__members__:
                problems.append(f"{cname} ({tag}) has no {cls.__name__} member {member}")
            elif cls.__members__[member] != value:
                problems.append(f"{cls.__name__}.{member} is {int(cls.__members__[member])}, "
                                f"sae.h says {value}")
        extra = set(cls.__members__) - {c[len(prefix):] for c in values}
        if extra:
            problems.append(f"{cls.__name__} has members sae.h does not declare: {sorted(extra)}")
    assert not problems, "\n".join(problems)
    print(f"\ncoverage: {count} enum constants in {len(HEADER.enums)} IntEnums")


def test_every_struct_with_its_members():
    for name, members in HEADER.structs.items():
        assert name in capi.STRUCTS, f"struct {name} of sae.h has no ctypes Structure in capi.STRUCTS"
        fields = capi.STRUCTS[name]._fields_
        assert [f[0] for f in fields] == [m for _, m in members], name
        for (ctype, member), (_, pytype) in zip(members, fields):
            fn = re.fullmatch(r"(.*) \((.*)\)", ctype)
            array = re.fullmatch(r"(.*)\[(\d+)\]", ctype)
            if fn:  # a function pointer member: a CFUNCTYPE of the same types
                params = [p for p in fn.group(2).split(", ") if p]
                assert (pytype._restype_, list(pytype._argtypes_)) == \
                    (ctypes_of(fn.group(1)), [ctypes_of(p) for p in params]), (name, member)
            elif array:
                want = ctypes_of(array.group(1))
                assert pytype._type_ == want and pytype._length_ == int(array.group(2)), \
                    (name, member)
            else:
                assert pytype == ctypes_of(ctype), (name, member)


def test_one_exception_class_per_status():
    for status in libsae.Status:
        if status == libsae.Status.OK:
            continue
        cls = libsae.ERRORS[status]
        assert issubclass(cls, libsae.SAEError)
        e = libsae.errors.error(status, "sae_something")
        assert type(e) is cls and e.status == status
        assert e.description == libsae.status_string(status) != ""
        assert str(e).startswith("sae_something: " + e.description)
    assert len(set(libsae.ERRORS.values())) == len(libsae.Status) - 1


def test_every_option_by_keyword():
    model = libsae.Model(4, 8)
    options = HEADER.enums["sae_option"]
    for cname, value in options.items():
        name = cname[len("SAE_OPT_"):].lower()
        info = libsae.option_info(name)
        assert info.option == value and info.name == name
        with libsae.Optimizer(model, **{name: info.default}) as opt:
            assert opt.get(name) == info.default
            assert name in opt.options()
    print(f"\ncoverage: {len(options)} options as keyword arguments")


def test_versions_agree():
    """The package is released with the library: its version is the header's,
    the loaded library's and pyproject.toml's."""
    import sae_header
    with open(sae_header.HEADER, encoding="utf-8") as f:
        text = f.read()
    version = ".".join(re.search(rf"#define SAE_VERSION_{p} (\d+)", text).group(1)
                       for p in ("MAJOR", "MINOR", "PATCH"))
    with open(os.path.join(sae_header.SOURCE_DIR, "python", "pyproject.toml"), encoding="utf-8") as f:
        project = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    assert libsae.__version__ == version == libsae.version() == project
