"""Distributed training from Python: a communicator whose functions are
Python callbacks (libsae.capi.Comm), ranks as threads, the package's
set_comm, shards, collective saves and shard loading, against one process."""
import ctypes
import threading

import numpy as np
import pytest

import libsae
from libsae import capi

D_IN, D_SAE, N = 8, 21, 24


class ThreadGroup:
    """n ranks as threads of this process, each with a libsae.capi.Comm whose
    functions rendezvous with the others and add in rank order."""

    def __init__(self, n):
        self.n = n
        self.barrier = threading.Barrier(n)
        self.slots = [None] * n
        self.keep = []  # the callbacks must outlive the communicators

    def _exchange(self, rank, value):
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values

    def comm(self, rank):
        def allreduce(dtype, ctype):
            def call(ctx, buf, count):
                a = np.ctypeslib.as_array(ctypes.cast(buf, ctypes.POINTER(ctype)), (count,))
                parts = self._exchange(rank, a.copy())
                total = parts[0].copy()
                for p in parts[1:]:
                    total += p
                a[:] = total.astype(dtype)
                return 0
            return call

        def allgather(ctx, send, size, recv):
            parts = self._exchange(rank, ctypes.string_at(send, size))
            for r, p in enumerate(parts):
                ctypes.memmove(recv + r * size, p, size)
            return 0

        def broadcast(ctx, buf, size, root):
            parts = self._exchange(rank, ctypes.string_at(buf, size))
            ctypes.memmove(buf, parts[root], size)
            return 0

        funcs = (capi.AllreduceF32(allreduce(np.float32, ctypes.c_float)),
                 capi.AllreduceF64(allreduce(np.float64, ctypes.c_double)),
                 capi.Allgather(allgather), capi.Broadcast(broadcast))
        self.keep.append(funcs)
        return capi.Comm(ctypes.sizeof(capi.Comm), None, rank, self.n, *funcs)

    def run(self, fn):
        errors = []

        def body(rank):
            try:
                fn(rank, self.comm(rank))
            except BaseException as e:  # reported on the main thread
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]


def data(steps, seed=3):
    return np.random.default_rng(seed).normal(0.2, 1.0, (steps, N, D_IN)).astype(np.float32)


def one_process(x, **kw):
    m = libsae.Model(D_IN, D_SAE, seed=7, **kw)
    opt = libsae.Optimizer(m, lr=1e-2, threads=1)
    for batch in x:
        opt.step(m, batch)
    return m


def test_shard_range_splits_evenly():
    assert [libsae.shard_range(10, 3, s) for s in range(3)] == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(libsae.InvalidArgError):
        libsae.shard_range(10, 11, 0)


def test_feature_shards_train_the_one_process_model(tmp_path):
    x = data(3)
    want = one_process(x, arch="topk", k=3)
    shards = [(0, 9), (9, D_SAE)]
    models = [None, None]
    one_call = tmp_path / "one_call"
    one_call.mkdir()

    def rank_main(rank, comm):
        m = libsae.Model.create_shard(D_IN, D_SAE, *shards[rank], arch="topk", k=3, seed=7)
        assert m.shard == (*shards[rank], D_SAE)
        opt = libsae.Optimizer(m, lr=1e-2, threads=1)
        opt.set_comm("features", comm)
        for batch in x:
            opt.step(m, batch)
        m.save_collective(comm, tmp_path)
        opt.save_collective(comm, tmp_path)
        # the same checkpoint in one call, through the attached communicator
        opt.save_checkpoint_collective(m, one_call)
        models[rank] = m

    ThreadGroup(2).run(rank_main)
    w_dec = np.concatenate([m.W_dec for m in models])
    np.testing.assert_allclose(w_dec, want.W_dec, rtol=0, atol=1e-4 * np.abs(want.W_dec).max())
    # one process opens the collective checkpoint; a shard loads its slice
    whole = libsae.Model.load(tmp_path)
    np.testing.assert_array_equal(whole.W_dec, w_dec)
    part = libsae.Model.load_shard(tmp_path, 5, 12)
    np.testing.assert_array_equal(part.W_dec, w_dec[5:12])
    libsae.Optimizer.load(part, tmp_path)  # the shard's part of the optimizer
    again = libsae.Model.load(one_call)
    np.testing.assert_array_equal(again.W_dec, w_dec)
    assert libsae.Optimizer.load(again, one_call).steps == len(x)
    # a single process has no communicator to save through
    with pytest.raises(libsae.StateError):
        libsae.Optimizer(again).save_checkpoint_collective(again, one_call)


def test_data_parallel_ranks_train_the_one_process_model():
    x = data(3, seed=4)
    want = one_process(x)
    models = [None, None]

    def rank_main(rank, comm):
        m = libsae.Model(D_IN, D_SAE, seed=7)
        opt = libsae.Optimizer(m, lr=1e-2, threads=1)
        opt.set_comm(libsae.Parallel.DATA, comm)
        rows = slice(0, 10) if rank == 0 else slice(10, N)
        for batch in x:
            opt.step(m, batch[rows])
        models[rank] = m
        opt.set_comm("data", None)  # alone again

    ThreadGroup(2).run(rank_main)
    np.testing.assert_array_equal(models[0].W_enc, models[1].W_enc)
    np.testing.assert_allclose(models[0].W_enc, want.W_enc, rtol=0,
                               atol=1e-4 * np.abs(want.W_enc).max())


def test_set_comm_refuses_what_is_not_a_communicator():
    m = libsae.Model(D_IN, D_SAE)
    opt = libsae.Optimizer(m)
    with pytest.raises(TypeError):
        opt.set_comm("data", object())
    with pytest.raises(ValueError):
        opt.set_comm("grid", None)
    bad = ThreadGroup(1).comm(0)
    bad.struct_size = 8
    with pytest.raises(libsae.InvalidArgError):
        opt.set_comm("data", bad)
