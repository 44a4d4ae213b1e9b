"""An independent float64 implementation of what libsae computes, straight
from the definitions in sae.h (and as SAELens computes it), for the Python
tests to check the library's numbers against. Tensors are a dict of SAELens
names: W_enc (d_in, d_sae), b_enc, W_dec (d_sae, d_in), b_dec, threshold.
"""
import numpy as np

RELU, TOPK, BATCHTOPK, JUMPRELU = 0, 1, 2, 3  # sae.h's enum sae_arch


def pre_activations(t, x):
    x = np.asarray(x, np.float64)
    return (x - t["b_dec"].astype(np.float64)) @ t["W_enc"].astype(np.float64) \
        + t["b_enc"].astype(np.float64)


def saelens_encode(t, x):
    """SAELens's standard SAE forward (apply_b_dec_to_input = True)."""
    return np.maximum(pre_activations(t, x), 0.0)


def topk_encode(t, x, k):
    """TopK: the k largest values of ReLU(pre) per token, the rest 0."""
    f = np.maximum(pre_activations(t, x), 0.0)
    keep = np.argsort(-f, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(f)
    np.put_along_axis(out, keep, np.take_along_axis(f, keep, axis=1), axis=1)
    return out


def jumprelu_encode(t, x, threshold):
    """JumpReLU (and BatchTopK at inference): pre where pre > threshold."""
    pre = pre_activations(t, x)
    return pre * (pre > np.asarray(threshold, np.float64))


def encode_as_saelens(arch, t, x, k=None):
    if arch == TOPK:
        return topk_encode(t, x, k)
    if arch in (JUMPRELU, BATCHTOPK):
        return jumprelu_encode(t, x, t["threshold"])
    return saelens_encode(t, x)


def decode(t, f):
    return np.asarray(f, np.float64) @ t["W_dec"].astype(np.float64) + t["b_dec"].astype(np.float64)


def losses(t, x, l1_coeff, arch=RELU, k=None):
    """(loss, l2, l1, l0) of sae_loss for ReLU (loss = l2 + lambda l1)."""
    f = encode_as_saelens(arch, t, x, k)
    x = np.asarray(x, np.float64)
    l2 = np.mean(np.sum((decode(t, f) - x) ** 2, axis=1))
    l1 = np.mean(f @ np.linalg.norm(t["W_dec"].astype(np.float64), axis=1))
    l0 = np.mean(np.sum(f > 0, axis=1))
    return l2 + l1_coeff * l1, l2, l1, l0
