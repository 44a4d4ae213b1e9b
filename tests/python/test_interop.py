#!/usr/bin/python3
"""Interop between libsae's checkpoints and the Python world.

Files written here by an independent minimal writer (st_min.py, numpy, and
torch tensors' raw bytes when torch is importable) are loaded through libsae
via ctypes and compared with the arrays that made them; files libsae writes
are read back independently and compared bit for bit, and the SAE they hold
is evaluated the way SAELens does (numpy / torch), against sae_encode.

The library's functions come typed from the package's one signature table
(libsae.capi); the library is $LIBSAE_PATH (CTest: the fresh build's):

    LIBSAE_PATH=build/libsae.so.0 /usr/bin/python3 -m pytest tests/python/test_interop.py
"""

import ctypes as C
import json
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import saelens_files as sl  # noqa: E402
import st_min  # noqa: E402
from libsae import capi  # noqa: E402
from reference import (encode_as_saelens, jumprelu_encode,  # noqa: E402
                       saelens_encode, topk_encode)

try:
    import torch
except ImportError:  # python3-torch is optional
    torch = None

LIB = capi.lib
SAE_OK, SAE_E_INVALID_ARG, SAE_E_FORMAT = 0, -1, -5
W_ENC, B_ENC, W_DEC, B_DEC, THRESHOLD = 0, 1, 2, 3, 4
OPT_LR, OPT_BETA1, OPT_BETA2, OPT_EPS, OPT_L1, OPT_CLIP = 1, 2, 3, 4, 5, 6
OPT_AUXK_COEFF, OPT_AUXK_K, OPT_DEAD_WINDOW, OPT_BANDWIDTH, OPT_THRESHOLD_BETA = 20, 21, 22, 23, 24
RELU, TOPK, BATCHTOPK, JUMPRELU = 0, 1, 2, 3
ARCH_NAMES = {RELU: "standard", TOPK: "topk", BATCHTOPK: "batchtopk", JUMPRELU: "jumprelu"}
FLOATS = C.POINTER(C.c_float)


def fptr(a):
    assert a.dtype == np.float32 and a.flags["C_CONTIGUOUS"]
    return a.ctypes.data_as(FLOATS)


def loaded(cls, load, *args):
    """cls over the handle that load(&out, *args) makes, or load's status,
    with *out NULL on failure (as sae.h promises)."""
    h = C.c_void_p(1)
    rc = load(C.byref(h), *args)
    if rc != SAE_OK:
        assert not h.value  # *out is NULL on failure
        return rc
    return cls(h)


class Model:
    """A libsae model handle."""

    def __init__(self, handle):
        self.h = handle

    @classmethod
    def create(cls, d_in, d_sae, seed):
        h = C.c_void_p()
        assert LIB.sae_model_create(C.byref(h), d_in, d_sae, seed) == SAE_OK
        return cls(h)

    @classmethod
    def create_arch(cls, d_in, d_sae, seed, arch, param):
        h = C.c_void_p()
        assert LIB.sae_model_create_arch(C.byref(h), d_in, d_sae, seed, arch, param) == SAE_OK
        return cls(h)

    @classmethod
    def load_buffer(cls, blob):
        return loaded(cls, LIB.sae_model_load_buffer, blob, len(blob))

    @classmethod
    def load(cls, path):
        return loaded(cls, LIB.sae_model_load, path.encode())

    def __del__(self):
        if LIB is not None and self.h:
            LIB.sae_model_free(self.h)

    @property
    def dims(self):
        return LIB.sae_model_d_in(self.h), LIB.sae_model_d_sae(self.h)

    @property
    def arch(self):
        return LIB.sae_model_arch(self.h)

    @property
    def k(self):
        return LIB.sae_model_k(self.h)

    def tensor(self, which):
        d_in, d_sae = self.dims
        shape = {W_ENC: (d_in, d_sae), B_ENC: (d_sae,), W_DEC: (d_sae, d_in), B_DEC: (d_in,),
                 THRESHOLD: (LIB.sae_model_tensor_size(self.h, THRESHOLD),)}[which]
        out = np.empty(shape, np.float32)
        assert LIB.sae_model_get_tensor(self.h, which, fptr(out), out.size) == SAE_OK
        return out

    def tensors(self):
        return {"W_enc": self.tensor(W_ENC), "b_enc": self.tensor(B_ENC),
                "W_dec": self.tensor(W_DEC), "b_dec": self.tensor(B_DEC)}

    def encode(self, x):
        x = np.ascontiguousarray(x, np.float32)
        f = np.empty((x.shape[0], self.dims[1]), np.float32)
        assert LIB.sae_encode(self.h, fptr(x), x.shape[0], fptr(f)) == SAE_OK
        return f

    def save_buffer(self):
        size = C.c_size_t()
        assert LIB.sae_model_save_size(self.h, C.byref(size)) == SAE_OK
        buf = C.create_string_buffer(size.value)
        written = C.c_size_t()
        assert LIB.sae_model_save_buffer(self.h, buf, size.value, C.byref(written)) == SAE_OK
        assert written.value == size.value
        return buf.raw


