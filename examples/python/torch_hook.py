#!/usr/bin/python3
"""Train an SAE on a PyTorch model's residual stream while the model runs.

A forward hook copies the residual stream after one transformer block; a
generator runs the model on batch after batch of token sequences and yields
those activations; libsae.train consumes them as they stream, never holding
more than a few batches in memory.

The transformer here is small and RANDOMLY INITIALISED: no pretrained weights
can be downloaded in this environment. With a real model (say
transformers' GPT-2: `model.transformer.h[6]`), hook the block you study and
feed it your corpus; nothing else changes.

    LIBSAE_PATH=build/libsae.so.0 PYTHONPATH=python /usr/bin/python3 examples/python/torch_hook.py
    (options: --steps N, --layer L, --d-sae N, --k K)

Needs torch (Debian: python3-torch); tqdm draws the progress bar if installed.
"""
import argparse
import sys

import numpy as np

import libsae

try:
    import torch
except ImportError:
    print("torch is not installed (Debian: python3-torch)", file=sys.stderr)
    sys.exit(77)  # CTest: skipped


class TinyLM(torch.nn.Module):
    """A 4-layer pre-norm transformer language model, random weights."""

    def __init__(self, vocab=512, d_model=128, n_layers=4, n_heads=4, context=64):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.pos = torch.nn.Parameter(0.02 * torch.randn(context, d_model))
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0,
                                             batch_first=True, norm_first=True)
            for _ in range(n_layers))
        self.unembed = torch.nn.Linear(d_model, vocab)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        causal = torch.nn.Transformer.generate_square_subsequent_mask(tokens.shape[1])
        for block in self.blocks:
            h = block(h, src_mask=causal)
        return self.unembed(h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--k", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    lm = TinyLM().eval()

    # The hook keeps the block's output: (batch, seq, d_model) residual stream.
    captured = {}
    lm.blocks[args.layer].register_forward_hook(
        lambda module, inputs, output: captured.__setitem__("resid", output))

    # Token sequences with some structure for the model to respond to: a
    # random walk over the vocabulary (a stand-in for a corpus).
    gen = torch.Generator().manual_seed(1)

    def sequences(batch=16, context=64):
        steps = torch.randint(-3, 4, (batch, context), generator=gen)
        return (torch.randint(0, 512, (batch, 1), generator=gen) + steps.cumsum(1)) % 512

    def activations():
        """Forever: run the model, yield its residual stream as (tokens, d_model)."""
        with torch.no_grad():
            while True:
                lm(sequences())
                yield captured["resid"].reshape(-1, 128).contiguous()  # float32 CPU: no copy

    result = libsae.train(activations(), d_sae=args.d_sae, arch="topk", k=args.k,
                          steps=args.steps, batch_size=1024, normalize=True,
                          lr=2e-3, lr_schedule="linear", lr_decay_fraction=0.2,
                          log_every=max(args.steps // 4, 1))
    sae = result.model                      # takes the raw residual stream (scale folded in)

    # Held-out activations: reconstruction, feature density, and the SAE in torch.
    held_out = np.concatenate([next(activations()).numpy() for _ in range(4)])
    counts = sae.feature_fire_counts(held_out)
    density = counts / len(held_out)
    print(f"held out: fvu {sae.fvu(held_out):.3f}, L0 {np.mean(np.sum(sae.encode(held_out) > 0, 1)):.1f}"
          f" of {sae.d_sae}, {np.sum(counts == 0)} features never fired, "
          f"busiest fires on {density.max():.1%} of tokens")

    # Splice the reconstruction back into the model: how much does the output change?
    sae_torch = sae.to_torch()
    with torch.no_grad():
        tokens = sequences()
        clean = lm(tokens).log_softmax(-1)
        splice = lm.blocks[args.layer].register_forward_hook(
            lambda module, inputs, output: sae_torch(output))   # the output replaced
        spliced = lm(tokens).log_softmax(-1)
        splice.remove()
    kl = torch.nn.functional.kl_div(spliced, clean, log_target=True, reduction="batchmean")
    print(f"next-token KL(clean || with the SAE spliced in): {kl.item() / tokens.shape[1]:.4f} nats/token")
    return 0 if result.steps == args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
