#!/usr/bin/python3
"""Write the seed corpus of the checkpoint loaders' fuzzer: tests/fuzz/corpus/.

Every file is tiny (a model with d_in = 3, d_sae = 5) and its name says what
the loaders must do with it; tests/fuzz/replay.c checks that in every CTest
run:
  model-ok-*         sae_model_load_buffer succeeds
  opt-ok-*           sae_optimizer_load_buffer succeeds (for a 3 x 5 ReLU model)
  opt-jumprelu-ok-*  ... for a 3 x 5 JumpReLU model
  bad-*              every loader returns SAE_E_FORMAT
  cfg-ok-*           as cfg.json beside valid 3 x 5 standard weights,
                     sae_model_load succeeds
  cfg-bad-*          ... and returns SAE_E_FORMAT
  cfg-<arch>-ok-*, cfg-<arch>-bad-*  the same beside libsae's topk, batchtopk
                     or jumprelu weights (k = 2, JumpReLU thresholds 0.5)
  stats-ok-*         sae_feature_stats_load_buffer succeeds
  stats-bad-*        ... and returns SAE_E_FORMAT
The files are written by tests/python/st_min.py, independently of libsae.
Run it again after changing it (the output is deterministic) and commit the
corpus: python3 tests/fuzz/make_corpus.py
"""

import json
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import st_min  # noqa: E402

D_IN, D_SAE = 3, 5
OUT = os.path.join(HERE, "corpus")


def values(n, seed):
    return [((k * 7 + seed * 3) % 11 - 5) * 0.125 for k in range(n)]


def model_tensors(dtype="F32", seed=1):
    enc = {"F32": lambda v: struct.pack("<%df" % len(v), *v),
           "F64": lambda v: struct.pack("<%dd" % len(v), *v),
           "F16": lambda v: struct.pack("<%de" % len(v), *v),
           "BF16": lambda v: b"".join(struct.pack("<f", x)[2:] for x in v)}[dtype]
    return [("W_dec", dtype, (D_SAE, D_IN), enc(values(D_SAE * D_IN, seed))),
            ("W_enc", dtype, (D_IN, D_SAE), enc(values(D_IN * D_SAE, seed + 1))),
            ("b_dec", dtype, (D_IN,), enc(values(D_IN, seed + 2))),
            ("b_enc", dtype, (D_SAE,), enc(values(D_SAE, seed + 3)))]


OPTIONS = {1: 3e-3, 2: 0.85, 3: 0.995, 4: 1e-7, 5: 0.5, 6: 0.0}


def model_arch(arch, k=2, threshold=None, log_thresholds=None, metadata=True, meta_extra=None):
    """A libsae model file of architecture arch ("standard", "topk",
    "batchtopk", "jumprelu"). threshold: the tensor's values (BatchTopK: one
    number, repeated); log_thresholds: JumpReLU's exact log thresholds (the
    tensor then holds their exponentials, rounded to float)."""
    meta = {"libsae_architecture": arch}
    tensors = model_tensors()
    if arch in ("topk", "batchtopk"):
        meta["libsae_k"] = str(k)
    if arch == "batchtopk":
        raw = 0.25 if threshold is None else threshold
        meta["libsae_threshold"] = float.hex(raw)
        tensors.append(("threshold", "F32", (D_SAE,), st_min.f32([max(raw, 0.0)] * D_SAE)))
    if arch == "jumprelu":
        t = [f32_round(math.log(th)) for th in (0.5, 0.25, 1.5, 0.001, 0.9)] \
            if log_thresholds is None else log_thresholds
        meta["libsae_log_threshold"] = "".join(struct.pack(">f", v).hex() for v in t)
        theta = [math.exp(v) for v in t] if threshold is None else threshold
        tensors.append(("threshold", "F32", (D_SAE,), st_min.f32(theta)))
    meta["libsae_version"] = "0.1.0"
    meta.update(meta_extra or {})  # a value None removes the key
    meta = {key: value for key, value in meta.items() if value is not None}
    return st_min.pack(tensors, meta if metadata else None)


D_OUT = 2  # the transcoders' output width


def family_model(kind="autoencoder", arch="standard", metadata=True, meta_extra=None, drop=(),
                 extra=(), k=2, threshold=0.25, widths="2,5"):
    """A model file of the families (issue 16), D_IN x D_SAE: a Gated SAE
    (SAELens's b_gate, b_mag, r_mag for b_enc), a transcoder to D_OUT (kind
    "transcoder", or "skip_transcoder" with W_skip [D_OUT, D_IN]) or a
    Matryoshka SAE (arch "matryoshka_batchtopk", widths); libsae's metadata
    unless metadata is False (as SAELens writes them)."""
    d_out = D_IN if kind == "autoencoder" else D_OUT
    f = st_min.f32
    tensors = [("W_dec", "F32", (D_SAE, d_out), f(values(D_SAE * d_out, 1))),
               ("W_enc", "F32", (D_IN, D_SAE), f(values(D_IN * D_SAE, 2))),
               ("b_dec", "F32", (d_out,), f(values(d_out, 3)))]
    meta = {"libsae_architecture": arch}
    if arch == "gated":
        tensors += [("b_gate", "F32", (D_SAE,), f(values(D_SAE, 4))),
                    ("b_mag", "F32", (D_SAE,), f(values(D_SAE, 5))),
                    ("r_mag", "F32", (D_SAE,), f(values(D_SAE, 6)))]
    else:
        tensors.append(("b_enc", "F32", (D_SAE,), f(values(D_SAE, 4))))
    if kind == "skip_transcoder":
        tensors.append(("W_skip", "F32", (D_OUT, D_IN), f(values(D_OUT * D_IN, 7))))
    if kind != "autoencoder":
        meta["libsae_kind"] = kind
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):
        meta["libsae_k"] = str(k)
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        meta["libsae_threshold"] = float.hex(threshold)
        tensors.append(("threshold", "F32", (D_SAE,), f([threshold] * D_SAE)))
    if arch == "matryoshka_batchtopk":
        meta["libsae_matryoshka_widths"] = widths
    if arch == "jumprelu":
        tensors.append(("threshold", "F32", (D_SAE,), f([0.5, 0.25, 1.5, 0.001, 0.9])))
    meta["libsae_version"] = "0.2.0"
    meta.update(meta_extra or {})
    meta = {key: value for key, value in meta.items() if value is not None}
    tensors = [t for t in tensors if t[0] not in drop] + list(extra)
    return st_min.pack(tensors, meta if metadata else None)