class Optimizer:
    def __init__(self, handle):
        self.h = handle

    @classmethod
    def create(cls, model):
        h = C.c_void_p()
        assert LIB.sae_optimizer_create(C.byref(h), model.h) == SAE_OK
        return cls(h)

    @classmethod
    def load_buffer(cls, model, blob):
        return loaded(cls, LIB.sae_optimizer_load_buffer, model.h, blob, len(blob))

    def __del__(self):
        if LIB is not None and self.h:
            LIB.sae_optimizer_free(self.h)

    def get(self, option):
        v = C.c_double()
        assert LIB.sae_optimizer_get(self.h, option, C.byref(v)) == SAE_OK
        return v.value

    def set(self, option, value):
        assert LIB.sae_optimizer_set(self.h, option, value) == SAE_OK

    def since_fired(self, d_sae):
        out = (C.c_uint64 * d_sae)()
        assert LIB.sae_optimizer_tokens_since_fired(self.h, out, d_sae) == SAE_OK
        return list(out)

    def save_buffer(self):
        size = C.c_size_t()
        assert LIB.sae_optimizer_save_size(self.h, C.byref(size)) == SAE_OK
        buf = C.create_string_buffer(size.value)
        assert LIB.sae_optimizer_save_buffer(self.h, buf, size.value, None) == SAE_OK
        return buf.raw


def trained(d_in, d_sae, steps=5, seed=3):
    m = Model.create(d_in, d_sae, seed)
    o = Optimizer.create(m)
    o.set(OPT_LR, 1e-2)
    o.set(OPT_L1, 0.25)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.normal(0.2, 1.0, (32, d_in)).astype(np.float32)
        assert LIB.sae_step(m.h, o.h, fptr(x), 32, None) == SAE_OK
    return m, o


def trained_arch(arch, d_in, d_sae, param, steps=6, seed=3):
    """A model of architecture arch trained a little: AuxK on (a short dead
    window), JumpReLU thresholds in a wide band so that they move."""
    m = Model.create_arch(d_in, d_sae, seed, arch, param)
    o = Optimizer.create(m)
    o.set(OPT_LR, 1e-2)
    o.set(OPT_L1, 0.25)
    o.set(OPT_DEAD_WINDOW, 16)
    o.set(OPT_BANDWIDTH, 0.5)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.normal(0.2, 3.0, (32, d_in)).astype(np.float32)
        assert LIB.sae_step(m.h, o.h, fptr(x), 32, None) == SAE_OK
    return m, o


def assert_features_equal(test, got, want):
    """float32 features against a float64 reference: equal to rounding."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    test.assertTrue(np.any(got > 0) and np.any(got == 0))


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def bf16_round(a):
    """float32 -> bfloat16 bits (round to nearest even), and their float32 value."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return rounded, (rounded.astype(np.uint32) << 16).view(np.float32)


def model_file(arrays, dtype="F32", raw=None, metadata=None):
    enc = raw or (lambda a: np.ascontiguousarray(a, {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype]).tobytes())
    return st_min.pack([(n, dtype, arrays[n].shape, enc(arrays[n]))
                        for n in ("W_dec", "W_enc", "b_dec", "b_enc")], metadata)


def random_arrays(rng, d_in, d_sae):
    return {"W_enc": rng.normal(0, 0.3, (d_in, d_sae)).astype(np.float32),
            "W_dec": rng.normal(0, 0.3, (d_sae, d_in)).astype(np.float32),
            "b_enc": rng.normal(0, 0.1, d_sae).astype(np.float32),
            "b_dec": rng.normal(0, 0.1, d_in).astype(np.float32)}


