"""Retrieval quality on data this project did not make (scikit-image photographs).

Measures, through the public API only:

1. query by example: ``retrieve_soft(Query.from_tensor(t))`` on a pool holding ``t``
   ranks ``t`` first (200 random stored patches; unlabelled pool and query);
2. warm-start lookups: a Gaussian-noise copy (sigma 0.1) of a stored patch, and a copy with
   70% of its pixels missing (certainty 0 there), find the stored patch first;
3. the query cache at small scales (two different queries of values ~1e-4 must differ);
4. ties to the lower id after slot reuse and after save/load;
5. ``stats()["evicted"]`` after ``add_batch`` overfills the pool.

Run: ``python scripts/measure_retrieval_quality.py [--n 4000] [--queries 200]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import dreamjit as dj
from dreamjit.testing import photo_patches


def rank_of(hits, eid):
    ids = hits.ids.tolist()
    return ids.index(eid) + 1 if eid in ids else None


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--min-std",
        type=float,
        default=0.05,
        help="redraw flat patches (pixel std below this); 0 keeps them",
    )
    args = ap.parse_args(argv)
    P = photo_patches(args.n, seed=args.seed, min_std=args.min_std)
    pool = dj.DreamPool(max_size=args.n, memory_budget_mb=None, seed=0, use_ann=False)
    t0 = time.perf_counter()
    ids = pool.add_batch(P, np.tile([1.0, 1.0, 0.0], (args.n, 1)), only_coherent=False)
    print(
        f"pool of {len(pool)} photo patches {P.shape[1:]} built in {time.perf_counter() - t0:.1f} s"
    )
    rng = np.random.default_rng(args.seed + 1)
    pick = rng.choice(args.n, size=args.queries, replace=False)
    k = 10
    first = {"example": 0, "noisy": 0, "missing": 0}
    ranks = {"example": [], "noisy": [], "missing": []}
    for i in pick:
        t = P[i]
        eid = int(ids[i])
        noisy = np.clip(t + rng.normal(0, 0.1, t.shape), 0, 1).astype(np.float32)
        keep = rng.random(t.shape[:2]) >= 0.7
        holed = np.where(keep[..., None], t, 0.0).astype(np.float32)
        cases = {
            "example": dj.Query.from_tensor(t),
            "noisy": dj.Query.from_tensor(noisy),
            "missing": dj.Query.from_tensor(holed, certainty=keep.astype(np.float32)),
        }
        for name, q in cases.items():
            r = rank_of(pool.retrieve_soft(q, k=k), eid)
            first[name] += r == 1
            ranks[name].append(r if r is not None else k + 1)
    m = args.queries
    for name in first:
        rk = np.array(ranks[name])
        print(
            f"{name:8s}: stored patch first {first[name]}/{m} ({100 * first[name] / m:.1f}%), "
            f"in top-{k} {int((rk <= k).sum())}/{m}"
        )
    hard_first = 0
    for i in pick[:60]:
        t = P[i]
        noisy = np.clip(t + rng.normal(0, 0.1, t.shape), 0, 1).astype(np.float32)
        hard_first += (
            rank_of(pool.retrieve_similar(dj.chroma_signature(noisy), k=k), int(ids[i])) == 1
        )
    print(f"hard (chroma) on noisy copies: first {hard_first}/60")

    # 3. cache at small scale
    small = dj.DreamPool(max_size=100, seed=0)
    small.add_batch(smooth(60) * 1e-3, np.tile([1.0, 1.0, 0.0], (60, 1)), only_coherent=False)
    a = small.retrieve_soft([1e-4, 2e-4, 3e-4], k=5).ids.tolist()
    b = small.retrieve_soft([3e-4, 2e-4, 1e-4], k=5).ids.tolist()
    nocache = dj.DreamPool(max_size=100, seed=0, query_cache_size=0)
    nocache.add_batch(smooth(60) * 1e-3, np.tile([1.0, 1.0, 0.0], (60, 1)), only_coherent=False)
    b0 = nocache.retrieve_soft([3e-4, 2e-4, 1e-4], k=5).ids.tolist()
    print(
        f"cache at 1e-4 scale: second query {'correct' if b == b0 else 'WRONG (cached)'} "
        f"({a} vs {b}; uncached {b0})"
    )

    # 4. ties to the lower id across slot reuse and save/load
    differ = 0
    wrong = 0
    trials = 60
    for trial in range(trials):
        r = np.random.default_rng(1000 + trial)
        tp = dj.DreamPool(max_size=8, seed=0)
        base = r.uniform(0.2, 0.8, (3, 4, 4, 3)).astype(np.float32)
        for _ in range(14):
            tp.add(base[r.integers(3)], dj.SolverResult(1.0, 0.9, 0.0))
        q = dj.Query.from_tensor(base[0])
        before = tp.retrieve_soft(q, k=8, weights=dj.RetrievalWeights(1, 0, 0, 0, 1))
        with tempfile.TemporaryDirectory() as d:
            after = dj.DreamPool.load(tp.save(os.path.join(d, "p.npz"))).retrieve_soft(
                q, k=8, weights=dj.RetrievalWeights(1, 0, 0, 0, 1)
            )
        differ += before.ids.tolist() != after.ids.tolist()
        s, ids_ = before.scores, before.ids
        wrong += any(s[j] == s[j + 1] and ids_[j] > ids_[j + 1] for j in range(len(s) - 1))
    print(
        f"ties: {differ}/{trials} round trips changed the order; {wrong}/{trials} results had a "
        f"tie not in id order"
    )

    # 5. evicted inside one add_batch
    ev = dj.DreamPool(max_size=5)
    ev.add_batch(smooth(10), np.tile([1.0, 1.0, 0.0], (10, 1)), only_coherent=False)
    ev2 = dj.DreamPool(max_size=5)
    for t in smooth(10):
        ev2.add(t, dj.SolverResult(1.0, 1.0, 0.0))
    print(
        f"evicted: add_batch of 10 into max_size=5 -> {ev.stats()['evicted']}; "
        f"10 single adds -> {ev2.stats()['evicted']}"
    )


def smooth(n):
    from dreamjit.synthetic import smooth_tensors

    return smooth_tensors(n, shape=(8, 8, 3), seed=3)


if __name__ == "__main__":
    main()
