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