class PythonWritesLibsaeReads(unittest.TestCase):
    def test_f32_bit_for_bit(self):
        rng = np.random.default_rng(1)
        arrays = random_arrays(rng, 6, 10)
        arrays["W_enc"][0, 0] = np.float32(1e-40)  # a subnormal survives
        m = Model.load_buffer(model_file(arrays))
        self.assertIsInstance(m, Model)
        self.assertEqual(m.dims, (6, 10))
        for name, a in m.tensors().items():
            np.testing.assert_array_equal(bits(a), bits(arrays[name]), err_msg=name)
        # the model computes what SAELens computes with these weights
        x = rng.normal(0, 1, (7, 6)).astype(np.float32)
        np.testing.assert_allclose(m.encode(x), saelens_encode(arrays, x), rtol=1e-5, atol=1e-6)
        # the same bytes from a file
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "w.safetensors")
            with open(path, "wb") as f:
                f.write(model_file(arrays))
            m2 = Model.load(path)
            for name, a in m2.tensors().items():
                np.testing.assert_array_equal(bits(a), bits(arrays[name]))

    def test_f16(self):
        rng = np.random.default_rng(2)
        arrays = {k: v.astype(np.float16) for k, v in random_arrays(rng, 4, 8).items()}
        arrays["b_enc"][:3] = np.array([6.0e-8, -65504.0, -0.0], np.float16)  # subnormal, max
        m = Model.load_buffer(model_file(arrays, "F16"))
        for name, a in m.tensors().items():
            np.testing.assert_array_equal(bits(a), bits(arrays[name].astype(np.float32)), err_msg=name)

    def test_bf16(self):
        rng = np.random.default_rng(3)
        source = random_arrays(rng, 5, 7)
        encoded, expect = {}, {}
        for name, a in source.items():
            encoded[name], expect[name] = bf16_round(a)
        blob = st_min.pack([(n, "BF16", source[n].shape, encoded[n].astype("<u2").tobytes())
                            for n in ("W_enc", "W_dec", "b_enc", "b_dec")])
        m = Model.load_buffer(blob)
        for name, a in m.tensors().items():
            np.testing.assert_array_equal(bits(a), bits(expect[name]), err_msg=name)
            # rounding to bfloat16 keeps about 3 significant digits
            np.testing.assert_allclose(a, source[name], rtol=2 ** -8)

    def test_f64_and_metadata_and_extras(self):
        rng = np.random.default_rng(4)
        arrays = random_arrays(rng, 3, 4)
        tensors = [(n, "F64", arrays[n].shape, arrays[n].astype("<f8").tobytes())
                   for n in ("W_enc", "W_dec", "b_enc", "b_dec")]
        tensors.append(("log_feature_sparsity", "F32", (4,), st_min.f32([-1, -2, -3, -4])))
        m = Model.load_buffer(st_min.pack(tensors, {"format": "pt", "note": "\u00fcber"}))
        for name, a in m.tensors().items():
            np.testing.assert_array_equal(bits(a), bits(arrays[name]))

    def test_corrupt_files_are_refused(self):
        rng = np.random.default_rng(5)
        arrays = random_arrays(rng, 3, 4)
        good = model_file(arrays)
        self.assertIsInstance(Model.load_buffer(good), Model)
        bad_arrays = dict(arrays, b_dec=np.array([0, np.nan, 0], np.float32))
        self.assertEqual(Model.load_buffer(model_file(bad_arrays)), SAE_E_FORMAT)
        self.assertEqual(Model.load_buffer(good[:-4]), SAE_E_FORMAT)
        self.assertEqual(Model.load_buffer(good + b"\0"), SAE_E_FORMAT)
        swapped = dict(arrays, W_dec=arrays["W_dec"].T.copy())  # wrong orientation
        self.assertEqual(Model.load_buffer(model_file(swapped)), SAE_E_FORMAT)


