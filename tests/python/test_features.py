"""libsae.encode_sparse, libsae.FeatureStats, libsae.decoder_neighbors and libsae.max_cosine:
the numbers against numpy computations from Model.encode's dense features,
merging, saving, pickling and errors."""
import pickle

import numpy as np
import pytest

import libsae
from helpers import data, random_model


def test_sparse_codes_are_the_dense_features(rng):
    m = random_model(12, 40, arch="jumprelu", threshold=0.02)
    x = data(rng, 70, 12)
    f = m.encode(x)
    codes = libsae.encode_sparse(m, x)
    assert codes.n_tokens == 70 and codes.offsets.dtype == np.uintp
    assert codes.features.dtype == np.uint32 and codes.values.dtype == np.float32
    assert np.array_equal(codes.to_dense(40), f)  # bit for bit
    t, i = np.nonzero(f > 0)
    assert np.array_equal(codes.features, i) and np.array_equal(codes.offsets[1:],
                                                                np.cumsum(np.bincount(t, minlength=70)))
    feats, vals = codes.row(3)
    assert np.array_equal(feats, np.nonzero(f[3] > 0)[0]) and np.array_equal(vals, f[3][f[3] > 0])
    # a cap: each row's 3 largest values, ties to the lower feature
    capped = libsae.encode_sparse(m, x, max_per_token=3)
    for t in range(70):
        order = sorted(np.nonzero(f[t] > 0)[0], key=lambda i: (-f[t, i], i))[:3]
        got, vals = capped.row(t)
        assert list(got) == sorted(order) and np.array_equal(vals, f[t, sorted(order)])
    with pytest.raises(ValueError, match="shape"):
        libsae.encode_sparse(m, np.ascontiguousarray(x[:, :5]))
    with pytest.raises(libsae.NonFiniteError):
        libsae.encode_sparse(m, np.full((2, 12), np.nan, dtype=np.float32))


def reference_stats(f, first_row, top_n):
    """Per feature: count, sum, sum of squares, max and the top rows, in
    float64 from the dense features f (rows first_row..)."""
    out = []
    for i in range(f.shape[1]):
        t = np.nonzero(f[:, i] > 0)[0]
        v = f[t, i].astype(np.float64)
        order = sorted(range(len(t)), key=lambda k: (-v[k], t[k]))[:top_n]
        out.append((len(t), v.sum(), (v * v).sum(), v.max() if len(t) else 0.0,
                    [first_row + t[k] for k in order]))
    return out


def test_statistics_against_numpy(rng):
    m = random_model(10, 30)
    x = data(rng, 200, 10)
    with libsae.FeatureStats(30, top_n=4, bins=12, log10_range=(-3, 1)) as s:
        s.add(m, x[:120])
        s.add(m, x[120:])
        f = np.concatenate([m.encode(x[:120]), m.encode(x[120:])])
        assert (s.d_sae, s.top_n, s.bins, s.rows, s.next_row) == (30, 4, 12, 200, 200)
        counts, (sums, sumsq), mx = s.counts(), s.sums(), s.max()
        for i, (c, s1, s2, vmax, top) in enumerate(reference_stats(f, 0, 4)):
            assert counts[i] == c
            assert sums[i] == pytest.approx(s1, rel=1e-12) and sumsq[i] == pytest.approx(s2, rel=1e-12)
            assert mx[i] == np.float32(vmax)
            rows, vals = s.top(i)
            assert list(rows) == top and np.array_equal(vals, f[top, i])
        edges = s.bin_edges()
        assert np.allclose(edges, 10.0 ** np.linspace(-3, 1, 13), rtol=1e-14)
        hist = s.histogram()
        assert hist.shape == (30, 12) and np.array_equal(hist.sum(axis=1), counts)
        assert np.allclose(s.density(), counts / 200) and s.mean()[counts == 0].sum() == 0
        # the same rows from their sparse codes, in another accumulator
        with libsae.FeatureStats(30, top_n=4, bins=12, log10_range=(-3, 1)) as t:
            t.add_sparse(libsae.encode_sparse(m, x[:120]))
            t.add_sparse(libsae.encode_sparse(m, x[120:]))
            assert t.to_bytes() == s.to_bytes()


