"""Concurrency soak: writers, readers, iterators, ``entries()``, save/load and rebuilds
on one pool at once, bounded by operation counts (never by wall time).

No thread may raise (only ``pool[eid]`` may raise ``KeyError`` for an entry evicted
meanwhile, as documented), no thread may hang, the budget holds after every add,
and the invariants hold at the end. The default run takes a few seconds with a
stand-in graph builder; the ``slow`` one (~60 s) runs real pynndescent builds.
``PYTHONPATH=. python tests/test_concurrency_soak.py [ops] [real]`` prints the counts.
"""

import os
import sys
import tempfile
import threading
import time
from collections import Counter

import numpy as np
import pytest

import dreamjit as dj
import dreamjit.index.worker as worker_mod
from dreamjit import PoolConfig, Query

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from invariants import assert_invariants  # noqa: E402
from standins import build_in_threads  # noqa: E402

TIMEOUT = 600.0  # a thread still running after this is a hang: the soak fails
SHAPE = (6, 6, 3)


def soak(ops: int, workdir: str, seed: int = 0) -> dict:
    """Run every kind of thread ``ops`` iterations each; return the counts."""
    rng = np.random.default_rng(seed)
    pool_tensors = rng.random((512, *SHAPE), dtype=np.float32)
    probe = dj.DreamPool(PoolConfig(memory_budget_mb=None, use_ann=False))
    probe.add(pool_tensors[0], (0.0, 0.9, 0.0))
    entry = probe.entry_bytes + 8
    cfg = PoolConfig(
        max_size=3000,
        memory_budget_mb=900 * entry / 2**20,
        eviction="lowest_utility",
        ann_threshold=300,
        ann_n_neighbors=8,
        ann_rebuild_fraction=0.1,
        query_cache_size=64,
        seed=seed,
    )
    pool = dj.DreamPool(cfg)
    budget = cfg.budget_bytes
    counts, errors, lock = Counter(), [], threading.Lock()

    def count(name, n=1):
        with lock:
            counts[name] += n

    def run(name, body):
        def target():
            local = np.random.default_rng(abs(hash(name)) % 2**32)
            try:
                for _ in range(ops):
                    body(local)
                    count(name)
            except BaseException as exc:  # every error is reported
                errors.append((name, repr(exc)))

        return threading.Thread(target=target, name=f"soak-{name}")

    def writer(local):
        m = int(local.integers(1, 100))
        idx = local.integers(0, 512, m)
        results = np.column_stack([np.zeros(m), local.uniform(0.5, 1.0, m), np.zeros(m)])
        pool.add_batch(
            pool_tensors[idx],
            results,
            utilities=local.random(m),
            labels=list(local.integers(0, 4, m)),
            only_coherent=False,
        )
        with pool.lock.read():  # the budget holds after every add
            assert pool.used_bytes() <= budget, (pool.used_bytes(), budget)
        count("entries_added", m)
        live = pool.ids()
        if live.size:
            pool.record_feedback(local.choice(live, min(5, live.size)), float(local.random()))

    def reader(local):
        q = pool_tensors[int(local.integers(0, 512))]
        for hits in (
            pool.retrieve_soft(q, k=8),
            pool.retrieve_similar(q, k=8),
            pool.retrieve_diverse(q, k=5),
            pool.retrieve(q, k=6, mode="hybrid"),
            pool.retrieve_similar(q, k=5, label=int(local.integers(0, 4))),
        ):
            ids = hits.ids.tolist()
            assert len(ids) == len(set(ids))
            for eid in ids[:2]:
                try:
                    assert pool[eid].id == eid
                except KeyError:
                    count("keyerror_getitem")  # evicted since the retrieval: documented
        pool.stats()
        pool.memory_budget_stats()
        pool.query_cache_stats()

    def iterator(local):
        seen = [e.id for e in pool]
        assert seen == sorted(set(seen))
        count("entries_iterated", len(seen))
        probe = pool_tensors[int(local.integers(0, 512))]
        hits = pool.retrieve_soft(Query.from_tensor(probe), k=10)
        entries = hits.entries()
        tensors = hits.tensors()
        if tensors.ndim == 1:  # a pool that has never held a tensor does not know the shape
            assert tensors.shape == (0,) and not entries
        else:
            assert tensors.shape == (len(entries), *SHAPE)
        order = {i: r for r, i in enumerate(hits.ids.tolist())}
        assert [order[e.id] for e in entries] == sorted(order[e.id] for e in entries)

    def saver(local):
        path = os.path.join(workdir, f"soak-{int(local.integers(0, 3))}.npz")
        pool.save(path)
        loaded = dj.DreamPool.load(path)
        assert_invariants(loaded)
        count("entries_saved", len(loaded))

    def rebuilder(local):
        block = bool(local.integers(0, 2))
        assert pool.rebuild_index(block=block, timeout=TIMEOUT) or not block
        count("rebuilds_blocking" if block else "rebuilds_background")

    threads = [
        run("writer_a", writer),
        run("writer_b", writer),
        run("reader_a", reader),
        run("reader_b", reader),
        run("iterator", iterator),
        run("saver", saver),
        run("rebuilder", rebuilder),
    ]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    deadline = time.monotonic() + TIMEOUT
    for th in threads:
        th.join(max(deadline - time.monotonic(), 0.0))
    hung = [th.name for th in threads if th.is_alive()]
    seconds = time.perf_counter() - t0
    if pool.indexes.ann is not None:
        assert pool.indexes.ann.wait(TIMEOUT), "a build hung"
    assert_invariants(pool)
    out = dict(counts)
    out.update(
        seconds=round(seconds, 1),
        hung=hung,
        errors=errors,
        count=len(pool),
        evicted=pool.stats()["evicted"],
        builds=0 if pool.indexes.ann is None else pool.indexes.ann.builds,
        used_bytes=pool.used_bytes(),
        budget=budget,
    )
    return out


def warm_worker():
    """Start the build worker and compile pynndescent first (~35 s here), so the real
    builds happen while the soak runs rather than after it (the script's ``real`` mode;
    under pytest the session's ``nndescent_worker`` fixture does this)."""
    request = {"n_neighbors": 8, "seed": 0, "graph": "search", "max_degree": 12, "n_jobs": None}
    worker_mod._Worker.build(np.empty((0, 64), np.float32), request, warm_only=True)


def check(out, ops):
    assert not out["hung"], out
    assert not out["errors"], out["errors"]
    for name in ("writer_a", "writer_b", "reader_a", "reader_b", "iterator", "saver", "rebuilder"):
        assert out[name] == ops, (name, out)
    assert out["evicted"] > 0 and out["builds"] > 0, out
    assert out["used_bytes"] <= out["budget"]


@pytest.fixture
def stand_in_builds(monkeypatch):
    build_in_threads(monkeypatch.setattr)


@pytest.mark.jit_only
def test_soak_short(stand_in_builds, tmp_path):
    ops = 40
    check(soak(ops, str(tmp_path)), ops)


@pytest.mark.slow
@pytest.mark.ann
def test_soak_long_real_builds(tmp_path):
    ops = 300  # the session's nndescent_worker is warm: the real builds run during the soak
    check(soak(ops, str(tmp_path), seed=1), ops)


if __name__ == "__main__":  # python tests/test_concurrency_soak.py [ops] [real]
    n_ops = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    if "real" in sys.argv[2:]:
        warm_worker()
    else:
        build_in_threads()
    with tempfile.TemporaryDirectory() as d:
        result = soak(n_ops, d)
    print(result)
    check(result, n_ops)