class LibsaeWritesPythonReads(unittest.TestCase):
    def test_model_file_bit_for_bit(self):
        m, _ = trained(6, 12)
        blob = m.save_buffer()
        metadata, tensors = st_min.unpack(blob)
        self.assertEqual(metadata, {"libsae_architecture": "standard", "libsae_version": LIB.sae_version_string().decode()})
        self.assertEqual(set(tensors), {"W_enc", "W_dec", "b_enc", "b_dec"})
        (n,) = struct.unpack("<Q", blob[:8])
        self.assertEqual((8 + n) % 8, 0)
        mine = m.tensors()
        for name, (dtype, shape, raw) in tensors.items():
            self.assertEqual(dtype, "F32")
            self.assertEqual(shape, mine[name].shape)
            got = np.frombuffer(raw, "<f4").reshape(shape)
            np.testing.assert_array_equal(bits(got), bits(mine[name]), err_msg=name)
        self.assertTrue(np.any(mine["b_enc"] != 0) and np.any(mine["b_dec"] != 0))
        # evaluated the SAELens way, the file's SAE is libsae's SAE
        x = np.random.default_rng(9).normal(0, 1, (11, 6)).astype(np.float32)
        arrays = {k: np.frombuffer(v[2], "<f4").reshape(v[1]) for k, v in tensors.items()}
        np.testing.assert_allclose(m.encode(x), saelens_encode(arrays, x), rtol=1e-5, atol=1e-6)

    def test_directory_for_saelens(self):
        m, _ = trained(5, 9)
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(LIB.sae_model_save(m.h, d.encode()), SAE_OK)
            self.assertEqual(sorted(os.listdir(d)), ["cfg.json", "sae_weights.safetensors"])
            with open(os.path.join(d, "cfg.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(d, "sae_weights.safetensors"), "rb") as f:
                self.assertEqual(f.read(), m.save_buffer())
        self.assertEqual((cfg["d_in"], cfg["d_sae"]), (5, 9))
        for key, value in {"architecture": "standard", "dtype": "float32", "device": "cpu",
                           "apply_b_dec_to_input": True, "normalize_activations": "none",
                           "activation_fn_str": "relu", "finetuning_scaling_factor": False}.items():
            self.assertEqual(cfg[key], value, key)
        # SAELens 6's layout: "metadata" with its version, so that SAELens 6 reads
        # the configuration natively (SAEMetadata keeps libsae's keys)
        self.assertEqual(cfg["metadata"]["producer"], "libsae")
        self.assertEqual(cfg["metadata"]["libsae_version"], LIB.sae_version_string().decode())
        self.assertEqual(cfg["metadata"]["sae_lens_version"], "6.0.0")
        for key in ("model_name", "hook_name", "hook_head_index", "context_size", "prepend_bos",
                    "dataset_path", "model_from_pretrained_kwargs", "sae_lens_training_version"):
            self.assertIn(key, cfg["metadata"])
        # SAELens < 6 builds its SAEConfig from these keys, none with a default:
        for key in ("architecture", "d_in", "d_sae", "activation_fn_str", "apply_b_dec_to_input",
                    "finetuning_scaling_factor", "context_size", "model_name", "hook_name",
                    "hook_layer", "hook_head_index", "prepend_bos", "dataset_path",
                    "dataset_trust_remote_code", "normalize_activations", "dtype", "device",
                    "sae_lens_training_version"):
            self.assertIn(key, cfg)
        self.assertIsInstance(cfg["hook_name"], str)  # it calls hook_name.endswith("_z")
        # SAELens >= 6's own rule (handle_config_defaulting) finds it native
        self.assertTrue(sl.defaulting_is_native(cfg))

    def test_optimizer_file(self):
        m, o = trained(4, 6, steps=7)
        o.set(OPT_LR, 3e-4)
        o.set(OPT_EPS, 5e-324)  # subnormal: exact through the hexadecimal text
        o.set(OPT_CLIP, 0.0)
        blob = o.save_buffer()
        metadata, tensors = st_min.unpack(blob)
        self.assertEqual(metadata["libsae_format"], "optimizer")
        self.assertEqual(metadata["libsae_format_version"], "1")
        self.assertEqual(int(metadata["step"]), 7)
        for option in range(1, 7):
            text = metadata["option.%d" % option]
            self.assertEqual(float.fromhex(text), o.get(option))
            self.assertEqual(text, o.get(option).hex())  # Python writes the same text
        dtype, shape, raw = tensors["tokens_since_fired"]
        self.assertEqual((dtype, shape), ("U64", (6,)))
        self.assertEqual(list(struct.unpack("<6Q", raw)), o.since_fired(6))
        shapes = {"W_enc": (4, 6), "W_dec": (6, 4), "b_enc": (6,), "b_dec": (4,)}
        for name, shape in shapes.items():
            for moment in ("exp_avg", "exp_avg_sq"):
                dtype, s, raw = tensors[name + "." + moment]
                self.assertEqual((dtype, s), ("F32", shape))
                a = np.frombuffer(raw, "<f4")
                self.assertTrue(np.all(np.isfinite(a)))
                self.assertTrue(np.any(a != 0))
                if moment == "exp_avg_sq":
                    self.assertTrue(np.all(a >= 0))
        self.assertEqual(len(tensors), 9)

    def test_optimizer_written_in_python(self):
        m = Model.create(3, 5, 1)
        options = {1: 1e-3, 2: 0.5, 3: 0.75, 4: 2.5e-8, 5: 0.125, 6: 2.0}
        meta = {"libsae_format": "optimizer", "libsae_format_version": "1", "step": "42"}
        meta.update({"option.%d" % k: v.hex() for k, v in options.items()})
        rng = np.random.default_rng(6)
        tensors = [("tokens_since_fired", "U64", (5,), struct.pack("<5Q", 1, 2, 3, 4, 2 ** 50))]
        for name, shape in {"W_enc": (3, 5), "W_dec": (5, 3), "b_enc": (5,), "b_dec": (3,)}.items():
            tensors.append((name + ".exp_avg", "F32", shape,
                            rng.normal(0, 1e-3, shape).astype("<f4").tobytes()))
            tensors.append((name + ".exp_avg_sq", "F32", shape,
                            np.abs(rng.normal(0, 1e-6, shape)).astype("<f4").tobytes()))
        blob = st_min.pack(tensors, meta)
        o = Optimizer.load_buffer(m, blob)
        self.assertIsInstance(o, Optimizer)
        for k, v in options.items():
            self.assertEqual(o.get(k), v)
        self.assertEqual(LIB.sae_optimizer_steps(o.h), 42)
        self.assertEqual(o.since_fired(5), [1, 2, 3, 4, 2 ** 50])
        # libsae writes back exactly what it read
        _, back = st_min.unpack(o.save_buffer())
        for name, dtype, shape, raw in tensors:
            self.assertEqual(back[name], (dtype, shape, raw), name)
        other = Model.create(5, 3, 1)
        self.assertEqual(Optimizer.load_buffer(other, blob), SAE_E_INVALID_ARG)


def f32(x):
    return np.float32(x)


def hex_bits(values):
    """JumpReLU's libsae_log_threshold: float bit patterns, 8 hex digits each."""
    return np.asarray(values, ">f4").tobytes().hex()


class ArchitecturesPythonWritesLibsaeReads(unittest.TestCase):
    """Files for each architecture from the independent writer, as SAELens
    or libsae would write them, computing what a numpy encoder computes."""

    def setUp(self):
        rng = np.random.default_rng(11)
        self.arrays = random_arrays(rng, 6, 10)
        self.x = rng.normal(0.3, 1.0, (40, 6)).astype(np.float32)

    def tensors(self, extra=()):
        a = self.arrays
        return [(n, "F32", a[n].shape, a[n].astype("<f4").tobytes())
                for n in ("W_dec", "W_enc", "b_dec", "b_enc")] + list(extra)

    def test_topk_with_libsae_metadata(self):
        blob = st_min.pack(self.tensors(), {"libsae_architecture": "topk", "libsae_k": "3"})
        m = Model.load_buffer(blob)
        self.assertIsInstance(m, Model)
        self.assertEqual((m.arch, m.k), (TOPK, 3))
        f = m.encode(self.x)
        self.assertTrue(np.all((f > 0).sum(axis=1) <= 3))
        assert_features_equal(self, f, topk_encode(self.arrays, self.x, 3))
        self.assertEqual(Model.load_buffer(st_min.pack(self.tensors(), {
            "libsae_architecture": "topk", "libsae_k": "11"})), SAE_E_FORMAT)  # k > d_sae

    def test_topk_saelens_directory(self):
        """SAELens's TopK directory: k in cfg.json, no libsae metadata."""
        blob = st_min.pack(self.tensors())
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "sae_weights.safetensors"), "wb") as f:
                f.write(blob)
            for cfg in ({"architecture": "topk", "k": 4, "d_in": 6, "d_sae": 10,
                         "metadata": {"sae_lens_version": "6.12.1"}},
                        {"architecture": "topk", "activation_fn_str": "topk",
                         "activation_fn_kwargs": {"k": 4}}):
                with open(os.path.join(d, "cfg.json"), "w") as f:
                    json.dump(cfg, f)
                m = Model.load(d)
                self.assertIsInstance(m, Model, cfg)
                self.assertEqual((m.arch, m.k), (TOPK, 4))
                assert_features_equal(self, m.encode(self.x), topk_encode(self.arrays, self.x, 4))
            with open(os.path.join(d, "cfg.json"), "w") as f:
                json.dump({"architecture": "standard", "activation_fn_str": "topk",
                           "activation_fn_kwargs": {"k": 4}}, f)
            self.assertEqual(Model.load(d), SAE_E_FORMAT)  # SAELens 6 reads that as ReLU
            # the weights alone are a standard SAE
            m = Model.load(os.path.join(d, "sae_weights.safetensors"))
            self.assertEqual(m.arch, RELU)

    def test_jumprelu_saelens_file(self):
        theta = np.linspace(0.05, 0.6, 10).astype(np.float32)
        blob = st_min.pack(self.tensors([("threshold", "F32", (10,), theta.astype("<f4").tobytes())]))
        m = Model.load_buffer(blob)
        self.assertEqual(m.arch, JUMPRELU)
        np.testing.assert_allclose(m.tensor(THRESHOLD), theta, rtol=1e-6)
        t = dict(self.arrays, threshold=theta)
        assert_features_equal(self, m.encode(self.x), jumprelu_encode(t, self.x, theta))
        # a threshold of 0 is no JumpReLU threshold libsae can train
        theta[3] = 0.0
        blob = st_min.pack(self.tensors([("threshold", "F32", (10,), theta.astype("<f4").tobytes())]))
        self.assertEqual(Model.load_buffer(blob), SAE_E_FORMAT)

    def test_jumprelu_exact_log_thresholds(self):
        log_t = np.linspace(-0.9, 0.4, 10).astype(np.float32)  # log(exp(t)) != t in float
        theta = np.exp(log_t.astype(np.float64)).astype(np.float32)
        blob = st_min.pack(self.tensors([("threshold", "F32", (10,), theta.astype("<f4").tobytes())]),
                           {"libsae_architecture": "jumprelu", "libsae_log_threshold": hex_bits(log_t)})
        m = Model.load_buffer(blob)
        self.assertEqual(m.arch, JUMPRELU)
        # libsae writes back exactly the log thresholds it read
        metadata, _ = st_min.unpack(m.save_buffer())
        self.assertEqual(metadata["libsae_log_threshold"], hex_bits(log_t))
        t = dict(self.arrays, threshold=theta)
        assert_features_equal(self, m.encode(self.x), jumprelu_encode(t, self.x, theta))
        wrong = log_t.copy()
        wrong[2] += np.float32(0.01)
        self.assertEqual(Model.load_buffer(st_min.pack(
            self.tensors([("threshold", "F32", (10,), theta.astype("<f4").tobytes())]),
            {"libsae_architecture": "jumprelu", "libsae_log_threshold": hex_bits(wrong)})), SAE_E_FORMAT)

    def test_batchtopk(self):
        thr = f32(0.2)
        tensor = ("threshold", "F32", (10,), np.full(10, thr, "<f4").tobytes())
        meta = {"libsae_architecture": "batchtopk", "libsae_k": "2", "libsae_threshold": float(thr).hex()}
        m = Model.load_buffer(st_min.pack(self.tensors([tensor]), meta))
        self.assertEqual((m.arch, m.k), (BATCHTOPK, 2))
        self.assertEqual(m.tensor(THRESHOLD).tolist(), [thr])
        t = dict(self.arrays, threshold=np.full(10, thr))
        assert_features_equal(self, m.encode(self.x), jumprelu_encode(t, self.x, t["threshold"]))
        # unset: 0 for SAELens (ReLU), the value itself for libsae
        zero = ("threshold", "F32", (10,), np.zeros(10, "<f4").tobytes())
        m = Model.load_buffer(st_min.pack(self.tensors([zero]), dict(meta, libsae_threshold=(-1.0).hex())))
        self.assertEqual(m.tensor(THRESHOLD).tolist(), [-1.0])
        assert_features_equal(self, m.encode(self.x), saelens_encode(self.arrays, self.x))
        self.assertEqual(Model.load_buffer(st_min.pack(self.tensors([zero]), meta)), SAE_E_FORMAT)


