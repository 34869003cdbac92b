"""Readers and a writer at once: no exceptions, no duplicates, invariants hold."""
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
    pool = dj.DreamPool(PoolConfig(max_size=300, memory_budget_mb=None, use_ann=False,
                                   eviction="lowest_coherence"))
    t = rng.random((400, *SHAPE), dtype=np.float32)
    r = dj.evaluate_batch(t)
    pool.add_batch(t[:200], r[:200], labels=list(np.arange(200) % 4), only_coherent=False)
    errors, counts = [], [0] * 5
    stop = time.monotonic() + 3.0

    def reader(n):
        local = np.random.default_rng(n)
        try:
            while time.monotonic() < stop:
                q = t[int(local.integers(0, 400))]
                for hits in (pool.retrieve_similar(q, k=8), pool.retrieve_soft(q, k=8),
                             pool.retrieve_diverse(q, k=8), pool.retrieve_similar(q, k=5, label=1)):
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
            while time.monotonic() < stop:
                idx = local.integers(0, 400, size=int(local.integers(1, 20)))
                pool.add_batch(t[idx], r[idx], only_coherent=False)
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
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads)
    assert not errors, errors
    assert all(c > 0 for c in counts), counts
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