def f32_round(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def optimizer_file(options=None, step="7", meta_extra=None, drop=None, extra=None,
                   m2_value=None, m1_value=None, since_dtype="U64", version="1", jumprelu=False,
                   thr_shape=(D_SAE,), gated=False, skip=False):
    meta = {"libsae_format": "optimizer", "libsae_format_version": version,
            "libsae_version": "0.1.0", "step": step}
    for k, v in (OPTIONS if options is None else options).items():
        meta["option.%s" % k] = v if isinstance(v, str) else float.hex(v)
    meta.update(meta_extra or {})
    since = struct.pack("<5Q", 0, 3, 96, 2**40, 17)
    tensors = [("tokens_since_fired", since_dtype, (D_SAE,), since)]
    shapes = {"W_dec": (D_SAE, D_IN), "W_enc": (D_IN, D_SAE), "b_dec": (D_IN,), "b_enc": (D_SAE,)}
    if jumprelu:
        shapes["log_threshold"] = thr_shape
    if gated:  # the gate's bias is SAELens's b_gate
        del shapes["b_enc"]
        shapes.update({"b_gate": (D_SAE,), "b_mag": (D_SAE,), "r_mag": (D_SAE,)})
    if skip:
        shapes["W_skip"] = (D_IN, D_IN)
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        m1 = [v * 1e-3 for v in values(n, len(name))]
        m2 = [abs(v) * 1e-6 for v in values(n, len(name) + 1)]
        if m1_value is not None and name == "b_enc":
            m1[-1] = m1_value
        if m2_value is not None and name == ("log_threshold" if jumprelu else "W_dec"):
            m2[0] = m2_value
        tensors.append((name + ".exp_avg", "F32", shape, st_min.f32(m1)))
        tensors.append((name + ".exp_avg_sq", "F32", shape, st_min.f32(m2)))
    tensors = [t for t in tensors if t[0] != drop]
    tensors += extra or []
    return st_min.pack(tensors, meta)


def good_header_and_data():
    blob = st_min.pack(model_tensors(), pad=False)
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8:8 + n].decode(), blob[8 + n:]


def replace_header(old, new):
    header, data = good_header_and_data()
    assert old in header, old
    return st_min.pack_raw_header(header.replace(old, new, 1), data)


def replace_tensor(blob, name, raw, shape=None, dtype=None):
    """blob with tensor name's bytes, shape or dtype replaced (same size)."""
    metadata, tensors = st_min.unpack(blob)
    out = []
    for n, (dt, sh, data) in tensors.items():
        if n == name:
            dt, sh, data = dtype or dt, shape or sh, data if raw is None else raw
        out.append((n, dt, sh, data))
    return st_min.pack(out, metadata)


def stats_file(features=None, rows=(5, 0, 5), log10_range=(-2.0, 1.0), top_n=2, bins=4,
               meta_extra=None, drop=None, extra=None, dtypes=None, limbs=None):
    """A feature statistics file (sae_feature_stats_save's format) of d = 3
    features, written from the rows each feature fired on: features[i] is a
    list of (row, value) pairs. The sums are exact integers in 64-bit limbs
    (6 for the sum, bit 0 = 2^-149; 10 for the sum of squares, bit 0 =
    2^-298), the top list is sorted by value, then row, and the histogram
    bins are log-spaced over log10_range. limbs: {(name, feature): [...]}
    overrides; dtypes: {name: dtype} (same byte size)."""
    from fractions import Fraction
    if features is None:
        features = [[(0, 0.5), (2, 2.0), (3, 0.5)], [], [(4, 0.03125)]]
    lo, hi = log10_range
    edges = [10.0 ** (lo + (hi - lo) * k / bins) for k in range(bins + 1)] \
        if math.isfinite(lo) and math.isfinite(hi) and bins else [0.0] * (bins + 1)
    count, hist, sums, sqs, top_rows, top_values = [], [], [], [], [], []
    for i, pairs in enumerate(features):
        count.append(len(pairs))
        h = [0] * bins
        for _, v in pairs:
            b = 0
            while b < bins - 1 and v >= edges[b + 1]:
                b += 1
            if bins:
                h[b] += 1
        hist += h
        finite = [f32_round(v) for _, v in pairs if math.isfinite(v)]
        s1 = sum(Fraction(v) for v in finite)
        s2 = sum(Fraction(v) ** 2 for v in finite)
        for total, n_limbs, shift, out, name in ((s1, 6, 149, sums, "sum"),
                                                  (s2, 10, 298, sqs, "sum_sq")):
            value = int(total * 2 ** shift)
            assert value == total * 2 ** shift
            words = [(value >> (64 * k)) & (2**64 - 1) for k in range(n_limbs)]
            out += (limbs or {}).get((name, i), words)
        top = sorted(pairs, key=lambda p: (-p[1], p[0]))[:top_n]
        top += [(0, 0.0)] * (top_n - len(top))
        top_rows += [r for r, _ in top]
        top_values += [v for _, v in top]
    d = len(features)
    tensors = [
        ("count", "U64", (d,), struct.pack("<%dQ" % d, *count)),
        ("sum", "U64", (d, 6), struct.pack("<%dQ" % (6 * d), *sums)),
        ("sum_sq", "U64", (d, 10), struct.pack("<%dQ" % (10 * d), *sqs)),
        ("histogram", "U64", (d, bins), struct.pack("<%dQ" % (d * bins), *hist)),
        ("top_rows", "U64", (d, top_n), struct.pack("<%dQ" % (d * top_n), *top_rows)),
        ("top_values", "F32", (d, top_n), st_min.f32(top_values)),
        ("log10_range", "F64", (2,), struct.pack("<2d", lo, hi)),
        ("rows", "U64", (3,), struct.pack("<3Q", *rows)),
    ]
    tensors = [(n, (dtypes or {}).get(n, dt), sh, raw) for n, dt, sh, raw in tensors
               if n != drop] + (extra or [])
    meta = {"libsae_format": "feature_stats", "libsae_format_version": "1"}
    meta.update(meta_extra or {})
    meta = {key: value for key, value in meta.items() if value is not None}
    return st_min.pack(tensors, meta)