class ArchitecturesLibsaeWritesPythonReads(unittest.TestCase):
    """libsae's files for each architecture, read back independently: bit for
    bit, the metadata and cfg.json keys SAELens and libsae need, and the
    features the file's SAE computes the SAELens way."""

    CASES = ((RELU, 0.0), (TOPK, 3.0), (BATCHTOPK, 3.0), (JUMPRELU, 0.5))

    def test_model_files(self):
        for arch, param in self.CASES:
            with self.subTest(arch=ARCH_NAMES[arch]):
                m, _ = trained_arch(arch, 6, 12, param)
                metadata, tensors = st_min.unpack(m.save_buffer())
                names = {"W_enc", "W_dec", "b_enc", "b_dec"}
                if arch in (JUMPRELU, BATCHTOPK):
                    names.add("threshold")
                self.assertEqual(set(tensors), names)
                mine = m.tensors()
                arrays = {}
                for name, (dtype, shape, raw) in tensors.items():
                    self.assertEqual(dtype, "F32")
                    arrays[name] = np.frombuffer(raw, "<f4").reshape(shape)
                    if name != "threshold":
                        np.testing.assert_array_equal(bits(arrays[name]), bits(mine[name]))
                self.assertEqual(metadata["libsae_architecture"], ARCH_NAMES[arch])
                self.assertEqual(metadata["libsae_version"], LIB.sae_version_string().decode())
                if arch in (TOPK, BATCHTOPK):
                    self.assertEqual(int(metadata["libsae_k"]), 3)
                else:
                    self.assertNotIn("libsae_k", metadata)
                thr = m.tensor(THRESHOLD) if arch in (JUMPRELU, BATCHTOPK) else None
                if arch == JUMPRELU:
                    np.testing.assert_array_equal(bits(arrays["threshold"]), bits(thr))
                    log_t = np.frombuffer(bytes.fromhex(metadata["libsae_log_threshold"]), ">f4")
                    self.assertEqual(log_t.shape, (12,))
                    np.testing.assert_allclose(np.exp(log_t.astype(np.float64)), thr, rtol=2 ** -20)
                    self.assertTrue(np.any(log_t != np.float32(np.log(0.5))))  # trained
                elif arch == BATCHTOPK:
                    self.assertEqual(thr.shape, (1,))
                    self.assertGreater(thr[0], 0)  # set by training
                    np.testing.assert_array_equal(arrays["threshold"], np.full(12, thr[0]))
                    self.assertEqual(float.fromhex(metadata["libsae_threshold"]), float(thr[0]))
                else:
                    self.assertNotIn("libsae_threshold", metadata)
                    self.assertNotIn("libsae_log_threshold", metadata)
                # evaluated from the file alone, as SAELens would
                x = np.random.default_rng(9).normal(0.2, 3.0, (50, 6)).astype(np.float32)
                assert_features_equal(self, m.encode(x), encode_as_saelens(arch, arrays, x, k=3))

    def test_cfg_json(self):
        for arch, param in self.CASES:
            with self.subTest(arch=ARCH_NAMES[arch]):
                m, _ = trained_arch(arch, 5, 9, param)
                with tempfile.TemporaryDirectory() as d:
                    self.assertEqual(LIB.sae_model_save(m.h, d.encode()), SAE_OK)
                    with open(os.path.join(d, "cfg.json")) as f:
                        cfg = json.load(f)
                    back = Model.load(d)
                    self.assertEqual((back.arch, back.k), (arch, m.k))
                self.assertEqual((cfg["d_in"], cfg["d_sae"]), (5, 9))
                self.assertEqual(cfg["apply_b_dec_to_input"], True)
                self.assertEqual(cfg["normalize_activations"], "none")
                if arch == TOPK:
                    # SAELens 6: TopKSAEConfig's architecture and k
                    self.assertEqual(cfg["architecture"], "topk")
                    self.assertEqual(cfg["k"], 3)
                    self.assertIs(cfg["rescale_acts_by_decoder_norm"], False)
                    # before 6.0, and 6.x's conversion of such configurations
                    self.assertEqual(cfg["activation_fn_str"], "topk")
                    self.assertEqual(cfg["activation_fn_kwargs"], {"k": 3})
                else:
                    # BatchTopK is saved for inference as JumpReLU, as SAELens does
                    self.assertEqual(cfg["architecture"],
                                     {RELU: "standard", BATCHTOPK: "jumprelu", JUMPRELU: "jumprelu"}[arch])
                    self.assertEqual(cfg["activation_fn_str"], "relu")
                    self.assertEqual(cfg["activation_fn_kwargs"], {})
                    self.assertNotIn("k", cfg)
                for key in ("architecture", "d_in", "d_sae", "activation_fn_str", "apply_b_dec_to_input",
                            "finetuning_scaling_factor", "context_size", "model_name", "hook_name",
                            "hook_layer", "hook_head_index", "prepend_bos", "dataset_path",
                            "dataset_trust_remote_code", "normalize_activations", "dtype", "device",
                            "sae_lens_training_version"):
                    self.assertIn(key, cfg)
                self.assertTrue(sl.defaulting_is_native(cfg))

    def test_jumprelu_optimizer_file(self):
        m, o = trained_arch(JUMPRELU, 4, 6, 0.5, steps=5)
        o.set(OPT_AUXK_K, 2.0)
        o.set(OPT_THRESHOLD_BETA, 0.5)
        metadata, tensors = st_min.unpack(o.save_buffer())
        self.assertEqual(len(tensors), 11)
        for moment in ("exp_avg", "exp_avg_sq"):
            dtype, shape, raw = tensors["log_threshold." + moment]
            self.assertEqual((dtype, shape), ("F32", (6,)))
            a = np.frombuffer(raw, "<f4")
            self.assertTrue(np.all(np.isfinite(a)) and np.any(a != 0))
        for option in (OPT_AUXK_COEFF, OPT_AUXK_K, OPT_DEAD_WINDOW, OPT_BANDWIDTH, OPT_THRESHOLD_BETA):
            self.assertEqual(metadata["option.%d" % option], o.get(option).hex())
        # another layout's model: the shape does not fit
        relu = Model.create(4, 6, 1)
        self.assertEqual(Optimizer.load_buffer(relu, o.save_buffer()), SAE_E_INVALID_ARG)
        self.assertIsInstance(Optimizer.load_buffer(m, o.save_buffer()), Optimizer)


