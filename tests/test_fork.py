"""Forks and multiprocessing: a child forked during a background build, and
``multiprocessing.Pool`` workers (fork and spawn) adding and querying after the
parent ran a parallel kernel. Every wait is bounded: a hang fails the test."""

import json
import multiprocessing as mp
import os
import select
import signal
import sys
import threading
import time

import numpy as np
import pytest

import dreamjit as dj
import dreamjit.index.nndescent as index_mod
from dreamjit import PoolConfig, Query, RetrievalWeights
from dreamjit.kernels._jit import FORK_UNSAFE_LAYERS, active_layer, parallel_allowed

from invariants import assert_invariants
from standins import build_in_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMEOUT = 300.0  # generous: a hang fails after this, it never blocks the suite
SIM_ONLY = RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)


def unit_mixture(n, d=16, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def thread_builds(monkeypatch):
    """Pools build in a thread with the exact k-NN graph (fast, no pynndescent)."""
    build_in_threads(monkeypatch.setattr)


def run_a_prange_kernel():
    """Start numba's threading layer here: a pool's adds need not (their descriptors run
    on Python threads, ``kernels._jit.run_chunks``), so run a ``prange`` kernel directly."""
    from dreamjit.kernels.chroma import chroma_batch

    t = np.zeros((64, 2, 2, 1, 3), np.float32)  # 64 items: the prange compile, all threads
    chroma_batch(t, np.empty((0, 0, 0, 0), np.float32), False)


def embedding_pool(V, **cfg):
    n, d = V.shape
    cfg = {
        "memory_budget_mb": None,
        "max_size": 100_000,
        "embedding_dim": d,
        "ann_threshold": 300,
        "ann_n_neighbors": 8,
        **cfg,
    }
    pool = dj.DreamPool(PoolConfig(**cfg))
    add_vectors(pool, V)
    return pool


def add_vectors(pool, V):
    n = V.shape[0]
    return pool.add_batch(
        np.zeros((n, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (n, 1)), embeddings=V
    )


def graph_rows(pool):
    ann = pool.indexes.ann
    return 0 if ann is None else int(ann.graph_info.get("rows", 0) - ann.n_tombstones)


def run_in_child(body):
    """Fork; the child runs ``body()`` and sends its dict back through a pipe.

    Returns ``(dict, exit status)``; a child silent for TIMEOUT seconds is
    killed and the test fails.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            out = body()
            code = 0
        except BaseException as exc:  # reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + TIMEOUT
    try:
        while True:
            ready, _, _ = select.select([r], [], [], max(deadline - time.monotonic(), 0.0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"forked child silent for {TIMEOUT} s: hung")
            data = os.read(r, 1 << 16)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b"{}"), status


@pytest.mark.jit_only
def test_child_forked_during_a_build_forgets_it_and_builds_again(thread_builds, monkeypatch):
    parent = os.getpid()
    started, release = threading.Event(), threading.Event()

    def hold_parent_build(index):  # the parent's build waits here, its snapshot taken
        if os.getpid() == parent and not release.is_set():
            started.set()
            release.wait(TIMEOUT)

    monkeypatch.setattr(index_mod, "_BUILD_HOOK", hold_parent_build)
    V = unit_mixture(900)
    pool = embedding_pool(V[:400])
    run_a_prange_kernel()  # numba's threading layer runs in this process
    assert active_layer() is not None
    try:
        assert started.wait(TIMEOUT), "the build never started"
        assert pool.stats()["ann_building"]

        def child():
            out = {
                "building_after_fork": pool.stats()["ann_building"],
                "parallel_allowed": parallel_allowed(),
            }
            out["rebuilt"] = pool.rebuild_index(block=True, timeout=TIMEOUT)
            st = pool.stats()
            out["ready"], out["index"] = st["ann_ready"], st["index"]
            out["rows_400"] = graph_rows(pool)
            add_vectors(pool, V[400:800])  # the pool doubles: a build starts by itself
            out["waited"] = pool.indexes.ann.wait(TIMEOUT)
            out["rows_800"], out["count"] = graph_rows(pool), len(pool)
            out["index_after"] = pool.stats()["index"]
            hits = pool.retrieve_soft(Query(embedding=V[700]), k=3, weights=SIM_ONLY)
            out["top"] = int(hits.ids[0])
            assert_invariants(pool)
            return out

        out, status = run_in_child(child)
    finally:
        release.set()
    assert "error" not in out, out
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert out["building_after_fork"] is False
    assert out["parallel_allowed"] is (active_layer() not in FORK_UNSAFE_LAYERS)
    assert out["rebuilt"] and out["ready"] and out["index"] == "ann" and out["rows_400"] == 400
    assert out["waited"] and out["rows_800"] == 800 == out["count"]
    assert out["index_after"] == "ann" and out["top"] == 700
    # the parent's own build was only held: it lands, and the pool goes on
    assert pool.rebuild_index(block=True, timeout=TIMEOUT)
    assert pool.stats()["ann_ready"] and graph_rows(pool) == 400
    assert_invariants(pool)


@pytest.mark.slow
@pytest.mark.ann
def test_child_forked_during_a_worker_build(tmp_path):
    """The real build worker: a child forked while the parent's build runs starts its own
    worker, and the parent's worker and build are unaffected."""
    V = unit_mixture(6000, d=32, clusters=60)
    pool = embedding_pool(V, ann_threshold=2000, ann_n_neighbors=15)
    forked_during_build = pool.stats()["ann_building"]

    def child():
        out = {"building_after_fork": pool.stats()["ann_building"]}
        out["rebuilt"] = pool.rebuild_index(block=True, timeout=TIMEOUT)
        out["ready"], out["rows"] = pool.stats()["ann_ready"], graph_rows(pool)
        assert_invariants(pool)
        return out

    out, status = run_in_child(child)
    assert "error" not in out, out
    assert status == 0 and out["building_after_fork"] is False
    assert out["rebuilt"] and out["ready"] and out["rows"] == 6000
    assert pool.rebuild_index(block=True, timeout=TIMEOUT)
    assert pool.stats()["ann_ready"] and graph_rows(pool) == 6000
    assert forked_during_build in (True, False)  # recorded; the build may have been quick


# ------------------------------------------------------------- multiprocessing

_PARENT_POOL = None  # set in the parent before forking workers; None in spawned ones
SHAPE = (6, 6, 3)


def _job(seed):
    """Adds (>= 64 tensors: the batch kernels' prange size) and queries in a worker."""
    pool = (
        _PARENT_POOL
        if _PARENT_POOL is not None
        else dj.DreamPool(PoolConfig(max_size=2000, memory_budget_mb=None))
    )
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.1, 1.0, (80, 1, 1, 3)).astype(np.float32)  # distinct signatures
    t = rng.random((80, *SHAPE), dtype=np.float32) * colours
    ids = pool.add_batch(t, only_coherent=False)
    soft = pool.retrieve_soft(t[3], k=5)
    hard = pool.retrieve_similar(t[5], k=5)
    diverse = pool.retrieve_diverse(t[7], k=4)
    assert_invariants(pool)
    return {
        "pid": os.getpid(),
        "added": int(len(ids)),
        "hits": [len(soft), len(hard), len(diverse)],
        "own_first": int(hard.ids[0]) == int(ids[5]),
        "parallel_allowed": parallel_allowed(),
        "layer": active_layer(),
        "entries": len(list(pool)),
    }


@pytest.mark.jit_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_adds_and_queries(method, monkeypatch):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    parent = dj.DreamPool(PoolConfig(max_size=2000, memory_budget_mb=None))
    t = np.random.default_rng(0).random((100, *SHAPE), dtype=np.float32)
    parent.add_batch(t, only_coherent=False)
    run_a_prange_kernel()  # numba's threading layer runs in this process first
    layer = active_layer()
    assert layer is not None
    monkeypatch.setattr(sys.modules[__name__], "_PARENT_POOL", parent if method == "fork" else None)
    workers = mp.get_context(method).Pool(2)
    try:
        result = workers.map_async(_job, range(1, 7))
        outs = result.get(timeout=TIMEOUT)  # a killed worker would make this time out
    finally:
        workers.terminate()
        workers.join()
    assert len(outs) == 6
    for out in outs:
        assert out["added"] == 80 and out["hits"] == [5, 5, 4] and out["own_first"]
        if method == "fork":
            assert out["parallel_allowed"] is (layer not in FORK_UNSAFE_LAYERS)
            assert out["entries"] >= 180  # the parent's 100 came along
        else:
            assert out["parallel_allowed"]  # (adds and queries need not start numba's layer)
    # the parent is untouched by its workers
    assert len(parent) == 100 and parallel_allowed()
    assert_invariants(parent)
