"""A minimal, independent safetensors reader and writer for libsae's tests.

Written from the format's description (an 8-byte little-endian header length,
a JSON header mapping names to {"dtype", "shape", "data_offsets"} plus an
optional "__metadata__" of strings, then raw little-endian data), sharing no
code with the library. Standard library only, so the fuzz corpus generator can
run anywhere; the interop test adds numpy on top.
"""

import json
import struct

DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
    "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}


def pack(tensors, metadata=None, pad=True, order=None):
    """tensors: list of (name, dtype, shape, raw_bytes). Offsets are laid out
    in list order. Returns the file as bytes."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    data = b""
    for name, dtype, shape, raw in tensors:
        count = 1
        for d in shape:
            count *= d
        assert len(raw) == count * DTYPE_SIZE[dtype], name
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    if order is not None:
        header = {k: header[k] for k in order}
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def pack_raw_header(header_text, data):
    """A file with the header text exactly as given (for corrupt files)."""
    if isinstance(header_text, str):
        header_text = header_text.encode()
    return struct.pack("<Q", len(header_text)) + header_text + data


def unpack(blob):
    """Returns (metadata or None, {name: (dtype, shape, raw_bytes)}), checking
    the layout as the format requires."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    start = 8 + n
    metadata = header.pop("__metadata__", None)
    tensors = {}
    spans = []
    for name, info in header.items():
        assert set(info) == {"dtype", "shape", "data_offsets"}, info
        begin, end = info["data_offsets"]
        count = 1
        for d in info["shape"]:
            count *= d
        assert end - begin == count * DTYPE_SIZE[info["dtype"]], name
        spans.append((begin, end))
        tensors[name] = (info["dtype"], tuple(info["shape"]), blob[start + begin:start + end])
    pos = 0
    for begin, end in sorted(spans):
        assert begin == pos, "gap or overlap"
        pos = end
    assert start + pos == len(blob), "data does not end the file"
    return metadata, tensors


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def f32_values(raw):
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))
