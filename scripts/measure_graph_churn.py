"""Measure the saved graph and in-place churn at 2e5 entries (not a unit test).

Usage::

    python scripts/measure_graph_churn.py [--n 200000] [--clusters 2000] [--rounds 50]

1. A pool of ``n`` user embeddings (``cluster_mixture``, d=64) gets its
   NN-descent graph (a pynndescent build, timed) and is saved (format 3, with
   the graph) and again without it (what format 2 held).
2. In fresh processes (warm numba cache) each file is loaded and queried
   (``retrieve_soft``, similarity only, k=10): the report gives the load
   time, the first query's time, and the time until the ANN serves (for the
   file without a graph: a full build, started by the load). Once more after
   a tiny exact pool has answered a query (numba's runtime and the shared
   query kernels loaded), to separate the graph's share of the first query.
3. Steady churn: ``rounds`` rounds each add 1% of the pool at ``max_size``
   (the oldest 1% are evicted): per round the add time, wall and CPU (with
   the in-place link and repair), the index in use and whether any full
   build started.
   After half the pool is replaced, recall@10 of the index against a fresh
   build over the same entries.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import dreamjit as dj  # noqa: E402
from dreamjit.index import NNDescentIndex  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "_bench_common", os.path.join(ROOT, "asv_bench", "benchmarks", "common.py")
)
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)

SIM = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0)

CHILD = r"""
import sys, time, json
sys.path.insert(0, {root!r})
import numpy as np
import dreamjit as dj
from dreamjit.kernels import graph  # noqa: F401  (imports only; kernels load from the cache)
q = np.load({qpath!r})
w = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0)
if {prewarm!r}:  # numba's runtime and the query kernels loaded by a tiny exact pool first
    tiny = dj.DreamPool(dj.PoolConfig(max_size=64, embedding_dim=q.shape[1], memory_budget_mb=None))
    tiny.add_batch(np.zeros((64, 1, 1, 3), np.float32), np.tile([0.0, 1.0, 0.0], (64, 1)),
                   embeddings=q[:64])
    tiny.retrieve_soft(dj.Query(embedding=q[0]), k=10, weights=w)
t0 = time.perf_counter()
pool = dj.DreamPool.load({path!r})
t1 = time.perf_counter()
pool.retrieve_soft(dj.Query(embedding=q[0]), k=10, weights=w)
t2 = time.perf_counter()
mode = pool.stats()["index"]
ready = None
if mode != "ann":
    ann = pool.indexes.ann
    if ann is not None:
        ann.wait({timeout})
    ready = time.perf_counter() - t0
    mode = pool.stats()["index"]
t3 = time.perf_counter()
for x in q[1:101]:
    pool.retrieve_soft(dj.Query(embedding=x), k=10, weights=w)
per = (time.perf_counter() - t3) / 100
print(json.dumps(dict(load=t1 - t0, first_query=t2 - t1, index=mode, ready_after=ready,
                      later_query=per)))
