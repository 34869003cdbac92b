"""``python scripts/measure_query_path.py [SIZES] [--batch]``: the exact query path next to
its peers, timed interleaved (the numbers of the performance page's query-path section).

For each pool size in ``SIZES`` (comma-separated, default ``1000,10000,100000``): a pool of
unit rows of the asv mixture (d=64) with user embeddings and ``use_ann=False``; single
top-10 queries by ``retrieve_soft`` (similarity-only weights) against hnswlib (M=16, ef the
smallest with recall@10 >= 0.95, 1 thread), numpy ``X @ q`` + argpartition (BLAS on one
thread via threadpoolctl) and faiss ``IndexFlatIP`` (1 thread); with ``--batch`` also
``retrieve_soft_batch`` of 1000 queries against 1000 ``retrieve_soft`` calls and one faiss
``search`` of the 1000. Contenders take turns for 15 rounds (5 for batches); each line gives
the min and the median over the rounds and the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "asv_bench"))

from compare_data import K, _embedding_pool, _mixture, _numpy_topk  # noqa: E402


def race(fns, rounds=15, min_time=0.01):
    """``name -> (min, median)`` seconds per call over interleaved rounds."""
    number = {}
    for name, fn in fns.items():
        fn()
        t = time.perf_counter()
        fn()
        number[name] = max(1, int(min_time / max(time.perf_counter() - t, 1e-7)))
    times: dict = {n: [] for n in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            f, c = fns[name], number[name]
            t = time.perf_counter()
            for _ in range(c):
                f()
            times[name].append((time.perf_counter() - t) / c)
    return {n: (min(v), float(np.median(v))) for n, v in times.items()}


def one_size(n, batch, faiss, hnswlib, threadpoolctl, sim):
    X = _mixture(n)
    Q = _mixture(1000, stream=2)
    pool = _embedding_pool(X)
    it = [0]

    def nxt():
        it[0] = (it[0] + 1) % 64
        return it[0]

    fi = faiss.IndexFlatIP(X.shape[1])
    fi.add(X)
    Q2 = [q[None, :].copy() for q in Q[:64]]
    h = hnswlib.Index(space="ip", dim=X.shape[1])
    h.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
    h.add_items(X, np.arange(n))
    truth = np.argsort(-(Q @ X.T), axis=1)[:, :K]
    for ef in (10, 16, 24, 32, 48, 64, 96, 128):
        h.set_ef(ef)
        lab, _ = h.knn_query(Q, k=K)
        rec = np.mean([len(set(a) & set(b)) / K for a, b in zip(lab, truth)])
        if rec >= 0.95:
            break
    h.set_num_threads(1)
    prec = np.mean(
        [
            len(set(pool.retrieve_soft(Q[i], k=K, weights=sim).ids.tolist()) & set(truth[i])) / K
            for i in range(200)
        ]
    )
    fns = {
        "retrieve_soft": lambda: pool.retrieve_soft(Q[nxt()], k=K, weights=sim),
        "faiss flat 1t": lambda: fi.search(Q2[nxt()], K),
        "hnswlib": lambda: h.knn_query(Q2[nxt()], k=K),
        "numpy 1t": lambda: _numpy_topk(X, Q[nxt()]),
    }
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        t = race(fns)
    cells = ", ".join(f"{k} {v[0] * 1e6:.1f}/{v[1] * 1e6:.1f}us" for k, v in t.items())
    print(f"n={n:.0e} (min/median): {cells} | hnswlib ef={ef} recall {rec:.3f}; pool {prec:.3f}")
    for stat, i in (("min", 0), ("median", 1)):
        s = t["retrieve_soft"][i]
        print(
            f"   {stat}: retrieve_soft / hnswlib = {s / t['hnswlib'][i]:.2f}x; "
            f"numpy1t / retrieve_soft = {t['numpy 1t'][i] / s:.2f}; "
            f"faiss / retrieve_soft = {t['faiss flat 1t'][i] / s:.2f}",
            flush=True,
        )
    if batch:
        tb = race(
            {
                "soft_batch": lambda: pool.retrieve_soft_batch(Q, k=K),
                "faiss 1t batch": lambda: fi.search(Q, K),
                "loop": lambda: [pool.retrieve_soft(q, k=K) for q in Q],
            },
            rounds=5,
            min_time=0.0,
        )
        for stat, i in (("min", 0), ("median", 1)):
            b, lp, fb = tb["soft_batch"][i], tb["loop"][i], tb["faiss 1t batch"][i]
            print(
                f"   batch {stat}: soft_batch {b * 1e3:.1f} ms, loop {lp * 1e3:.1f} ms "
                f"(1/{lp / b:.2f} per query), faiss 1t {fb * 1e3:.1f} ms "
                f"(faiss/batch {fb / b:.2f})",
                flush=True,
            )


def main(argv=None):
    import faiss
    import hnswlib
    import threadpoolctl

    import dreamjit as dj

    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="?", default="1000,10000,100000")
    ap.add_argument("--batch", action="store_true")
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    sim = dj.RetrievalWeights(1.0, 0.0, 0.0, 0.0, 1.0)
    for n in (int(x) for x in args.sizes.split(",")):
        one_size(n, args.batch, faiss, hnswlib, threadpoolctl, sim)


if __name__ == "__main__":
    main()
