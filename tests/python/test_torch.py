"""Model.to_torch(): the torch module computes what the library computes."""
import numpy as np
import pytest

import libsae
from helpers import data, needs_torch, random_model, torch

pytestmark = needs_torch


def trained(arch, **kw):
    m = random_model(d_in=10, d_sae=48, arch=arch, **kw)
    opt = libsae.Optimizer(m, lr=1e-2, dead_window=64, jumprelu_bandwidth=0.5)
    rng = np.random.default_rng(2)
    for _ in range(4):
        opt.step(m, data(rng, 64, 10, scale=2.0))
    return m


@pytest.mark.parametrize("arch, kw", [("relu", {}), ("topk", {"k": 5}), ("batchtopk", {"k": 5}),
                                      ("jumprelu", {"threshold": 0.05})])
def test_same_outputs_as_the_library(rng, arch, kw):
    m = trained(arch, **kw)
    sae = m.to_torch()
    x = data(rng, 100, 10, scale=2.0)
    with torch.no_grad():
        f = sae.encode(torch.from_numpy(x))
        x_hat = sae(torch.from_numpy(x))
    f_lib = m.encode(x)
    np.testing.assert_allclose(f.numpy(), f_lib, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_hat.numpy(), m.decode(f_lib), rtol=1e-4, atol=1e-5)
    assert (sae.d_in, sae.d_sae, sae.arch) == (10, 48, libsae.Arch[arch.upper()])
    assert arch in repr(sae)


def test_a_module_of_copies_with_parameters():
    m = random_model()
    sae = m.to_torch()
    names = dict(sae.named_parameters())
    assert set(names) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert torch.equal(names["W_dec"].detach(), torch.from_numpy(m.W_dec))
    with torch.no_grad():
        names["b_dec"].add_(1.0)  # a copy: the library's model is untouched
    assert not np.allclose(m.b_dec, names["b_dec"].detach().numpy())
    x = torch.randn(4, m.d_in)
    sae(x).pow(2).sum().backward()  # gradients flow, for fine-tuning in torch
    assert names["W_enc"].grad is not None
    state = sae.state_dict()
    assert set(state) == {"W_enc", "b_enc", "W_dec", "b_dec"}
