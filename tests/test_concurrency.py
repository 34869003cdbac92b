"""Readers and a writer at once: no exceptions, no duplicates, invariants hold."""

import os
import threading
import time

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import PoolConfig
from dreamjit._rwlock import RWLock

from invariants import assert_invariants

SHAPE = (6, 6, 2, 3)


@pytest.mark.jit_only
def test_four_readers_one_writer():
    rng = np.random.default_rng(0)
    pool = dj.DreamPool(
        PoolConfig(max_size=300, memory_budget_mb=None, use_ann=False, eviction="lowest_coherence")
    )
    t = rng.random((400, *SHAPE), dtype=np.float32)
    r = dj.evaluate_batch(t)
    pool.add_batch(t[:200], r[:200], labels=list(np.arange(200) % 4), only_coherent=False)
    errors, counts = [], [0] * 5
    ops = 150  # per thread: bounded by operation counts, not by wall time

    def reader(n):
        local = np.random.default_rng(n)
        try:
            for _ in range(ops):
                q = t[int(local.integers(0, 400))]
                for hits in (
                    pool.retrieve_similar(q, k=8),
                    pool.retrieve_soft(q, k=8),
                    pool.retrieve_diverse(q, k=8),
                    pool.retrieve_similar(q, k=5, label=1),
                ):
                    ids = hits.ids.tolist()
                    assert len(ids) == len(set(ids)), ids
                    assert len(ids) > 0
                for eid in ids[:2]:
                    try:
                        e = pool[eid]
                        assert e.id == eid
                    except KeyError:
                        pass  # evicted by the writer since: allowed
                pool.stats()
                counts[n] += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def writer():
        local = np.random.default_rng(99)
        try:
            for _ in range(ops):
                idx = local.integers(0, 400, size=int(local.integers(1, 20)))
                # labelled like the first 200, so every label stays in the pool
                pool.add_batch(t[idx], r[idx], labels=list(idx % 4), only_coherent=False)
                live = pool.ids()
                pool.record_feedback(live[: min(5, len(live))], float(local.random()))
                counts[4] += 1
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=writer))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads)
    assert not errors, errors
    assert counts == [ops] * 5, counts
    assert_invariants(pool)


def test_rwlock_writer_excludes_readers_and_reentrancy():
    lock = RWLock()
    log = []
    with lock.write():
        with lock.read():  # a writer may read
            with lock.write():
                log.append("nested")
    with lock.read():
        with lock.read():
            log.append("reread")
        with pytest.raises(RuntimeError):
            with lock.write():
                pass
    inside = threading.Event()
    release = threading.Event()

    def hold_read():
        with lock.read():
            inside.set()
            release.wait(5)

    th = threading.Thread(target=hold_read)
    th.start()
    inside.wait(5)
    got = []

    def take_write():
        with lock.write():
            got.append(time.monotonic())

    w = threading.Thread(target=take_write)
    w.start()
    time.sleep(0.1)
    assert not got  # the writer waits for the reader
    release.set()
    th.join(5)
    w.join(5)
    assert got and log == ["nested", "reread"]


def _wait_until(pred, timeout=60.0):
    """Poll ``pred`` until it holds (a state another thread reaches; no fixed sleep)."""
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "the other thread never got there"
        time.sleep(0.001)


def _run_thread(fn):
    th = threading.Thread(target=fn, daemon=True)
    th.start()
    return th


def test_rwlock_waiting_writer_goes_before_new_readers():
    """Writer preference: once a writer waits, a reader arriving later waits behind it,
    whatever the threads' timing (the order is forced by the lock's state, not by sleeps)."""
    lock = RWLock()
    order = []
    inside, release = threading.Event(), threading.Event()

    def first_reader():
        with lock.read():
            inside.set()
            release.wait(60)

    def writer():
        with lock.write():
            order.append("writer")

    def late_reader():
        with lock.read():
            order.append("reader")

    a = _run_thread(first_reader)
    assert inside.wait(60)
    w = _run_thread(writer)
    _wait_until(lambda: lock._writers_waiting == 1)  # the writer is queued
    r = _run_thread(late_reader)
    release.set()
    for th in (a, w, r):
        th.join(60)
        assert not th.is_alive()
    assert order == ["writer", "reader"]
    assert lock._readers == 0 and lock._writer is None and lock._writers_waiting == 0


