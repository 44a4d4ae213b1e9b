"""Model.to_torch(): an equivalent torch.nn.Module for inference (needs
torch; Debian: python3-torch). It computes what sae_encode and sae_decode
compute, in torch, from a copy of the model's tensors:

    sae = model.to_torch()            # W_enc, b_enc, W_dec, b_dec as Parameters
    f = sae.encode(x)                 # x: (..., d_in) float32 tensor
    x_hat = sae.decode(f)             # = sae(x)
"""

from __future__ import annotations

from typing import Any

from .enums import Arch


def to_torch(model: Any) -> Any:
    """The model as a torch.nn.Module (see the module's documentation)."""
    import torch

    class SparseAutoencoder(torch.nn.Module):
        """libsae's SAE in torch: f = act((x - b_dec) W_enc + b_enc),
        x_hat = f W_dec + b_dec, with the architecture's inference activation
        (ReLU; TopK keeping the k largest, ties in feature order; BatchTopK and
        JumpReLU: pre where pre > threshold)."""

        def __init__(self, tensors: dict, arch: Arch, k: int) -> None:
            super().__init__()
            self.arch, self.k = Arch(arch), int(k)
            self.d_in, self.d_sae = tensors["W_enc"].shape
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                setattr(self, name, torch.nn.Parameter(torch.from_numpy(tensors[name])))
            if "threshold" in tensors:
                self.register_buffer("threshold", torch.from_numpy(tensors["threshold"]))
            else:
                self.threshold = None

        def encode(self, x: Any) -> Any:
            pre = (x - self.b_dec) @ self.W_enc + self.b_enc
            if self.arch == Arch.TOPK:
                v = torch.relu(pre)
                kth = v.topk(self.k, dim=-1).values[..., -1:]
                greater, tied = v > kth, v == kth
                need = self.k - greater.sum(dim=-1, keepdim=True)
                keep = greater | (tied & (tied.cumsum(dim=-1) <= need))
                return torch.where(keep, v, torch.zeros_like(v))
            if self.arch == Arch.BATCHTOPK and float(self.threshold[0]) < 0:  # type: ignore[index]
                return torch.relu(pre)  # no threshold yet: ReLU
            if self.arch in (Arch.BATCHTOPK, Arch.JUMPRELU):
                return torch.where(pre > self.threshold, pre, torch.zeros_like(pre))
            return torch.relu(pre)

        def decode(self, f: Any) -> Any:
            return f @ self.W_dec + self.b_dec

        def forward(self, x: Any) -> Any:
            return self.decode(self.encode(x))

        def extra_repr(self) -> str:
            k = f", k={self.k}" if self.k else ""
            return f"d_in={self.d_in}, d_sae={self.d_sae}, arch={self.arch.name.lower()}{k}"

    return SparseAutoencoder(model.tensors(), model.arch, model.k)
