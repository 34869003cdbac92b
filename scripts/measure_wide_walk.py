"""Wide graph walks against the exact scan, and a tie at the cut (not a unit test).

Usage::

    python scripts/measure_wide_walk.py [--n 100000] [--cache DIR] [--rounds 5]

On ``cluster_mixture(n, n // 100)`` (d=64) with its NN-descent graph (cached in
``--cache`` as ``scripts/measure_ann_speed.py`` caches it), timed interleaved with
``asv_bench/compare_data.race`` (median of rounds):

1. the walk (``kernels.graph.ann_search`` at the beam the index would use for
   ``k``) against the exact scan the index falls back to, for k = 11 ... 800: where
   a wide walk stops paying (``index.nndescent.WALK_EF_SHARE`` /
   ``WALK_EXACT_MIN_EF``);
2. ``retrieve_soft`` (similarity only, k=10) on a pool where 50 entries equal the
   query, so the top 51 tie across the cut, against the same query on a pool
   without duplicates (the search widens only until the tie group is in).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import measure_ann_speed as mas  # noqa: E402

import dreamjit as dj  # noqa: E402
import dreamjit.index.nndescent as nnd  # noqa: E402


def graph_pool(X, cache, name):
    graph = None
    path = os.path.join(cache, f"graph-{name}.npz") if cache else None
    if path and os.path.exists(path):
        with np.load(path) as f:
            skip = ("n_components", "settings", "calibration")
            graph = {k: f[k] for k in f.files if k not in skip}
            graph["n_components"] = int(f["n_components"])
            graph["settings"] = mas.json.loads(str(f["settings"]))
    pool = mas.common.ann_pool(X, graph=graph)
    if path and graph is None:
        g = pool.indexes.graph_arrays()
        g.pop("calibration", None)
        np.savez(path, **{**g, "settings": mas.json.dumps(g["settings"])})
    return pool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    WALK_EXACT_MIN_EF = nnd.WALK_EXACT_MIN_EF
    n = args.n
    X = mas.common.cluster_mixture(n, n // 100)
    Q = mas.common.cluster_mixture(200, n // 100, stream=2)
    pool = graph_pool(X, args.cache, f"clusters-{n}")
    ann = pool.indexes.ann
    store = pool.table.store
    walk_kernel = nnd.ann_search
    seen = {}

    def spy(*a):  # the beam the index chose (argument 6 of kernels.graph.ann_search)
        seen["ef"] = int(a[6])
        return walk_kernel(*a)

    nnd.ann_search = spy
    nnd.WALK_EXACT_MIN_EF = 1 << 40  # every query walks: the rule's data
    it = {"i": 0}

    def nxt():
        it["i"] = (it["i"] + 1) % Q.shape[0]
        return Q[it["i"]]

    print(
        f"n={n}, 1000 clusters-of-100 data, calibrated beam {ann.graph_info.get('beam')}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print("   k    ef   walk us  exact us  walk/exact")
    for k in (11, 40, 100, 200, 400, 800):
        ann.search(Q[0], k)
        ef = seen["ef"]
        fns = {
            "walk": lambda k=k: ann.search(nxt(), k),
            "exact": lambda k=k: nnd.exact_topk(store, nxt(), store.alive, k),
        }
        t = mas.race(fns, rounds=args.rounds)
        print(
            f"{k:4d} {ef:5d} {t['walk'] * 1e6:9.0f} {t['exact'] * 1e6:9.0f} "
            f"{t['walk'] / t['exact']:10.2f}"
        )
    nnd.WALK_EXACT_MIN_EF = WALK_EXACT_MIN_EF
    # a tie at the cut: 50 copies of one query among the entries
    D = X.copy()
    D[1000:1050] = Q[0]
    dup = graph_pool(D, args.cache, f"clusters-dup-{n}")
    sim = mas.SIM
    q0 = dj.Query(embedding=Q[0])
    q1 = dj.Query(embedding=Q[1])
    t = mas.race(
        {
            "tied query": lambda: dup.retrieve_soft(q0, k=10, weights=sim),
            "untied query": lambda: dup.retrieve_soft(q1, k=10, weights=sim),
        },
        rounds=args.rounds,
    )
    print(
        "retrieve_soft k=10 on the pool with 50 copies of the query: "
        f"tied {t['tied query'] * 1e6:.0f} us, "
        f"another query {t['untied query'] * 1e6:.0f} us; index in use {dup.stats()['index']}"
    )


if __name__ == "__main__":
    main()
