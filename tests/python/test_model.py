"""libsae.Model: shapes and architectures, the numbers against a float64
reference, buffers in and out without copies, errors as exceptions that leave
the model as it was, saving, pickling and handle ownership."""
import ctypes
import math
import os
import pickle

import numpy as np
import pytest

import libsae
import reference as ref
from helpers import data, needs_torch, random_model, same_bits, snapshot, torch
from libsae import capi


@pytest.mark.parametrize("arch, kw, threshold_size", [
    ("relu", {}, 0), ("topk", {"k": 3}, 0), ("batchtopk", {"k": 3}, 1),
    ("jumprelu", {"threshold": 0.01}, 40)])
def test_architectures_and_properties(arch, kw, threshold_size):
    with libsae.Model(12, 40, arch=arch, seed=2, **kw) as m:
        assert (m.d_in, m.d_sae, m.arch) == (12, 40, libsae.Arch[arch.upper()])
        assert m.k == kw.get("k", 0)
        assert m.W_enc.shape == (12, 40) and m.W_dec.shape == (40, 12)
        assert m.b_enc.shape == (40,) and m.b_dec.shape == (12,)
        assert m.threshold.shape == (threshold_size,)
        assert m.tensor_size(libsae.Tensor.THRESHOLD) == threshold_size
        assert set(m.tensors()) == {"W_enc", "b_enc", "W_dec", "b_dec"} | (
            {"threshold"} if threshold_size else set())
        assert arch in repr(m)
    # the initialisation depends only on (d_in, d_sae, seed)
    assert same_bits(libsae.Model(12, 40, seed=2).W_dec, libsae.Model.create(12, 40, 2).W_dec)


def test_bad_construction():
    with pytest.raises(TypeError, match="needs k"):
        libsae.Model(4, 8, arch="topk")
    with pytest.raises(TypeError, match="does not apply"):
        libsae.Model(4, 8, k=2)
    with pytest.raises(ValueError, match="unknown Arch"):
        libsae.Model(4, 8, arch="temporal")
    with pytest.raises(libsae.InvalidArgError) as e:
        libsae.Model(4, 8, arch=libsae.Arch.TOPK, k=9)  # k > d_sae
    assert e.value.status == libsae.Status.E_INVALID_ARG
    assert e.value.function == "sae_model_create_arch"
    with pytest.raises(libsae.InvalidArgError):
        libsae.Model(0, 8)
    with pytest.raises(libsae.NonFiniteError):
        libsae.Model(4, 8, arch="jumprelu", threshold=math.nan)


@pytest.mark.parametrize("arch, kw", [("relu", {}), ("topk", {"k": 4}), ("jumprelu", {})])
def test_encode_decode_loss_against_reference(rng, arch, kw):
    m = random_model(**kw, arch=arch)
    if arch == "jumprelu":
        m.threshold = np.linspace(0.0, 0.3, m.d_sae, dtype=np.float32) + 1e-3
    t = m.tensors()
    x = data(rng, 64, m.d_in)
    code = libsae.Arch[arch.upper()]
    f_ref = ref.encode_as_saelens(code, t, x, kw.get("k"))
    f = m.encode(x)
    assert f.dtype == np.float32 and f.shape == (64, m.d_sae)
    np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-5)
    assert np.any(f > 0) and np.any(f == 0)
    np.testing.assert_allclose(m.decode(f), ref.decode(t, f), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m(x), ref.decode(t, f), rtol=1e-4, atol=1e-5)
    if arch == "relu":
        assert np.allclose(m.loss(x, 0.3), ref.losses(t, x, 0.3), rtol=1e-5)
    x_hat = ref.decode(t, f_ref)
    fvu = np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(axis=0)) ** 2)
    assert m.fvu(x) == pytest.approx(fvu, rel=1e-5)
    # one token as a 1-D array
    np.testing.assert_allclose(m.encode(x[3]), f[3], rtol=1e-6, atol=1e-7)
    assert m.decode(f[3]).shape == (m.d_in,)