def test_rwlock_exclusive_reads_and_release_on_exceptions():
    """``shared_reads=False`` makes reads exclusive; a hold left by an exception is released,
    nested holds included, so another thread gets the lock afterwards."""
    lock = RWLock(shared_reads=False)
    inside, release = threading.Event(), threading.Event()
    got = []

    def holder():
        with lock.read():
            inside.set()
            release.wait(60)

    def second():
        with lock.read():
            got.append("second")

    a = _run_thread(holder)
    assert inside.wait(60)
    b = _run_thread(second)
    _wait_until(lambda: lock._writers_waiting == 1)  # the second read queues as a writer
    assert not got
    release.set()
    for th in (a, b):
        th.join(60)
        assert not th.is_alive()
    assert got == ["second"]

    for shared in (True, False):
        lock = RWLock(shared_reads=shared)
        with pytest.raises(ValueError):
            with lock.write():
                with lock.read():
                    with lock.write():
                        raise ValueError("inside")
        with pytest.raises(ValueError):
            with lock.read():
                with lock.read():
                    raise ValueError("inside")
        assert lock._readers == 0 and lock._writer is None
        assert lock._write_depth == 0 and lock._depth() == 0
        done = []
        th = _run_thread(lambda lk=lock, d=done: (lk.write().__enter__(), d.append(1)))
        th.join(60)  # another thread takes the write lock (and keeps it: a fresh lock next)
        assert done == [1]


def test_rwlock_readers_share():
    """Two threads hold the read lock at once (each waits for the other inside)."""
    lock = RWLock()
    barrier = threading.Barrier(2, timeout=60)
    seen = []

    def reader():
        with lock.read():
            barrier.wait()  # both inside together, or a BrokenBarrierError
            seen.append(lock._readers)
            barrier.wait()

    threads = [_run_thread(reader) for _ in range(2)]
    for th in threads:
        th.join(60)
        assert not th.is_alive()
    assert seen == [2, 2] and lock._readers == 0


# ------------------------------------------------- iteration beside evictions


def small_pool(n=40, max_size=40, seed=0):
    rng = np.random.default_rng(seed)
    pool = dj.DreamPool(PoolConfig(max_size=max_size, memory_budget_mb=None, use_ann=False))
    t = rng.random((n, *SHAPE), dtype=np.float32)
    pool.add_batch(t, np.tile([0.0, 0.9, 0.0], (n, 1)), only_coherent=False)
    return pool, rng


def test_iteration_skips_entries_evicted_after_it_started():
    """Evictions between the id snapshot and the reads: skipped, never a KeyError."""
    pool, rng = small_pool()
    pool.ITER_CHUNK = 8
    ids_at_start = pool.ids()
    more = rng.random((10, *SHAPE), dtype=np.float32)
    it = iter(pool)
    first = next(it)  # the first chunk of 8 is read; the writer evicts the 10 oldest now
    pool.add_batch(more, np.tile([0.0, 0.9, 0.0], (10, 1)), only_coherent=False)
    rest = list(it)
    got = [first.id] + [e.id for e in rest]
    # the first chunk (read before the eviction) is whole, then only entries still live,
    # in order; entries added after iteration started are not included
    assert got == ids_at_start[:8].tolist() + ids_at_start[10:].tolist()
    assert len(list(pool)) == 40 and [e.id for e in pool] == pool.ids().tolist()


def test_hits_entries_and_tensors_skip_evicted_hits():
    pool, rng = small_pool()
    q = pool[int(pool.ids()[0])].tensor
    hits = pool.retrieve_similar(q, k=40)
    assert len(hits.entries()) == 40 and hits.tensors().shape == (40, *SHAPE)
    pool.add_batch(
        rng.random((10, *SHAPE), dtype=np.float32),
        np.tile([0.0, 0.9, 0.0], (10, 1)),
        only_coherent=False,
    )  # evicts the 10 oldest, some of them hits
    live = [i for i in hits.ids.tolist() if i in pool]
    assert len(live) == 30
    entries = hits.entries()
    assert [e.id for e in entries] == live  # hit order kept, evicted skipped
    tensors = hits.tensors()
    assert tensors.shape == (30, *SHAPE)
    np.testing.assert_array_equal(tensors, np.stack([e.tensor for e in entries]))