def test_merge_save_load_and_pickle(rng, tmp_path):
    m = random_model(10, 30, arch="topk", k=4)
    x = data(rng, 90, 10)
    whole = libsae.FeatureStats(30, top_n=5)
    parts = [libsae.FeatureStats(30, top_n=5) for _ in range(3)]
    for p, (a, b) in zip(parts, [(0, 30), (30, 31), (31, 90)]):
        whole.add(m, x[a:b])
        p.next_row = a
        p.add(m, x[a:b])
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    assert parts[2].to_bytes() == whole.to_bytes()
    with pytest.raises(libsae.InvalidArgError, match="cannot be disjoint"):
        parts[2].merge(whole)
    with pytest.raises(libsae.InvalidArgError, match="below the next row id"):
        whole.next_row = 3
    whole.save(tmp_path / "s.safetensors")
    again = libsae.FeatureStats.load(tmp_path / "s.safetensors")
    assert again.to_bytes() == whole.to_bytes()
    assert pickle.loads(pickle.dumps(whole)).to_bytes() == whole.to_bytes()
    assert libsae.FeatureStats.from_bytes(whole.to_bytes()).rows == 90
    with pytest.raises(libsae.FormatError, match="feature statistics"):
        libsae.FeatureStats.from_bytes(m.to_bytes())
    with pytest.raises(libsae.InvalidArgError, match="top_n 0"):
        libsae.FeatureStats(30, top_n=0)
    assert "rows=90" in repr(whole)


def test_decoder_neighbors(rng):
    m = random_model(16, 25)
    idx, cos = libsae.decoder_neighbors(m, 4)
    w = m.W_dec.astype(np.float64)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    c = w @ w.T
    np.fill_diagonal(c, -np.inf)
    for i in range(25):
        assert i not in idx[i]
        assert np.allclose(cos[i], c[i, idx[i]], atol=1e-5)
        assert np.allclose(np.sort(c[i])[::-1][:4], cos[i], atol=1e-5)
    with pytest.raises(libsae.InvalidArgError, match="k = 25"):
        libsae.decoder_neighbors(m, 25)


def test_max_cosine_is_the_mmcs_numpy_computes(rng):
    """Ground-truth directions against a decoder: each direction's best cosine
    and row as numpy computes them in double; the mean is the MMCS."""
    m = random_model(16, 40)
    truth = data(rng, 12, 16)
    truth[3] = 2.5 * m.W_dec[17]  # planted: found at row 17, cosine 1
    cos, idx = libsae.max_cosine(truth, m.W_dec)
    assert cos.dtype == np.float32 and idx.dtype == np.uint32 and cos.shape == idx.shape == (12,)
    t = truth.astype(np.float64) / np.linalg.norm(truth, axis=1, keepdims=True)
    w = m.W_dec.astype(np.float64) / np.linalg.norm(m.W_dec, axis=1, keepdims=True)
    c = t @ w.T
    assert np.allclose(cos, c.max(axis=1), atol=1e-5)
    assert np.allclose(c[np.arange(12), idx], c.max(axis=1), atol=1e-5)
    assert idx[3] == 17 and cos[3] == pytest.approx(1.0, abs=1e-6)
    assert float(cos.mean()) == pytest.approx(c.max(axis=1).mean(), abs=1e-5)
    with pytest.raises(ValueError, match="both must be d wide"):
        libsae.max_cosine(truth, m.W_dec[:, :8].copy())
    with pytest.raises(libsae.InvalidArgError, match="n_a is 0"):
        libsae.max_cosine(truth[:0], m.W_dec)
    truth[5, 2] = np.nan
    with pytest.raises(libsae.NonFiniteError, match="row 5 of a"):
        libsae.max_cosine(truth, m.W_dec)