def test_buffers_pass_without_copies(rng, tmp_path):
    m = random_model()
    x = data(rng, 16, m.d_in)
    f = np.full((16, m.d_sae), 7.0, np.float32)
    assert m.encode(x, out=f) is f and same_bits(f, m.encode(x))
    # a memmap and a .npy opened as one
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and same_bits(m.encode(mm), f)
    raw = np.memmap(tmp_path / "x.f32", np.float32, "w+", shape=x.shape)
    raw[:] = x
    assert same_bits(m.encode(raw), f)
    # rows of a bigger array: C-contiguous slices pass as they are
    big = data(rng, 40, m.d_in)
    np.testing.assert_allclose(m.encode(big[8:24]), m.encode(big)[8:24], rtol=1e-6, atol=1e-7)
    # a read-only input is fine; a read-only output is not
    x.flags.writeable = False
    assert same_bits(m.encode(x), f)
    ro = np.zeros((16, m.d_sae), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m.encode(x, out=ro)


def test_bad_buffers_are_refused_by_name(rng):
    m = random_model()
    x = data(rng, 8, m.d_in)
    with pytest.raises(TypeError, match="x has dtype float64.*astype"):
        m.encode(x.astype(np.float64))
    with pytest.raises(TypeError, match=r"x has dtype >f4"):
        m.encode(x.astype(">f4"))
    with pytest.raises(TypeError, match="numpy array or a torch"):
        m.encode(x.tolist())
    with pytest.raises(ValueError, match="not C-contiguous"):
        m.encode(np.asfortranarray(x))
    with pytest.raises(ValueError, match="not C-contiguous"):
        m.encode(data(rng, 8, 2 * m.d_in)[:, ::2])
    with pytest.raises(ValueError, match=r"shape \(8, 13\): expected \(n_tokens, 12\)"):
        m.encode(data(rng, 8, 13))
    with pytest.raises(ValueError, match="no rows"):
        m.encode(np.zeros((0, m.d_in), np.float32))
    with pytest.raises(ValueError, match="expected \\(8, 40\\)"):
        m.encode(x, out=np.zeros((8, 41), np.float32))
    with pytest.raises(ValueError, match="not aligned"):
        m.encode(np.frombuffer(b"\0" + x.tobytes(), np.float32, offset=1).reshape(8, m.d_in))


@needs_torch
def test_torch_cpu_tensors(rng):
    m = random_model()
    x = data(rng, 8, m.d_in)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    assert same_bits(m.encode(t), m.encode(x))
    out = torch.empty(8, m.d_sae)
    m.encode(x, out=out)  # written in place
    assert same_bits(out.numpy(), m.encode(x))
    with pytest.raises(TypeError, match="torch.float64.*float\\(\\)"):
        m.encode(t.double())
    with pytest.raises(ValueError, match="contiguous"):
        m.encode(torch.zeros(2 * m.d_in, 8).t()[:, :m.d_in])


def test_library_errors_change_nothing(rng):
    m = random_model()
    before = snapshot(m)
    x = data(rng, 8, m.d_in)
    x[2, 3] = np.inf
    f = np.full((8, m.d_sae), 5.0, np.float32)
    with pytest.raises(libsae.NonFiniteError) as e:
        m.encode(x, out=f)
    assert e.value.function == "sae_encode" and isinstance(e.value, ValueError)
    assert np.all(f == 5.0)
    bad = m.W_dec
    bad[0, 0] = np.nan
    with pytest.raises(libsae.NonFiniteError):
        m.W_dec = bad
    with pytest.raises(libsae.InvalidArgError):
        m.fvu(data(rng, 1, m.d_in))  # fvu needs two rows
    with pytest.raises(libsae.InvalidArgError):
        m.fold_input_scale(0.0)
    with pytest.raises(ValueError, match="shape"):
        m.set("b_dec", np.zeros(13, np.float32))
    assert snapshot(m) == before


def test_save_load_bytes_pickle(rng, tmp_path):
    m = random_model(arch="batchtopk", k=5)
    x = data(rng, 16, m.d_in)
    m.save(tmp_path)                                 # a directory: SAELens's layout
    assert sorted(os.listdir(tmp_path)) == ["cfg.json", "sae_weights.safetensors"]
    m.save(str(tmp_path / "one.safetensors"))        # a single file
    blob = m.to_bytes()
    assert len(blob) == m.save_size()
    assert (tmp_path / "one.safetensors").read_bytes() == blob
    for other in (libsae.Model.load(tmp_path), libsae.Model.load(os.fsencode(tmp_path)),
                  libsae.Model.from_bytes(blob), libsae.Model.from_bytes(memoryview(blob)),
                  libsae.Model.from_bytes(np.frombuffer(blob, np.uint8)),
                  pickle.loads(pickle.dumps(m))):
        assert other.arch == libsae.Arch.BATCHTOPK and other.k == 5
        assert same_bits(other.encode(x), m.encode(x))
    buf = bytearray(len(blob) + 10)
    assert m.save_buffer(buf) == len(blob) and bytes(buf[:len(blob)]) == blob
    with pytest.raises(libsae.InvalidArgError):
        m.save_buffer(bytearray(len(blob) - 1))      # too small: untouched
    with pytest.raises(libsae.FormatError):
        libsae.Model.from_bytes(blob[:-1])
    with pytest.raises(libsae.SAEIOError) as e:
        libsae.Model.load(tmp_path / "missing")
    assert isinstance(e.value, OSError) and e.value.function == "sae_model_load"
    with pytest.raises(TypeError, match="bytes-like"):
        libsae.Model.from_bytes("a path")


def test_clone_and_copies(rng):
    import copy
    m = random_model(arch="jumprelu", threshold=0.02)
    x = data(rng, 16, m.d_in)
    for other in (m.clone(), copy.copy(m), copy.deepcopy(m)):
        assert other.to_bytes() == m.to_bytes() and other.handle.value != m.handle.value
        other.b_dec = np.zeros(m.d_in, np.float32)  # independent
        assert not same_bits(other.encode(x), m.encode(x))


def test_feature_fire_counts_over_a_stream(rng):
    m = random_model()
    batches = [data(rng, n, m.d_in) for n in (5, 17, 9)]
    counts = m.feature_fire_counts(batches[0])
    assert counts.dtype == np.uint64
    for b in batches[1:]:
        assert m.feature_fire_counts(b, counts) is counts
    want = sum(np.sum(m.encode(b) > 0, axis=0) for b in batches)
    assert np.array_equal(counts, want)
    before = counts.copy()
    bad = batches[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(libsae.NonFiniteError):
        m.feature_fire_counts(bad, counts)
    assert np.array_equal(counts, before)
    with pytest.raises(TypeError, match="uint64"):
        m.feature_fire_counts(bad, np.zeros(m.d_sae, np.int64))


def test_close_and_context_manager():
    m = libsae.Model(4, 8)
    with m as same:
        assert same is m
    assert m.closed
    m.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        m.encode(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="closed"):
        with m:
            pass
    assert "closed" in repr(m)


def test_adopt_and_release_raw_handles():
    lib = capi.lib
    raw = ctypes.c_void_p()
    assert lib.sae_model_create(ctypes.byref(raw), 4, 8, 1) == 0
    m = libsae.Model.from_handle(raw)
    assert m.d_sae == 8 and m.handle.value == raw.value
    addr = m.release()
    assert addr == raw.value and m.closed
    borrowed = libsae.Model.from_handle(addr, owned=False)
    borrowed.close()                       # does not free: the C side still owns it
    assert lib.sae_model_d_in(addr) == 4
    lib.sae_model_free(addr)
    with pytest.raises(ValueError, match="NULL"):
        libsae.Model.from_handle(0)
    with pytest.raises(TypeError):
        libsae.Model.from_handle("0x1234")


def test_total_variance_is_the_fvu_denominator(rng):
    x = data(rng, 200, 12, scale=2.0) + np.float32(50.0)
    x64 = x.astype(np.float64)
    want = np.mean(np.sum((x64 - x64.mean(axis=0)) ** 2, axis=1))
    assert libsae.total_variance(x) == pytest.approx(want, rel=1e-10)
    v, mean = libsae.total_variance(x, return_mean=True)
    assert v == libsae.total_variance(x)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-12)
    m = random_model(d_in=12)
    assert m.loss(x, 0.0).l2 / libsae.total_variance(x) == pytest.approx(m.fvu(x), rel=1e-6)
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(libsae.NonFiniteError, match="sae_total_variance"):
        libsae.total_variance(bad)
    with pytest.raises(libsae.InvalidArgError):
        libsae.total_variance(np.zeros((0, 12), np.float32))
    with pytest.raises(ValueError):
        libsae.total_variance(np.zeros(12, np.float32))


def test_recipe_functions(rng):
    x = data(rng, 256, 12, scale=3.0)
    s = libsae.estimate_input_scale(x)
    assert s == pytest.approx(math.sqrt(12 / np.mean(np.sum(x.astype(np.float64) ** 2, axis=1))),
                              rel=1e-12)
    with pytest.raises(libsae.InvalidArgError):
        libsae.estimate_input_scale(np.zeros((4, 12), np.float32))
    m = random_model()
    m.init_b_dec(x, "mean")
    np.testing.assert_allclose(m.b_dec, x.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7)
    m.init_b_dec(x)  # the geometric median by default
    y = m.b_dec.astype(np.float64)
    grad = np.sum((y - x) / np.linalg.norm(y - x, axis=1, keepdims=True), axis=0)
    assert np.linalg.norm(grad) < 1e-3 * len(x)  # optimality: the unit vectors sum to ~0
    w = m.W_enc
    m.fold_input_scale(4.0)
    assert same_bits(m.W_enc, 4 * w)
    counts, n_dead = m.feature_density_histogram(x, n_bins=8)
    density = np.mean(m.encode(x) > 0, axis=0)
    assert n_dead == np.sum(density == 0) and counts.sum() + n_dead == m.d_sae
    lo = math.log10(1 / 256)
    bins = np.clip(np.floor((np.log10(density[density > 0]) - lo) * 8 / (0 - lo)), 0, 7)
    assert np.array_equal(counts, np.bincount(bins.astype(int), minlength=8))
