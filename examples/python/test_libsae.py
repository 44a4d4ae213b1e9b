#!/usr/bin/python3
"""Tests of libsae.py against a numpy float64 implementation of the SAE.

Run with LIBSAE_PATH pointing at libsae.so. Exits 77 (CTest: skipped) when
numpy is missing.
"""
import json
import os
import struct
import sys
import tempfile
import unittest

try:
    import numpy as np
except ImportError:
    print("numpy is missing (Debian: python3-numpy): skipping the Python tests")
    sys.exit(77)

import libsae


def reference(w, x, lam):
    """Features and losses in float64, straight from the definitions in sae.h."""
    x = x.astype(np.float64)
    f = np.maximum((x - w["b_dec"]) @ w["W_enc"].astype(np.float64) + w["b_enc"], 0.0)
    x_hat = f @ w["W_dec"].astype(np.float64) + w["b_dec"]
    l2 = np.mean(np.sum((x_hat - x) ** 2, axis=1))
    l1 = np.mean(f @ np.linalg.norm(w["W_dec"].astype(np.float64), axis=1))
    l0 = np.mean(np.sum(f > 0, axis=1))
    return f, x_hat, libsae.Losses(l2 + lam * l1, l2, l1, l0)


def read_safetensors(path):
    """The tensors of a safetensors file, read independently of libsae."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        dtype = {"F32": "<f4", "U64": "<u8"}[t["dtype"]]
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(t["shape"])
    return out


class LibsaeTest(unittest.TestCase):
    d_in, d_sae = 12, 40

    def setUp(self):
        self.rng = np.random.default_rng(3)
        self.model = libsae.Model(self.d_in, self.d_sae, seed=5)
        # Non-trivial biases so every term of the forward pass is exercised.
        self.model.set(libsae.B_ENC, 0.05 * self.rng.standard_normal(self.d_sae))
        self.model.set(libsae.B_DEC, 0.1 * self.rng.standard_normal(self.d_in))
        self.x = self.rng.standard_normal((64, self.d_in)).astype(np.float32)

    def tearDown(self):
        self.model.close()

    def test_shapes_and_roundtrip(self):
        w = self.model.weights()
        self.assertEqual(w["W_enc"].shape, (self.d_in, self.d_sae))
        self.assertEqual(w["W_dec"].shape, (self.d_sae, self.d_in))
        self.assertEqual(w["b_enc"].shape, (self.d_sae,))
        self.assertEqual(w["b_dec"].shape, (self.d_in,))
        # the documented init: decoder rows of norm 0.1, W_enc = W_dec^T
        np.testing.assert_allclose(np.linalg.norm(w["W_dec"], axis=1), 0.1, rtol=1e-5)
        np.testing.assert_array_equal(w["W_enc"], w["W_dec"].T)
        new = self.rng.standard_normal((self.d_in, self.d_sae)).astype(np.float32)
        self.model.set(libsae.W_ENC, new)
        np.testing.assert_array_equal(self.model.get(libsae.W_ENC), new)

    def test_encode_decode_loss_match_numpy(self):
        f_ref, x_hat_ref, l_ref = reference(self.model.weights(), self.x, 0.7)
        f = self.model.encode(self.x)
        np.testing.assert_allclose(f, f_ref, atol=1e-5)
        np.testing.assert_allclose(self.model.decode(f), x_hat_ref, atol=1e-5)
        l = self.model.loss(self.x, 0.7)
        for name in ("loss", "l2", "l1", "l0"):
            self.assertAlmostEqual(getattr(l, name), getattr(l_ref, name), delta=1e-4 * (1 + abs(getattr(l_ref, name))))
        x64 = self.x.astype(np.float64)
        fvu_ref = np.sum((x_hat_ref - x64) ** 2) / np.sum((x64 - x64.mean(axis=0)) ** 2)
        self.assertAlmostEqual(self.model.fvu(self.x), fvu_ref, delta=1e-5)

    def test_training_lowers_the_loss(self):
        truth = self.rng.standard_normal((20, self.d_in)).astype(np.float32)
        data = ((self.rng.random((4096, 20)) < 0.1) * self.rng.random((4096, 20))).astype(np.float32) @ truth
        with libsae.Optimizer(self.model, lr=3e-3, l1_coeff=0.05) as opt:
            self.assertEqual(opt.get(libsae.OPT_LR), 3e-3)
            before = self.model.loss(data, 0.05)
            for step in range(300):
                batch = data[(step * 128) % 4096:][:128]
                l = opt.step(self.model, batch)
            self.assertEqual(opt.steps, 300)
            after = self.model.loss(data, 0.05)
            self.assertLess(after.loss, 0.3 * before.loss)
            since = opt.tokens_since_fired()
            self.assertEqual(since.shape, (self.d_sae,))
            self.assertEqual(opt.dead_count(1), int(np.sum(since >= 1)))
            self.assertTrue(np.isfinite(l.loss))

    def test_save_load_resumes_bit_for_bit(self):
        opt = libsae.Optimizer(self.model, lr=2e-3, l1_coeff=0.2)
        for _ in range(3):
            opt.step(self.model, self.x)
        with tempfile.TemporaryDirectory() as d:
            self.model.save(d)
            opt.save(d)
            self.assertEqual(sorted(os.listdir(d)),
                             ["cfg.json", "optimizer.safetensors", "sae_weights.safetensors"])
            cfg = json.load(open(os.path.join(d, "cfg.json")))
            self.assertEqual((cfg["d_in"], cfg["d_sae"]), (self.d_in, self.d_sae))
            # SAELens's names and layout, read without libsae
            on_disk = read_safetensors(os.path.join(d, "sae_weights.safetensors"))
            for name, value in self.model.weights().items():
                np.testing.assert_array_equal(on_disk[name], value)
            model2 = libsae.Model.load(d)
            opt2 = libsae.Optimizer.load(model2, d)
        self.assertEqual(opt2.steps, 3)
        self.assertEqual(opt2.get(libsae.OPT_LR), 2e-3)
        self.assertEqual(opt2.get(libsae.OPT_L1_COEFF), 0.2)
        np.testing.assert_array_equal(opt2.tokens_since_fired(), opt.tokens_since_fired())
        # training on from the loaded pair gives the same bits as from the original
        for _ in range(3):
            self.assertEqual(opt.step(self.model, self.x), opt2.step(model2, self.x))
        for name, value in self.model.weights().items():
            np.testing.assert_array_equal(model2.weights()[name], value)
        for handle in (opt, opt2, model2):
            handle.close()

    def test_load_errors(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(libsae.SAEError) as cm:
                libsae.Model.load(os.path.join(d, "missing"))
            self.assertEqual(cm.exception.status, libsae.E_IO)
            path = os.path.join(d, "m.safetensors")
            self.model.save(path)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) - 1)
            with self.assertRaises(libsae.SAEError) as cm:
                libsae.Model.load(path)
            self.assertEqual(cm.exception.status, libsae.E_FORMAT)
            self.assertIn("sae_model_load: malformed", str(cm.exception))
            other = libsae.Model(self.d_in, self.d_sae + 1)
            opt = libsae.Optimizer(other)
            opt.save(os.path.join(d, "o.safetensors"))
            with self.assertRaises(libsae.SAEError) as cm:  # made for another shape
                libsae.Optimizer.load(self.model, os.path.join(d, "o.safetensors"))
            self.assertEqual(cm.exception.status, libsae.E_INVALID_ARG)
            opt.close()
            other.close()

    def test_errors_raise_with_the_status_string(self):
        with libsae.Optimizer(self.model) as opt:
            with self.assertRaises(libsae.SAEError) as cm:
                opt.set(libsae.OPT_LR, -1.0)
            self.assertEqual(cm.exception.status, libsae.E_INVALID_ARG)
            self.assertIn(libsae.status_string(libsae.E_INVALID_ARG), str(cm.exception))
            self.assertEqual(opt.get(libsae.OPT_LR), 5e-5)  # unchanged

            before = self.model.weights()
            bad = self.x.copy()
            bad[3, 4] = np.nan
            with self.assertRaises(libsae.SAEError) as cm:
                opt.step(self.model, bad)
            self.assertEqual(cm.exception.status, libsae.E_NONFINITE)
            self.assertIn("non-finite", str(cm.exception))
            for name, value in self.model.weights().items():
                np.testing.assert_array_equal(value, before[name])  # model untouched
            self.assertEqual(opt.steps, 0)

        with self.assertRaises(libsae.SAEError) as cm:
            libsae.Model(0, 4)
        self.assertEqual(cm.exception.status, libsae.E_INVALID_ARG)
        with self.assertRaises(ValueError):
            self.model.encode(np.zeros((3, self.d_in + 1), dtype=np.float32))


if __name__ == "__main__":
    unittest.main()