@unittest.skipIf(torch is None, "torch is not importable")
class TorchTensors(unittest.TestCase):
    def test_torch_float32_and_bfloat16(self):
        g = torch.Generator().manual_seed(0)
        d_in, d_sae = 8, 16
        state = {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.2,
                 "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.2,
                 "b_enc": torch.randn(d_sae, generator=g) * 0.05,
                 "b_dec": torch.randn(d_in, generator=g) * 0.05}
        # float32: the tensors' own bytes, as safetensors.torch.save_file stores them
        blob = st_min.pack([(n, "F32", tuple(t.shape), t.contiguous().numpy().tobytes())
                            for n, t in sorted(state.items())])
        m = Model.load_buffer(blob)
        for name, a in m.tensors().items():
            self.assertTrue(torch.equal(torch.from_numpy(a), state[name]), name)
        # SAELens's forward in torch agrees with sae_encode
        x = torch.randn(5, d_in, generator=g)
        ref = torch.relu((x - state["b_dec"]) @ state["W_enc"] + state["b_enc"])
        np.testing.assert_allclose(m.encode(x.numpy()), ref.numpy(), rtol=1e-5, atol=1e-6)
        # bfloat16: torch's own rounding, its raw 16-bit patterns
        bf = {k: v.to(torch.bfloat16) for k, v in state.items()}
        blob = st_min.pack([(n, "BF16", tuple(t.shape), t.view(torch.int16).numpy().tobytes())
                            for n, t in sorted(bf.items())])
        m = Model.load_buffer(blob)
        for name, a in m.tensors().items():
            self.assertTrue(torch.equal(torch.from_numpy(a), bf[name].float()), name)
        # float16 likewise
        half = {k: v.half() for k, v in state.items()}
        blob = st_min.pack([(n, "F16", tuple(t.shape), t.numpy().tobytes())
                            for n, t in sorted(half.items())])
        m = Model.load_buffer(blob)
        for name, a in m.tensors().items():
            self.assertTrue(torch.equal(torch.from_numpy(a), half[name].float()), name)

    def test_saelens_forward_per_architecture(self):
        """libsae's files through SAELens's forward passes, in torch: TopK
        (torch.topk of the pre-activations, then ReLU) and JumpReLU (ReLU
        masked by pre > threshold), against sae_encode."""
        for arch, param in ArchitecturesLibsaeWritesPythonReads.CASES:
            with self.subTest(arch=ARCH_NAMES[arch]):
                m, _ = trained_arch(arch, 6, 12, param)
                _, tensors = st_min.unpack(m.save_buffer())
                s = {k: torch.frombuffer(bytearray(v[2]), dtype=torch.float32).reshape(v[1])
                     for k, v in tensors.items()}
                x = torch.from_numpy(np.random.default_rng(5).normal(0.2, 3.0, (30, 6)).astype(np.float32))
                pre = (x - s["b_dec"]) @ s["W_enc"] + s["b_enc"]
                if arch == TOPK:
                    top = torch.topk(pre, k=3, dim=-1)
                    ref = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
                elif arch in (JUMPRELU, BATCHTOPK):
                    ref = pre.relu() * (pre > s["threshold"])
                else:
                    ref = pre.relu()
                np.testing.assert_allclose(m.encode(x.numpy()), ref.numpy(), rtol=1e-5, atol=1e-5)

    def test_libsae_file_into_torch(self):
        m, _ = trained(6, 10)
        _, tensors = st_min.unpack(m.save_buffer())
        state = {k: torch.frombuffer(bytearray(v[2]), dtype=torch.float32).reshape(v[1])
                 for k, v in tensors.items()}
        mine = m.tensors()
        for name, t in state.items():
            self.assertTrue(torch.equal(t, torch.from_numpy(mine[name])), name)


if __name__ == "__main__":
    print("libsae:", capi.library_path, "| numpy", np.__version__,
          "| torch", torch.__version__ if torch else "not importable (its tests are skipped)")
    unittest.main(verbosity=2)