def write(name, blob):
    if isinstance(blob, str):
        blob = blob.encode()
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    header, data = good_header_and_data()
    good = st_min.pack(model_tensors(), {"libsae_version": "0.1.0"})

    # ---- valid models
    write("model-ok-f32", good)
    write("model-ok-torch-style", st_min.pack(model_tensors(), pad=False))
    for dt in ("F16", "BF16", "F64"):
        write("model-ok-%s" % dt.lower(), st_min.pack(model_tensors(dt)))
    write("model-ok-extras", st_min.pack(
        model_tensors() + [("scaling_factor", "F32", (D_SAE,), st_min.f32([1.0] * D_SAE)),
                           ("sparsity", "F16", (D_SAE,), b"\0\x3c" * D_SAE),
                           ("empty", "I64", (0, 2), b""), ("scalar", "U8", (), b"\x07")],
        {"format": "pt", "note": "caf\u00e9 \u2603"},
        order=["b_enc", "sparsity", "__metadata__", "W_enc", "empty", "W_dec", "scalar",
               "scaling_factor", "b_dec"]))
    write("model-ok-escaped-names", replace_header('"W_enc"', '"W_\\u0065nc"'))

    # ---- valid optimizers
    write("opt-ok-1", optimizer_file())
    write("opt-ok-defaults", optimizer_file(options={}, step="0"))
    write("opt-ok-extra-metadata", optimizer_file(meta_extra={"note": "x", "z": ""}))
    arch_options = {**OPTIONS, 20: 0.125, 21: 3.0, 22: 40.0, 23: 0.5, 24: 0.75}
    write("opt-ok-arch-options", optimizer_file(options=arch_options))
    write("opt-jumprelu-ok-1", optimizer_file(options=arch_options, jumprelu=True))

    # ---- valid models of each architecture
    write("model-ok-standard", model_arch("standard"))
    write("model-ok-topk", model_arch("topk"))
    write("model-ok-topk-k5", model_arch("topk", k=5))
    write("model-ok-batchtopk", model_arch("batchtopk"))
    write("model-ok-batchtopk-unset", model_arch("batchtopk", threshold=-1.0))
    write("model-ok-jumprelu", model_arch("jumprelu"))
    write("model-ok-jumprelu-saelens", model_arch("jumprelu", metadata=False))
    write("model-ok-batchtopk-saelens", model_arch("batchtopk", metadata=False))

    # ---- the families (issue 16): Gated, transcoders, Matryoshka, SAELens's
    # JumpReLU training parameter
    write("model-ok-gated", family_model(arch="gated"))
    write("model-ok-gated-saelens", family_model(arch="gated", metadata=False))
    write("bad-model-gated-b-enc", family_model(arch="gated", extra=[
        ("b_enc", "F32", (D_SAE,), st_min.f32([0.0] * D_SAE))]))
    write("bad-model-gated-no-r-mag", family_model(arch="gated", metadata=False, drop=("r_mag",)))
    write("bad-model-b-mag-alone", family_model(metadata=False, extra=[
        ("b_mag", "F32", (D_SAE,), st_min.f32([0.0] * D_SAE))]))
    write("model-ok-transcoder", family_model("transcoder"))
    write("model-ok-transcoder-saelens", family_model("transcoder", metadata=False))
    write("model-ok-skip-transcoder", family_model("skip_transcoder", arch="topk"))
    write("model-ok-skip-transcoder-saelens", family_model("skip_transcoder", metadata=False))
    write("model-ok-jumprelu-skip-transcoder", family_model("skip_transcoder", arch="jumprelu"))
    write("model-ok-batchtopk-transcoder", family_model("transcoder", arch="batchtopk"))
    write("bad-model-kind", family_model("transcoder", meta_extra={"libsae_kind": "encoder"}))
    write("bad-model-kind-no-skip", family_model("transcoder", meta_extra={
        "libsae_kind": "skip_transcoder"}))
    write("bad-model-gated-transcoder", family_model("transcoder", arch="gated"))
    write("model-ok-transcoder-no-kind", family_model("transcoder", meta_extra={
        "libsae_kind": None}))
    write("bad-model-skip-shape", family_model("transcoder", metadata=False, extra=[
        ("W_skip", "F32", (D_IN, D_OUT), st_min.f32([0.0] * D_OUT * D_IN))]))
    write("model-ok-matryoshka", family_model(arch="matryoshka_batchtopk"))
    write("bad-model-matryoshka-widths", family_model(arch="matryoshka_batchtopk", widths="2,x"))
    write("bad-model-matryoshka-order", family_model(arch="matryoshka_batchtopk", widths="3,2"))
    write("bad-model-matryoshka-empty", family_model(arch="matryoshka_batchtopk", widths=""))
    write("bad-model-widths-alone", family_model(meta_extra={"libsae_matryoshka_widths": "2"}))
    logs = [f32_round(math.log(th)) for th in (0.5, 0.25, 1.5, 0.001, 0.9)]
    saelens_training = model_tensors() + [("log_threshold", "F32", (D_SAE,), st_min.f32(logs))]
    write("model-ok-jumprelu-log-threshold", st_min.pack(saelens_training))
    write("bad-model-both-thresholds", st_min.pack(saelens_training + [
        ("threshold", "F32", (D_SAE,), st_min.f32([0.5] * D_SAE))]))
    write("bad-model-log-threshold-range", st_min.pack(model_tensors() + [
        ("log_threshold", "F32", (D_SAE,), st_min.f32([100.0] * D_SAE))]))
    write("opt-family-gated-1", optimizer_file(gated=True))
    write("opt-family-skip-1", optimizer_file(skip=True))
    write("bad-opt-gated-b-enc", optimizer_file(gated=True, extra=[
        ("b_enc.exp_avg", "F32", (D_SAE,), st_min.f32([0.0] * D_SAE))]))

    # ---- the header length and framing
    write("bad-empty", b"")
    write("bad-short", b"\x02\0\0\0\0")
    write("bad-len-zero", struct.pack("<Q", 0) + good[8:])
    write("bad-len-one", struct.pack("<Q", 1) + good[8:])
    write("bad-len-beyond", struct.pack("<Q", len(good) - 7) + good[8:])
    write("bad-len-huge", struct.pack("<Q", 2**63 + 5) + good[8:])
    write("bad-len-over-limit", struct.pack("<Q", 100000001) + good[8:])
    write("bad-truncated-header", good[:40])
    write("bad-truncated-data", good[:-1])
    write("bad-truncated-half", good[:len(good) // 2])
    write("bad-extra-byte", good + b"\0")
    # ---- JSON
    write("bad-not-json", st_min.pack_raw_header("not json at all", data))
    write("bad-not-object", st_min.pack_raw_header("[" + header + "]", data))
    write("bad-leading-space", st_min.pack_raw_header(" " + header, data))
    write("bad-trailing-garbage", st_min.pack_raw_header(header + " x", data))
    write("bad-trailing-comma", replace_header("]}}", "]},}"))
    write("bad-deep", replace_header('"shape":[3,5]', '"shape":[[3],5]'))
    write("bad-utf8", st_min.pack_raw_header(
        header.encode().replace(b'"b_dec"', b'"b_d\xffc"'), data))
    write("bad-utf8-raw", st_min.pack_raw_header(
        header.encode().replace(b'"b_dec"', b'"b_d\xc0\xafc"'), data))
    write("bad-escape", replace_header('"W_enc"', '"W_\\xenc"'))
    write("bad-lone-surrogate", replace_header('"W_enc"', '"W_\\ud800enc"'))
    write("bad-control-char", replace_header('"W_enc"', '"W_\tenc"'))
    write("bad-dup-tensor", replace_header('{"W_dec"', '{"W_enc":{"dtype":"F32","shape":[3,5],'
                                           '"data_offsets":[60,120]},"W_dec"'))
    write("bad-dup-field", replace_header('"dtype":"F32"', '"dtype":"F32","dtype":"F32"'))
    write("bad-unknown-field", replace_header('"dtype":"F32"', '"dtype":"F32","stride":[1]'))
    write("bad-missing-field", replace_header('"dtype":"F32",', ""))
    write("bad-metadata-number", replace_header("{", '{"__metadata__":{"a":1},'))
    write("bad-two-metadata", replace_header("{", '{"__metadata__":{},"__metadata__":{},'))
    # ---- tensors
    write("bad-missing-tensor", st_min.pack(model_tensors()[:3]))
    write("bad-int-dtype", replace_header('"dtype":"F32"', '"dtype":"I32"'))
    write("bad-unknown-dtype", replace_header('"dtype":"F32"', '"dtype":"F24"'))
    write("bad-shape-mismatch", replace_header('"shape":[5,3]', '"shape":[3,5]'))
    write("bad-shape-rank", replace_header('"shape":[3,5]', '"shape":[15]'))
    write("bad-rank-9", replace_header('"shape":[3,5]', '"shape":[3,5,1,1,1,1,1,1,1]'))
    write("bad-zero-dim", st_min.pack([("W_dec", "F32", (0, D_IN), b""), ("W_enc", "F32", (D_IN, 0), b""),
                                       ("b_dec", "F32", (D_IN,), st_min.f32([0.0] * D_IN)),
                                       ("b_enc", "F32", (0,), b"")]))
    write("bad-size-mismatch", replace_header('"data_offsets":[0,60]', '"data_offsets":[0,64]'))
    write("bad-overlap", replace_header('"data_offsets":[60,120]', '"data_offsets":[56,116]'))
    write("bad-gap", st_min.pack_raw_header(header.replace("[60,120]", "[64,124]").replace(
        "[120,132]", "[124,136]").replace("[132,152]", "[136,156]"), data + b"\0" * 4))
    write("bad-offset-beyond", replace_header('"data_offsets":[132,152]', '"data_offsets":[132,156]'))
    write("bad-end-before-begin", replace_header('"data_offsets":[0,60]', '"data_offsets":[60,0]'))
    write("bad-u64-overflow", replace_header('"data_offsets":[0,60]', '"data_offsets":[0,18446744073709551676]'))
    write("bad-product-overflow", replace_header('"shape":[3,5]', '"shape":[4294967296,4294967296]'))
    write("bad-negative", replace_header('"data_offsets":[0,60]', '"data_offsets":[-0,60]'))
    write("bad-float-number", replace_header('"shape":[3,5]', '"shape":[3.0,5]'))
    write("bad-threshold-zero", st_min.pack(model_tensors() + [("threshold", "F32", (D_SAE,),
                                                                 st_min.f32([0.0] * D_SAE))]))
    # SAELens's JumpReLU training parameter loads (model-ok-jumprelu-log-threshold),
    # never beside libsae's own thresholds
    _, jr = st_min.unpack(model_arch("jumprelu"))
    write("bad-log-threshold-tensor", st_min.pack(
        [(n, dt, sh, raw) for n, (dt, sh, raw) in jr.items()] +
        [("log_threshold", "F32", (D_SAE,), st_min.f32([-1.0] * D_SAE))],
        st_min.unpack(model_arch("jumprelu"))[0]))
    write("bad-topk-threshold-tensor", st_min.pack(model_tensors() + [
        ("topk_threshold", "F64", (), struct.pack("<d", 0.5))]))
    # ---- architectures
    write("bad-arch-unknown", model_arch("standard", meta_extra={"libsae_architecture": "temporal"}))
    write("bad-arch-gated-without-b-gate", model_arch(
        "standard", meta_extra={"libsae_architecture": "gated"}))
    write("bad-arch-case", model_arch("topk", meta_extra={"libsae_architecture": "TopK"}))
    write("bad-arch-relu", model_arch("standard", meta_extra={"libsae_architecture": "relu"}))
    write("bad-standard-with-k", model_arch("standard", meta_extra={"libsae_k": "2"}))
    write("bad-standard-with-threshold", model_arch("jumprelu", meta_extra={
        "libsae_architecture": "standard", "libsae_log_threshold": None}))
    write("bad-k-zero", model_arch("topk", k=0))
    write("bad-k-above-d-sae", model_arch("topk", k=6))
    write("bad-k-leading-zero", model_arch("topk", k="02"))
    write("bad-k-negative", model_arch("topk", k=-2))
    write("bad-k-float", model_arch("topk", k="2.0"))
    write("bad-k-huge", model_arch("topk", k=2**64 + 2))
    write("bad-k-missing", model_arch("topk", meta_extra={"libsae_k": None}))
    write("bad-k-without-arch", model_arch("topk", meta_extra={"libsae_architecture": None}))
    write("bad-topk-with-threshold", model_arch("batchtopk", meta_extra={
        "libsae_architecture": "topk", "libsae_threshold": None}))
    write("bad-batchtopk-no-tensor", st_min.pack(model_tensors(), {
        "libsae_architecture": "batchtopk", "libsae_k": "2", "libsae_threshold": float.hex(0.25)}))
    write("bad-batchtopk-no-threshold-meta", model_arch("batchtopk", meta_extra={"libsae_threshold": None}))
    write("bad-batchtopk-no-k", model_arch("batchtopk", meta_extra={"libsae_k": None}))
    write("bad-batchtopk-mismatch", model_arch("batchtopk", meta_extra={"libsae_threshold": float.hex(0.5)}))
    write("bad-batchtopk-unset-mismatch", model_arch("batchtopk", meta_extra={
        "libsae_threshold": float.hex(-1.0)}))
    write("bad-batchtopk-not-float", model_arch("batchtopk", meta_extra={
        "libsae_threshold": "0x1.0000000000001p-2"}))
    write("bad-batchtopk-beyond-float", model_arch("batchtopk", meta_extra={
        "libsae_threshold": "0x1.0000000000000p+300"}))
    write("bad-batchtopk-decimal", model_arch("batchtopk", meta_extra={"libsae_threshold": "0.25"}))
    write("bad-batchtopk-unequal", replace_tensor(model_arch("batchtopk"), "threshold",
                                                  st_min.f32([0.25, 0.25, 0.5, 0.25, 0.25])))
    write("bad-batchtopk-as-jumprelu", model_arch("batchtopk", meta_extra={
        "libsae_architecture": "jumprelu", "libsae_threshold": None}))  # with libsae_k
    write("bad-jumprelu-theta-zero", model_arch("jumprelu", metadata=False, threshold=[0.5, 0, 1, 1, 1]))
    write("bad-jumprelu-theta-negative", model_arch("jumprelu", metadata=False, threshold=[0.5, -1, 1, 1, 1]))
    write("bad-jumprelu-theta-tiny", model_arch("jumprelu", metadata=False, threshold=[0.5, 1e-31, 1, 1, 1]))
    write("bad-jumprelu-theta-huge", model_arch("jumprelu", metadata=False, threshold=[0.5, 2e30, 1, 1, 1]))
    write("bad-jumprelu-theta-nan", model_arch("jumprelu", metadata=False,
                                               threshold=[0.5, float("nan"), 1, 1, 1]))
    write("bad-jumprelu-theta-mismatch", model_arch("jumprelu", threshold=[0.5, 0.25, 1.5, 0.001, 0.8]))
    good_log = "".join(struct.pack(">f", f32_round(math.log(v))).hex() for v in (0.5, 0.25, 1.5, 0.001, 0.9))
    write("bad-jumprelu-log-short", model_arch("jumprelu", meta_extra={"libsae_log_threshold": good_log[:-1]}))
    write("bad-jumprelu-log-long", model_arch("jumprelu", meta_extra={"libsae_log_threshold": good_log + "0"}))
    write("bad-jumprelu-log-upper", model_arch("jumprelu", meta_extra={"libsae_log_threshold": good_log.upper()}))
    write("bad-jumprelu-log-not-hex", model_arch("jumprelu", meta_extra={
        "libsae_log_threshold": "x" + good_log[1:]}))
    write("bad-jumprelu-log-nan", model_arch("jumprelu", meta_extra={
        "libsae_log_threshold": "7fc00000" + good_log[8:]}))
    write("bad-jumprelu-log-inf", model_arch("jumprelu", meta_extra={
        "libsae_log_threshold": "ff800000" + good_log[8:]}))
    write("bad-jumprelu-log-without-arch", model_arch("jumprelu", meta_extra={"libsae_architecture": None}))
    write("bad-jumprelu-log-on-topk", model_arch("topk", meta_extra={"libsae_log_threshold": good_log}))
    write("bad-jumprelu-threshold-shape", replace_tensor(model_arch("jumprelu"), "threshold", None,
                                                         shape=(1, D_SAE)))
    write("bad-jumprelu-threshold-int", replace_tensor(model_arch("jumprelu"), "threshold", None,
                                                       dtype="I32"))
    write("bad-jumprelu-threshold-missing", model_arch("topk", k=2, meta_extra={
        "libsae_architecture": "jumprelu", "libsae_k": None}))
    write("bad-scaling-not-ones", st_min.pack(model_tensors() + [("scaling_factor", "F32", (D_SAE,),
                                                                   st_min.f32([1, 1, 2, 1, 1]))]))
    # ---- values
    t = model_tensors()
    for kind, raw in (("nan", struct.pack("<f", float("nan"))), ("inf", struct.pack("<f", float("inf"))),
                      ("neg-inf", struct.pack("<f", float("-inf")))):
        name, dt, shape, blob = t[1]
        bad = list(t)
        bad[1] = (name, dt, shape, blob[:8] + raw + blob[12:])
        write("bad-%s" % kind, st_min.pack(bad))
    f16 = model_tensors("F16")
    f16[2] = (f16[2][0], "F16", f16[2][2], f16[2][3][:2] + b"\x00\x7c" + f16[2][3][4:])
    write("bad-f16-inf", st_min.pack(f16))
    bf = model_tensors("BF16")
    bf[3] = (bf[3][0], "BF16", bf[3][2], bf[3][3][:2] + b"\xc0\x7f" + bf[3][3][4:])
    write("bad-bf16-nan", st_min.pack(bf))
    f64 = model_tensors("F64")
    f64[0] = (f64[0][0], "F64", f64[0][2], struct.pack("<d", 1e300) + f64[0][3][8:])
    write("bad-f64-beyond-float", st_min.pack(f64))
    # ---- optimizer files
    write("bad-opt-unknown-option", optimizer_file(options={**OPTIONS, 999: 1.0}))
    write("bad-opt-option-range", optimizer_file(options={**OPTIONS, 2: 1.0}))
    write("bad-opt-option-text", optimizer_file(options={**OPTIONS, 1: "0.003"}))
    write("bad-opt-option-key", optimizer_file(options={**OPTIONS, "01": 0.5}))
    write("bad-opt-step", optimizer_file(step="-1"))
    write("bad-opt-step-overflow", optimizer_file(step="18446744073709551616"))
    write("bad-opt-version", optimizer_file(version="2"))
    write("bad-opt-negative-m2", optimizer_file(m2_value=-1e-9))
    write("bad-opt-nan-m1", optimizer_file(m1_value=float("nan")))
    write("bad-opt-missing-tensor", optimizer_file(drop="b_enc.exp_avg_sq"))
    write("bad-opt-extra-tensor", optimizer_file(extra=[("bogus", "F32", (1,), st_min.f32([0]))]))
    write("bad-opt-since-dtype", optimizer_file(since_dtype="I64"))
    write("bad-opt-jumprelu-one-moment", optimizer_file(jumprelu=True, drop="log_threshold.exp_avg_sq"))
    write("bad-opt-jumprelu-shape", optimizer_file(jumprelu=True, thr_shape=(1, D_SAE)))
    write("bad-opt-jumprelu-d-in", optimizer_file(jumprelu=True, thr_shape=(D_IN,)))
    write("bad-opt-jumprelu-negative-m2", optimizer_file(jumprelu=True, m2_value=-1e-9))
    write("bad-opt-option-20-range", optimizer_file(options={**OPTIONS, 20: -1.0}))
    write("bad-opt-option-21-fraction", optimizer_file(options={**OPTIONS, 21: 2.5}))
    write("bad-opt-option-22-zero", optimizer_file(options={**OPTIONS, 22: 0.0}))
    write("bad-opt-option-24-one", optimizer_file(options={**OPTIONS, 24: 1.0}))

    # ---- cfg.json beside valid weights
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "metadata": {"producer": "libsae", "libsae_version": "0.1.0"}}
    write("cfg-ok-libsae.json", json.dumps(cfg, indent=2))
    write("cfg-ok-empty.json", "{}")
    write("cfg-ok-saelens6.json", json.dumps(dict(
        cfg, metadata={"sae_lens_version": "6.5.1", "hook_name": "blocks.8.hook_resid_pre",
                       "seqpos_slice": [None], "context_size": 128},
        l1_coefficient=5.0, lr=5e-5, decoder_init_norm=0.1)))
    write("cfg-ok-old-saelens.json", json.dumps(dict(
        cfg, activation_fn_str="relu", normalize_activations=False, hook_point_layer=8,
        finetuning_scaling_factor=False)))
    write("cfg-bad-jumprelu.json", json.dumps(dict(cfg, architecture="jumprelu")))
    write("cfg-bad-topk.json", json.dumps(dict(cfg, activation_fn_str="topk",
                                                activation_fn_kwargs={"k": 2})))
    write("cfg-bad-no-bdec.json", json.dumps(dict(cfg, apply_b_dec_to_input=False)))
    write("cfg-bad-norm.json", json.dumps(dict(cfg, normalize_activations="layer_norm")))
    write("cfg-bad-dim.json", json.dumps(dict(cfg, d_sae=6)))
    write("cfg-bad-syntax.json", '{"architecture": "standard",}')
    write("cfg-bad-dup.json", '{"d_in": 3, "d_in": 3}')
    write("cfg-bad-not-object.json", "[]")
    write("cfg-bad-rescale.json", json.dumps(dict(cfg, rescale_acts_by_decoder_norm=True)))

    # ---- cfg.json beside libsae's TopK (k = 2), BatchTopK and JumpReLU weights
    topk = dict(cfg, architecture="topk", k=2, activation_fn_str="topk",
                activation_fn_kwargs={"k": 2}, rescale_acts_by_decoder_norm=False)
    write("cfg-topk-ok-libsae.json", json.dumps(topk, indent=2))
    write("cfg-topk-ok-saelens6.json", json.dumps({
        "architecture": "topk", "d_in": D_IN, "d_sae": D_SAE, "k": 2, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none", "rescale_acts_by_decoder_norm": False,
        "metadata": {"sae_lens_version": "6.12.1", "hook_name": "blocks.8.hook_resid_pre"}}))
    write("cfg-topk-ok-pre6.json", json.dumps({
        "architecture": "topk", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2}}))
    write("cfg-topk-bad-no-k.json", json.dumps({"architecture": "topk"}))
    write("cfg-topk-bad-k-mismatch.json", json.dumps(dict(topk, k=3, activation_fn_kwargs={"k": 3})))
    write("cfg-topk-bad-kwargs-mismatch.json", json.dumps(dict(topk, activation_fn_kwargs={"k": 3})))
    write("cfg-topk-bad-k-zero.json", json.dumps(dict(topk, k=0)))
    write("cfg-topk-bad-k-float.json", json.dumps(dict(topk, k=2.0)))
    write("cfg-topk-bad-kwargs-list.json", json.dumps(dict(topk, activation_fn_kwargs=[2])))
    write("cfg-topk-bad-relu.json", json.dumps(dict(topk, activation_fn_str="relu")))
    write("cfg-topk-ok-rescale.json", json.dumps(dict(topk, rescale_acts_by_decoder_norm=True)))
    write("cfg-topk-bad-rescale-int.json", json.dumps(dict(topk, rescale_acts_by_decoder_norm=1)))
    # SAELens's BatchTopK / Matryoshka training checkpoints need topk_threshold
    write("cfg-topk-bad-batchtopk-saelens.json", json.dumps(dict(
        topk, architecture="batchtopk", k=2.0, topk_threshold_lr=0.01)))
    write("cfg-topk-bad-matryoshka-saelens.json", json.dumps(dict(
        topk, architecture="matryoshka_batchtopk", k=2.0, matryoshka_widths=[1, 3])))
    write("cfg-bad-matryoshka-widths.json", json.dumps(dict(
        cfg, architecture="matryoshka_batchtopk", k=2.0, matryoshka_widths=[1, "x"])))
    write("cfg-topk-bad-pre6-standard.json", json.dumps(dict(
        topk, architecture="standard")))  # SAELens 6 reads this as ReLU
    write("cfg-topk-bad-empty.json", "{}")
    write("cfg-topk-bad-jumprelu.json", json.dumps(dict(cfg, architecture="jumprelu")))
    jump = dict(cfg, architecture="jumprelu", activation_fn_str="relu", activation_fn_kwargs={})
    write("cfg-jumprelu-ok-libsae.json", json.dumps(jump, indent=2))
    write("cfg-jumprelu-ok-minimal.json", json.dumps({"architecture": "jumprelu"}))
    write("cfg-jumprelu-bad-standard.json", json.dumps(cfg))
    write("cfg-jumprelu-bad-topk.json", json.dumps(topk))
    write("cfg-jumprelu-bad-activation.json", json.dumps(dict(jump, activation_fn_str="topk")))
    write("cfg-jumprelu-bad-gated.json", json.dumps(dict(jump, architecture="gated")))
    write("cfg-batchtopk-ok-libsae.json", json.dumps(jump, indent=2))
    write("cfg-batchtopk-bad-batchtopk.json", json.dumps(dict(jump, architecture="batchtopk", k=2)))
    write("cfg-batchtopk-bad-topk.json", json.dumps(topk))
    write("cfg-batchtopk-bad-dim.json", json.dumps(dict(jump, d_in=4)))
    # the families' architectures (beside autoencoders' weights: each refused)
    trans = dict(cfg, architecture="transcoder", d_out=D_OUT, apply_b_dec_to_input=False)
    write("cfg-bad-transcoder.json", json.dumps(trans, indent=2))
    write("cfg-bad-skip-transcoder.json", json.dumps(dict(trans, architecture="skip_transcoder")))
    write("cfg-bad-jumprelu-transcoder.json", json.dumps(dict(
        trans, architecture="jumprelu_transcoder")))
    write("cfg-bad-topk-transcoder.json", json.dumps(dict(
        trans, architecture="topk_transcoder", k=2)))
    write("cfg-bad-transcoder-d-out.json", json.dumps(dict(trans, d_out=0)))
    write("cfg-bad-transcoder-b-dec.json", json.dumps(dict(trans, apply_b_dec_to_input="no")))
    write("cfg-bad-gated.json", json.dumps(dict(cfg, architecture="gated")))
    write("cfg-bad-temporal.json", json.dumps(dict(cfg, architecture="temporal")))
    write("cfg-bad-architecture-number.json", json.dumps(dict(cfg, architecture=3)))
    write("cfg-ok-d-out-ignored.json", json.dumps(dict(cfg, d_out=9)))

    # ---- feature statistics (sae_feature_stats_save's format)
    write("stats-ok-1", stats_file())
    write("stats-ok-empty", stats_file(features=[[], [], []], rows=(0, 7, 7)))
    write("stats-ok-extra-metadata", stats_file(meta_extra={"note": "x"}))
    write("stats-ok-wide-range", stats_file(log10_range=(-60.0, 60.0), bins=1, top_n=1))
    write("stats-ok-first-row", stats_file(
        features=[[(10, 1.5)], [(11, 0.25), (12, 0.25)], []], rows=(3, 10, 13)))
    # one row in ids 0..4: the harness's merge with its own copy passes the
    # span check and must be refused for the row in both top lists
    write("stats-ok-sparse-rows", stats_file(features=[[(0, 0.5)], [], []], rows=(1, 0, 5),
                                            top_n=3))
    write("stats-bad-no-format", stats_file(meta_extra={"libsae_format": None}))
    write("stats-bad-version", stats_file(meta_extra={"libsae_format_version": "2"}))
    write("stats-bad-optimizer", stats_file(meta_extra={"libsae_format": "optimizer"}))
    write("stats-bad-missing-tensor", stats_file(drop="sum_sq"))
    write("stats-bad-extra-tensor", stats_file(extra=[("max", "F32", (3,), st_min.f32([1, 0, 1]))]))
    write("stats-bad-dtype", stats_file(dtypes={"top_rows": "I64"}))
    write("stats-bad-range-dtype", stats_file(dtypes={"log10_range": "U64"}))
    write("stats-bad-range-equal", stats_file(log10_range=(1.0, 1.0)))
    write("stats-bad-range-nan", stats_file(log10_range=(float("nan"), 1.0)))
    write("stats-bad-range-wide", stats_file(log10_range=(-61.0, 1.0)))
    write("stats-bad-top-n-zero", stats_file(top_n=0))
    write("stats-bad-bins-zero", stats_file(bins=0))
    write("stats-bad-more-rows-than-ids", stats_file(rows=(6, 0, 5)))
    write("stats-bad-first-after-next", stats_file(rows=(0, 6, 5), features=[[], [], []]))
    write("stats-bad-empty-first", stats_file(features=[[], [], []], rows=(0, 3, 7)))
    write("stats-bad-row-beyond", stats_file(features=[[(5, 1.0)], [], []], rows=(5, 0, 5)))
    write("stats-bad-row-before-first", stats_file(features=[[(0, 1.0)], [], []], rows=(1, 1, 5)))
    write("stats-bad-count-above-rows", stats_file(
        features=[[(0, 1.0), (1, 1.0), (2, 1.0)], [], []], rows=(2, 0, 5)))
    write("stats-bad-value-zero", stats_file(features=[[(0, 0.0)], [], []]))
    write("stats-bad-value-inf", stats_file(features=[[(0, float("inf"))], [], []], limbs={
        ("sum", 0): [0] * 5 + [1], ("sum_sq", 0): [0] * 9 + [1]}))
    zero = [0] * 6
    write("stats-bad-sum-zero", stats_file(limbs={("sum", 0): zero}))
    write("stats-bad-sum-huge", stats_file(limbs={("sum", 0): [0] * 5 + [1]}))
    write("stats-bad-sum-top-limb", stats_file(limbs={("sum", 0): [0] * 5 + [2**63]}))
    write("stats-bad-sum-sq-small", stats_file(limbs={("sum_sq", 0): [1] + [0] * 9}))
    write("stats-bad-sum-silent", stats_file(limbs={("sum", 1): [1] + [0] * 5}))
    blob = stats_file()
    _, t = st_min.unpack(blob)
    hist = bytearray(t["histogram"][2])
    hist[0] = 1  # feature 0: four in its bins, three fired
    write("stats-bad-histogram", replace_tensor(blob, "histogram", bytes(hist)))
    rows = bytearray(t["top_rows"][2])
    rows[8 * 3] = 9  # feature 1 never fired: its slots must be 0
    write("stats-bad-unused-slot", replace_tensor(blob, "top_rows", bytes(rows)))
    vals = list(struct.unpack("<6f", t["top_values"][2]))
    vals[0], vals[1] = vals[1], vals[0]
    write("stats-bad-top-order", replace_tensor(blob, "top_values", st_min.f32(vals)))
    vals = list(struct.unpack("<6f", t["top_values"][2]))
    vals[5] = -0.0  # feature 2's unused slot: -0 is not 0
    write("stats-bad-negative-zero", replace_tensor(blob, "top_values", st_min.f32(vals)))
    write("stats-bad-shape", replace_tensor(blob, "sum", None, shape=(6, 3)))


if __name__ == "__main__":
    main()
