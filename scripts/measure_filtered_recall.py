"""``python scripts/measure_filtered_recall.py [--n N] [--queries M]``: filtered retrieval with
the NN-descent index serving, against the exact filtered top-10.

A pool of ``N`` (default 1e5) unit rows of the 64-d Gaussian mixture of the asv suite, entry
``i`` labelled ``i % 100``; filters ``where=list(range(s))`` select ``s`` % of the pool
(s = 1, 10, 50). For each: recall@10 of ``retrieve_soft`` (similarity-only weights, so the
rerank keeps the index order) and of ``retrieve_soft_batch``, against the exact filtered
top-10 (numpy, float64), the route the pool took (slot scan below 1/8 of the pool, else
the filtered graph walk), the graph walk's own recall when forced (``ann.search(q, k,
mask)``), and the median time per query of the pool and of the exact filtered path
(the same pool with ``use_ann=False``), timed interleaved. Prints one line per selectivity.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "asv_bench"))

import dreamjit as dj  # noqa: E402

from compare_data import _mixture, race  # noqa: E402

SIM_ONLY = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)
K = 10


def build(X, use_ann):
    n, d = X.shape
    pool = dj.DreamPool(
        dj.PoolConfig(
            max_size=n,
            memory_budget_mb=None,
            embedding_dim=d,
            tensor_shape=(1, 1, 3),
            use_ann=use_ann,
            ann_threshold=min(n, 10_000),
            ann_background=True,
            query_cache_size=0,
            seed=0,
        )
    )
    pool.add_batch(
        np.full((n, 1, 1, 3), 0.5, np.float32),
        np.tile([1.0, 0.9, 0.0], (n, 1)),
        labels=np.arange(n) % 100,
        embeddings=X,
        only_coherent=False,
    )
    if use_ann:
        assert pool.rebuild_index(block=True, timeout=1800)
        assert pool.stats()["index"] == "ann"
    return pool


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args(argv)
    X = _mixture(args.n)
    Q = _mixture(args.queries, stream=2)
    t0 = time.perf_counter()
    ann = build(X, True)
    print(f"n={args.n}: graph built in {time.perf_counter() - t0:.1f} s (incl. compile)")
    exact = build(X, False)
    labels = np.arange(args.n) % 100
    X64 = X.astype(np.float64)
    store = ann.table.store
    for share in (1, 10, 50):
        where = list(range(share))
        keep = labels < share
        S = Q.astype(np.float64) @ X64[keep].T
        rows = np.flatnonzero(keep)
        truth = rows[np.argsort(-S, axis=1, kind="stable")[:, :K]]  # ids == rows here
        single = [ann.retrieve_soft(q, k=K, weights=SIM_ONLY, where=where).ids for q in Q]
        batch = ann.retrieve_soft_batch(Q, k=K, weights=SIM_ONLY, where=where)
        mask = store.alive & np.isin(store.labels, where)
        walk = [ann.indexes.ann.search(q, K, mask)[0] for q in Q]  # the graph walk, forced

        def recall(got, truth=truth):
            return np.mean([len(set(g.tolist()) & set(t.tolist())) / K for g, t in zip(got, truth)])

        outside = sum(int((~keep[np.asarray(g)]).sum()) for g in single)
        route = "slot scan" if keep.sum() * 8 < args.n else "graph walk"
        it = {"i": 0}

        def nxt(it=it):
            it["i"] = (it["i"] + 1) % len(Q)
            return Q[it["i"]]

        t = race(
            {
                "ann": lambda w=where: ann.retrieve_soft(nxt(), k=K, weights=SIM_ONLY, where=w),
                "exact": lambda w=where: exact.retrieve_soft(nxt(), k=K, weights=SIM_ONLY, where=w),
            },
            rounds=5,
        )
        print(
            f"{share:>2}% selected: route {route}; recall@10 retrieve_soft {recall(single):.4f}, "
            f"batch {recall([r.ids for r in batch]):.4f}, forced graph walk {recall(walk):.4f}; "
            f"entries outside the filter: {outside}; per query: pool {t['ann'] * 1e6:.0f} us, "
            f"exact pool {t['exact'] * 1e6:.0f} us"
        )


if __name__ == "__main__":
    main()
