#!/usr/bin/python3
"""Train a small SAE from Python through the libsae package, step by step,
and look at what it learned.

    LIBSAE_PATH=build/libsae.so.0 PYTHONPATH=python /usr/bin/python3 examples/python/demo.py

(After `cmake --install`, plain `python3 demo.py`.)
"""
import sys

import numpy as np

import libsae


def main():
    rng = np.random.default_rng(0)
    d_in, n_true, d_sae = 32, 64, 256
    # Ground truth: n_true random unit directions; each token mixes about 3 of
    # them with coefficients in (0, 1).
    truth = rng.standard_normal((n_true, d_in)).astype(np.float32)
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)

    def tokens(n):
        active = rng.random((n, n_true)) < 3.0 / n_true
        return (active * rng.random((n, n_true))).astype(np.float32) @ truth

    print("libsae", libsae.version(), "from", libsae.library_path())
    with libsae.Model(d_in, d_sae, seed=1) as model, \
            libsae.Optimizer(model, lr=2e-3, l1_coeff=0.1) as opt:
        for step in range(1, 1501):
            losses = opt.step(model, tokens(256))    # float32 (n, d_in): passed without a copy
            if step % 500 == 0:
                print(f"step {step}: loss {losses.loss:.4f}  l2 {losses.l2:.4f}  "
                      f"l1 {losses.l1:.4f}  l0 {losses.l0:.1f}")

        x = tokens(4096)
        f = model.encode(x)
        print(f"held out: fvu {model.fvu(x):.4f}, {np.mean(f > 0, axis=0).max():.1%} of tokens "
              f"fire the busiest feature, {opt.dead_count(20000)} of {d_sae} features dead")

        # The weights come back as arrays: how well do decoder rows match the
        # truth? Each true direction's best cosine with a decoder row; their
        # mean is the mean max cosine similarity (MMCS).
        cos, row = libsae.max_cosine(truth, model.W_dec)
        print(f"mean max cosine with the true directions: {cos.mean():.3f} "
              f"(direction 0: feature {row[0]}, cosine {cos[0]:.3f})")

        # Errors are exceptions carrying the status and the library's message.
        try:
            opt.set("l1_coeff", float("nan"))
        except libsae.NonFiniteError as e:
            print(f"{type(e).__name__} (status {e.status.name}): {e}")
        return 0 if cos.mean() > 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
