"""Exact vs ANN through the pool: retrieve_soft latency and recall@10 by pool size.

``python scripts/measure_crossover.py [sizes...]``: for each size, a pool of
user embeddings (100-cluster Gaussian mixture, d=64) answers 200 in-mixture
queries through ``retrieve_soft`` (similarity-only weights), once with the
exact index and once with a built NN-descent graph. Prints median latency,
queries/s and recall@10 against brute force. The crossover is the smallest
size where the ANN path is faster; it sets ``PoolConfig.ann_threshold``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import dreamjit as dj

SIM_ONLY = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0, lambda_=1.0)


def mixture(n, d=64, clusters=100, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def digits():
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64)
    X -= X.mean(0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


def run(n, nq=200, k=10, data=None):
    X = mixture(n + nq) if data is None else data
    n = X.shape[0] - nq
    base, queries = X[:n], X[n:]
    d = X.shape[1]
    truth = np.argsort(-(base.astype(np.float64) @ queries.T.astype(np.float64)), axis=0)[:k].T
    out = {}
    for mode in ("exact", "ann"):
        pool = dj.DreamPool(
            dj.PoolConfig(
                max_size=n,
                memory_budget_mb=None,
                embedding_dim=d,
                use_ann=mode == "ann",
                ann_threshold=min(n, 5000),
            )
        )
        pool.add_batch(
            np.zeros((n, 1, 1, 3), np.float32), np.tile([0, 1.0, 0], (n, 1)), embeddings=base
        )
        if mode == "ann":
            pool.rebuild_index(block=True)
            assert pool.stats()["index"] == "ann"
        qs = [dj.Query(embedding=q) for q in queries]
        for q in qs[:20]:
            pool.retrieve_soft(q, k=k, weights=SIM_ONLY)
        times, hit = [], 0
        for i, q in enumerate(qs):
            t0 = time.perf_counter()
            h = pool.retrieve_soft(q, k=k, weights=SIM_ONLY)
            times.append(time.perf_counter() - t0)
            hit += len(set(h.ids.tolist()) & set(truth[i].tolist()))
        med = float(np.median(times))
        out[mode] = (med, 1 / med, hit / (k * nq))
    return out


def main(argv):
    sizes = [a if a == "digits" else int(float(a)) for a in argv] or [
        5_000,
        20_000,
        50_000,
        100_000,
        200_000,
    ]
    print(
        f"{'n':>8}  {'exact ms':>9} {'q/s':>7} {'recall':>6}   "
        f"{'ann ms':>8} {'q/s':>7} {'recall':>6}  ann/exact"
    )
    for n in sizes:
        r = run(0, nq=297, data=digits()) if n == "digits" else run(n)
        (em, eq, er), (am, aq, ar) = r["exact"], r["ann"]
        print(
            f"{n:>8}  {em * 1e3:9.3f} {eq:7.0f} {er:6.3f}   "
            f"{am * 1e3:8.3f} {aq:7.0f} {ar:6.3f}  {aq / eq:8.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
