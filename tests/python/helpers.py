"""Helpers of the package's tests (one copy each)."""
import numpy as np
import pytest

import libsae

try:
    import torch
except ImportError:  # python3-torch is optional
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (python3-torch)")


def data(rng, n, d, scale=1.0):
    return (scale * rng.standard_normal((n, d))).astype(np.float32)


def random_model(d_in=12, d_sae=40, seed=5, **arch):
    """A model with non-trivial biases, so every term of the forward runs."""
    rng = np.random.default_rng(seed)
    m = libsae.Model(d_in, d_sae, seed=seed, **arch)
    m.b_enc = (0.05 * rng.standard_normal(d_sae)).astype(np.float32)
    m.b_dec = (0.1 * rng.standard_normal(d_in)).astype(np.float32)
    return m


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def snapshot(model, opt=None):
    """Every byte of a model (and optimizer): to check an error changed nothing."""
    return model.to_bytes() + (opt.to_bytes() if opt is not None else b"")


def synthetic(n=8192, d_in=16, n_true=32, seed=0, active=2.5, d_out=None):
    """Tokens that are sparse positive mixes of n_true unit directions: x and
    the directions (n_true, d_in). With d_out, also each token's target, the
    same mix of n_true other unit directions of d_out values (a sparse linear
    map from x to y, as transcoders learn): x, y and the target directions."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((n_true, d_in))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    codes = (rng.random((n, n_true)) < active / n_true) * rng.uniform(0.5, 1.5, (n, n_true))
    x = (codes @ truth).astype(np.float32)
    if d_out is None:
        return x, truth
    truth_out = rng.standard_normal((n_true, d_out))
    truth_out /= np.linalg.norm(truth_out, axis=1, keepdims=True)
    return x, (codes @ truth_out).astype(np.float32), truth_out


def mmcs(truth, w_dec):
    """Mean over the true directions of the best cosine with a decoder row."""
    cos = truth @ (w_dec / np.linalg.norm(w_dec, axis=1, keepdims=True)).T
    return cos.max(axis=1).mean()
