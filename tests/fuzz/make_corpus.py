#!/usr/bin/python3
"""Write the seed corpus of the checkpoint loaders' fuzzer: tests/fuzz/corpus/.

Every file is tiny (a model with d_in = 3, d_sae = 5) and its name says what
the loaders must do with it; tests/fuzz/replay.c checks that in every CTest
run:
  model-ok-*   sae_model_load_buffer succeeds
  opt-ok-*     sae_optimizer_load_buffer succeeds (for a 3 x 5 model)
  bad-*        both loaders return SAE_E_FORMAT
  cfg-ok-*     as cfg.json beside valid 3 x 5 weights, sae_model_load succeeds
  cfg-bad-*    ... and returns SAE_E_FORMAT
The files are written by tests/python/st_min.py, independently of libsae.
Run it again after changing it (the output is deterministic) and commit the
corpus: python3 tests/fuzz/make_corpus.py
"""

import json
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


def optimizer_file(options=None, step="7", meta_extra=None, drop=None, extra=None,
                   m2_value=None, m1_value=None, since_dtype="U64", version="1"):
    meta = {"libsae_format": "optimizer", "libsae_format_version": version,
            "libsae_version": "0.1.0", "step": step}
    for k, v in (OPTIONS if options is None else options).items():
        meta["option.%s" % k] = v if isinstance(v, str) else float.hex(v)
    meta.update(meta_extra or {})
    since = struct.pack("<5Q", 0, 3, 96, 2**40, 17)
    tensors = [("tokens_since_fired", since_dtype, (D_SAE,), since)]
    shapes = {"W_dec": (D_SAE, D_IN), "W_enc": (D_IN, D_SAE), "b_dec": (D_IN,), "b_enc": (D_SAE,)}
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        m1 = [v * 1e-3 for v in values(n, len(name))]
        m2 = [abs(v) * 1e-6 for v in values(n, len(name) + 1)]
        if m1_value is not None and name == "b_enc":
            m1[-1] = m1_value
        if m2_value is not None and name == "W_dec":
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
    write("bad-threshold", st_min.pack(model_tensors() + [("threshold", "F32", (D_SAE,),
                                                            st_min.f32([0.1] * D_SAE))]))
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


if __name__ == "__main__":
    main()