@pytest.mark.jit_only
def test_iterating_beside_a_writer_never_raises():
    """Full passes over the pool while a writer evicts: no KeyError, ids increasing."""
    pool, rng = small_pool(n=200, max_size=200)
    pool.ITER_CHUNK = 16
    t = rng.random((64, *SHAPE), dtype=np.float32)
    res = np.tile([0.0, 0.9, 0.0], (64, 1))
    stop, errors = threading.Event(), []

    def writer():
        local = np.random.default_rng(1)
        try:
            while not stop.is_set():
                m = int(local.integers(1, 30))
                pool.add_batch(t[:m], res[:m], only_coherent=False)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    try:
        for _ in range(300):  # passes counted, not timed
            ids = [e.id for e in pool]
            assert ids == sorted(set(ids))
            hits = pool.retrieve_similar(t[0], k=20)
            got = [e.id for e in hits.entries()]
            order = {i: r for r, i in enumerate(hits.ids.tolist())}
            assert all(i in order for i in got) and got == sorted(got, key=order.get)
            assert hits.tensors().shape[1:] == SHAPE
    finally:
        stop.set()
        th.join(30)
    assert not th.is_alive() and not errors, errors
    assert_invariants(pool)


# ------------------------------------------------- numba settings and the lock


def _run(code, env=None, timeout=300):
    import subprocess
    import sys

    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_leaves_numba_settings_alone():
    code = (
        "import numba; before = numba.config.THREADING_LAYER\n"
        "import dreamjit, dreamjit.pool, dreamjit.index\n"
        "assert numba.config.THREADING_LAYER == before, numba.config.THREADING_LAYER\n"
        "print(before)"
    )
    assert _run(code).strip() == "default"


@pytest.mark.jit_only
def test_shared_reads_under_the_workqueue_layer():
    """workqueue aborts if two threads launch parallel regions at once: kernels run serial
    off the main thread, so concurrent reads and writes of >= 64 rows stay safe."""
    code = """
import threading, numpy as np, numba, dreamjit as dj
from dreamjit.kernels._jit import parallel_allowed, likely_layer
assert likely_layer() == "workqueue" and parallel_allowed()
pool = dj.DreamPool(dj.PoolConfig(max_size=5000, memory_budget_mb=None, use_ann=False))
t = np.random.default_rng(0).random((96, 6, 6, 3), dtype=np.float32)
pool.add_batch(t, only_coherent=False)  # its descriptors run on Python threads (run_chunks)
from dreamjit.kernels.chroma import chroma_batch
chroma_batch(t.reshape(96, 6, 6, 1, 3), np.empty((0, 0, 0, 0), np.float32), False)  # prange
assert numba.threading_layer() == "workqueue"
flags, errors = [], []
def work(n):
    try:
        flags.append(parallel_allowed())
        for i in range(20):
            pool.add_batch(t, only_coherent=False)
            pool.retrieve_soft(t[i], k=5); pool.retrieve_diverse(t[i], k=4)
            [e.id for e in pool.retrieve_similar(t[i], k=5).entries()]
    except Exception as exc:
        errors.append(exc)
threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
[th.start() for th in threads]
work(99)
[th.join(300) for th in threads]
assert not errors, errors
assert sorted(flags) == [False, False, False, True], flags
print(pool.stats()["parallel_reads"], len(pool))
"""
    out = _run(code, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert out.split() == ["True", "5000"]


def test_rwlock_held_by_another_thread_is_free_in_a_forked_child():
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    lock = RWLock()
    inside, release = threading.Event(), threading.Event()

    def hold_read():
        with lock.read():
            inside.set()
            release.wait(60)

    th = threading.Thread(target=hold_read)
    th.start()
    try:
        assert inside.wait(60)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = 1
            try:
                with lock.write():  # the parent's reader does not exist here
                    ok = 0
            finally:
                os.write(w, bytes([ok]))
                os._exit(ok)
        os.close(w)
        import select

        ready, _, _ = select.select([r], [], [], 60)
        got = os.read(r, 1) if ready else b""
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)
        assert got == b"\x00", "the child could not take the write lock"
    finally:
        release.set()
        th.join(60)