"""


def child(path, qpath, timeout=900, prewarm=False):
    code = CHILD.format(root=ROOT, path=path, qpath=qpath, timeout=timeout, prewarm=prewarm)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def recall(index, store, Q, k=10):
    live = np.flatnonzero(store.alive)
    S = Q.astype(np.float64) @ store.embeddings[live].astype(np.float64).T
    T = live[np.argsort(-S, axis=1, kind="stable")[:, :k]]
    return float(np.mean([np.intersect1d(index.search(q, k)[0], t).size / k for q, t in zip(Q, T)]))


def profile_kernels():
    """Wrap the kernels the NN-descent index calls with timers: ``{name: [calls, wall, CPU]}``."""
    import dreamjit.index.nndescent as nnd

    spent: dict = {}

    def timed(name, fn):
        def call(*a):
            t, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a)
            finally:
                e = spent.setdefault(name, [0, 0.0, 0.0])
                e[0] += 1
                e[1] += time.perf_counter() - t
                e[2] += time.process_time() - c

        return call

    for name in ("graph_update", "ann_search_batch", "topk_dot_batch", "remap_entries"):
        setattr(nnd, name, timed(name, getattr(nnd, name)))
    return spent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--load", default=None, help="start from this saved pool (skips 1. and 2.)")
    ap.add_argument("--no-fresh", action="store_true", help="skip the fresh build at the end")
    ap.add_argument("--threads", type=int, default=None, help="numba threads (1: one core's CPU)")
    ap.add_argument(
        "--profile", action="store_true", help="split the churn rounds' time by index kernel"
    )
    args = ap.parse_args()
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
    spent = profile_kernels() if args.profile else None
    n, step = args.n, args.n // 100
    A = common.cluster_mixture(n + args.rounds * step, args.clusters)
    Q = common.cluster_mixture(300, args.clusters, stream=2)
    if args.load:  # a file saved by an earlier run (same --n and --clusters)
        pool = dj.DreamPool.load(args.load)
        pool.config = pool.config.replace(max_size=n)
    else:
        t = time.perf_counter()
        pool = common.ann_pool(A[:n])
        print(
            f"graph build (worker start + pynndescent + structure): {time.perf_counter() - t:.1f} s"
        )
        tmp = tempfile.mkdtemp()
        qpath = os.path.join(tmp, "q.npy")
        np.save(qpath, Q)
        with_graph = pool.save(os.path.join(tmp, "with_graph.npz"))
        pool.indexes.graph_arrays = lambda: None  # the same file without its graph (format 2)
        without = pool.save(os.path.join(tmp, "without_graph.npz"))
        del pool.indexes.graph_arrays
        print(
            "saved",
            with_graph,
            "sizes MB:",
            os.path.getsize(with_graph) >> 20,
            os.path.getsize(without) >> 20,
        )
        print("load, with graph   :", child(with_graph, qpath))
        print("load, with graph, numba runtime warmed:", child(with_graph, qpath, prewarm=True))
        print("load, without graph:", child(without, qpath))
    ann = pool.indexes.ann

    # steady churn at max_size: each round evicts the oldest 1% and adds 1%
    tiny = np.zeros((step, 1, 1, 3), np.float32)
    res = np.tile([0.0, 1.0, 0.0], (step, 1))
    builds0 = ann.builds
    if spent is not None:
        spent.clear()  # the churn rounds only
    times, cpu, modes = [], [], []
    for r in range(args.rounds):
        V = A[n + r * step : n + (r + 1) * step]
        t, c = time.perf_counter(), time.process_time()
        pool.add_batch(tiny, res, embeddings=V)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # every thread of this process
        modes.append(pool.stats()["index"])
    print(
        f"churn: {args.rounds} rounds of {step} adds (+{step} evictions): add_batch median "
        f"{np.median(times):.3f} s, max {max(times):.3f} s (CPU median {np.median(cpu):.3f} s, "
        f"max {max(cpu):.3f} s); index in use: "
        f"{sorted(set(modes))}; full builds started: {ann.builds - builds0 + int(ann.building)}; "
        f"linked {ann.linked}, repaired {ann.repaired}, delta {ann.n_delta}"
    )
    for name, (calls, wall, proc) in sorted((spent or {}).items()):
        print(
            f"  {name}: {calls / args.rounds:.1f} calls per round, "
            f"wall {wall / args.rounds:.3f} s, "
            f"CPU {proc / args.rounds:.3f} s per round"
        )
    store = pool.table.store
    r_churn = recall(ann, store, Q)
    if args.no_fresh:
        print(f"recall@10 after {args.rounds}% churn: in place {r_churn:.4f}")
        return
    fresh = NNDescentIndex(store, background=False)
    t = time.perf_counter()
    fresh.rebuild(block=True)
    print(f"fresh build {time.perf_counter() - t:.1f} s", flush=True)
    r_fresh = recall(fresh, store, Q)
    print(
        f"recall@10 after {args.rounds}% churn: in place {r_churn:.4f}, fresh build {r_fresh:.4f}"
    )


if __name__ == "__main__":
    main()
