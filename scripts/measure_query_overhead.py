"""``python scripts/measure_query_overhead.py [SIZES] [--calls N]``: where the time of one
``retrieve_soft`` goes, next to hnswlib, per call (issue 12 item 1).

For each pool size in ``SIZES`` (comma-separated, default ``1000,10000``): the pool and data of
``measure_query_path.py`` (unit rows of the asv mixture, d=64, user embeddings,
``use_ann=False``, similarity-only weights, top-10) and hnswlib (M=16, ef the smallest with
recall@10 >= 0.95, one thread). Every contender is timed one call at a time, the contenders
taking turns call by call (``--calls`` turns each), and each line gives the 10th percentile
and the median of its single-call times: on a shared machine a call that lost the core
shows up as one slow sample instead of inflating an average.

Contenders: the whole call (float32 and float64 query vectors), hnswlib ``knn_query``, faiss
``IndexFlatIP`` (1 thread), and the steps of the call on their own: the fused kernel
``soft_query_into`` with the call's arguments and four fresh result arrays, as the pool calls
it (``soft_query`` on a tree without it: the exact scan of every row and the rerank), the
read lock (enter and exit), the retriever's soft path (argument assembly plus the kernel), and
the result (usage count and ``Hits``, on fresh copies of a result).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "asv_bench"))

from compare_data import K, _embedding_pool, _mixture  # noqa: E402


def race(fns, calls):
    """``name -> (p10, median)`` microseconds per call, the contenders taking turns."""
    pc = time.perf_counter_ns
    for f in fns.values():  # warm
        f()
        f()
    names = list(fns)
    times = {n: np.empty(calls) for n in names}
    for c in range(calls):
        for name in names[c % len(names) :] + names[: c % len(names)]:
            f = fns[name]
            t = pc()
            f()
            times[name][c] = pc() - t
    return {n: (np.percentile(v, 10) / 1e3, np.median(v) / 1e3) for n, v in times.items()}


def one_size(n, calls, faiss, hnswlib, dj):
    from dreamjit._indexes import rerank_count
    from dreamjit._retriever import _NO_INT8
    from dreamjit.kernels.query import soft_query

    try:  # the fused path's kernel since issue 12 item 1's last round; soft_query before
        from dreamjit.kernels.query import soft_query_into
    except ImportError:
        soft_query_into = None

    X = _mixture(n)
    Q = _mixture(1000, stream=2)
    pool = _embedding_pool(X)
    sim = dj.RetrievalWeights(1.0, 0.0, 0.0, 0.0, 1.0)
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
    fi = faiss.IndexFlatIP(X.shape[1])
    fi.add(X)
    Q32 = [q.copy() for q in Q[:64]]
    Q64 = [q.astype(np.float64) for q in Q32]
    Q2 = [q[None, :].copy() for q in Q32]
    it = [0]

    def nxt():
        it[0] = (it[0] + 1) % 64
        return it[0]

    store = pool.table.store
    cols = store.columns
    cols8 = cols.get("embeddings_q")
    w = sim.as_array()

    def kernel():
        if soft_query_into is not None:  # the pool's call: four fresh arrays written
            e = np.empty
            return soft_query_into(
                cols["embeddings_t"],
                _NO_INT8 if cols8 is None else cols8,
                store.quant_error,
                cols["embeddings"],
                Q32[nxt()],
                True,
                cols["alive"],
                n,
                cols["ids"],
                cols["util_mean"],
                cols["labels"],
                -1,
                rerank_count(K, n, True),
                K,
                w,
                e(K, np.int64),
                e(K, np.int64),
                e(K, np.float32),
                e(K, np.float32),
            )
        return soft_query(
            cols["embeddings_t"],
            _NO_INT8 if cols8 is None else cols8,
            store.quant_error,
            cols["embeddings"],
            Q32[nxt()],
            True,
            cols["alive"],
            n,
            cols["ids"],
            cols["util_mean"],
            cols["labels"],
            -1,
            rerank_count(K, n, True),  # similarity-only weights: the pool asks k
            K,
            w,
        )

    lock = pool.lock

    def read_lock():
        with lock.read():
            pass

    retriever = pool.retriever

    def soft_path():
        with lock.read():
            return retriever.soft(Q32[nxt()], K, sim, None)

    result = retriever.soft(Q32[0], K, sim, None)
    fresh = [tuple(None if a is None else a.copy() for a in result) for _ in range(calls + 8)]
    finish_private = pool._finish  # the pool's own step, timed alone (a script may look inside)

    def finish():
        with lock.read():
            return finish_private(*fresh.pop())

    fns = {
        "retrieve_soft f32": lambda: pool.retrieve_soft(Q32[nxt()], k=K, weights=sim),
        "retrieve_soft f64": lambda: pool.retrieve_soft(Q64[nxt()], k=K, weights=sim),
        "hnswlib": lambda: h.knn_query(Q2[nxt()], k=K),
        "faiss flat 1t": lambda: fi.search(Q2[nxt()], K),
        "kernel (fused path)": kernel,
        "read lock": read_lock,
        "lock + retriever.soft": soft_path,
        "lock + _finish": finish,
    }
    t = race(fns, calls)
    print(f"n={n:.0e}: hnswlib ef={ef} recall {rec:.3f}; per call, p10 / median (us)")
    hp, hm = t["hnswlib"]
    for name, (p, m) in t.items():
        print(f"   {name:22s} {p:8.1f} / {m:8.1f}   ({p / hp:5.2f}x / {m / hm:5.2f}x hnswlib)")
    sp, sm = t["retrieve_soft f32"]
    kp, km = t["kernel (fused path)"]
    print(
        f"   outside the kernel: {sp - kp:.1f} / {sm - km:.1f} us "
        f"({(sp - kp) / sp:.0%} / {(sm - km) / sm:.0%} of the call)",
        flush=True,
    )


def main(argv=None):
    import faiss
    import hnswlib

    import dreamjit as dj

    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="?", default="1000,10000")
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(1)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min)")
    for n in (int(x) for x in args.sizes.split(",")):
        one_size(n, args.calls, faiss, hnswlib, dj)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
