"""ANN against the pool's exact path, side by side (not a unit test).

Usage::

    python scripts/measure_ann_speed.py [--sizes 100000] [--data mixture,clusters] [--rounds 7]
        [--cache DIR] [--beam MIN_EF,EPSILON] [--no-hnsw]

For each size and data set (``mixture``: compare.py's 100-centre mixture;
``clusters``: asv's ``cluster_mixture`` with ``n / 100`` clusters; ``clusters10``: with
``n / 10``, the retrieval-quality issue's hard set at ``--sizes 200000``), one pool
answers through its NN-descent graph and one (same entries) exactly. Timed
interleaved with ``asv_bench/compare_data.race`` (median of rounds, one call
at a time): ``retrieve_soft`` (similarity-only weights, k=10) on both pools,
and the index searches alone (k=10 and k=40, the pool's candidate count).
Recall@10 against the exact top-10 (index, and pool ids). The ANN pool runs at the
defaults: its beam calibrated for the graph (``ann_min_ef=None``; the graph comes from the
cache without a calibration, so the pool calibrates it when it adopts the graph: the
calibration's beam, held-out recall and seconds are printed). ``--beam 62,0.15`` adds a third
pool on the same graph with ``ann_min_ef=62, ann_epsilon=0.15`` (the fixed default before
calibration). hnswlib (M=16, ef_construction=200, one thread; its index cached beside the
graph) runs in the same race at the smallest ``ef`` of ``HNSW_EFS`` (10 ... 384) whose
recall@10 reaches 0.95 (``--no-hnsw``: left out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "asv_bench"))
import dreamjit as dj  # noqa: E402

from compare_data import _mixture, _recall, _truth, race  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "_bench_common", os.path.join(ROOT, "asv_bench", "benchmarks", "common.py")
)
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)

SIM = dj.RetrievalWeights(alpha=1.0, beta=0.0, gamma=0.0, delta=0.0)
CACHE = None  # --cache DIR: graphs saved there are reused (no pynndescent run)
BEAM = None  # --beam MIN_EF,EPSILON: a third pool with those walk settings
HNSW = True  # --no-hnsw: False
HNSW_EFS = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384)


def hnsw_index(X, path):
    """hnswlib M=16, ef_construction=200 over ``X`` (ids = rows), one query thread; cached."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=X.shape[1])
    if path and os.path.exists(path):
        index.load_index(path, max_elements=X.shape[0])
    else:
        index.init_index(max_elements=X.shape[0], ef_construction=200, M=16, random_seed=0)
        index.add_items(X, np.arange(X.shape[0]))
        if path:
            index.save_index(path)
    index.set_num_threads(1)
    return index


def one(n, data, rounds):
    if data == "mixture":
        X, Q = _mixture(n), _mixture(1000, stream=2)
    else:  # clusters of ~100 rows, or ("clusters10") of ~10: 20000 clusters at 2e5
        c = n // (10 if data == "clusters10" else 100)
        X = common.cluster_mixture(n, c)
        Q = common.cluster_mixture(1000, c, stream=2)
    cache = os.path.join(CACHE, f"graph-{data}-{n}.npz") if CACHE else None
    graph = None
    if cache and os.path.exists(cache):  # a graph built by an earlier run (public import)
        with np.load(cache) as f:
            skip = ("n_components", "settings", "calibration")
            graph = {k: f[k] for k in f.files if k not in skip}
            graph["n_components"] = int(f["n_components"])
            graph["settings"] = json.loads(str(f["settings"]))
    t = time.perf_counter()
    ann_pool = common.ann_pool(X, graph=graph)
    build = time.perf_counter() - t
    if cache and graph is None:
        g = ann_pool.indexes.graph_arrays()
        g.pop("calibration", None)
        np.savez(cache, **{**g, "settings": json.dumps(g["settings"])})
    exact_pool = common.embedding_pool(X)
    ann = ann_pool.indexes.ann
    exact = exact_pool.indexes.exact
    truth = _truth(X, Q)
    queries = [dj.Query(embedding=q) for q in Q]
    r_index = _recall([ann.search(q, 10)[0] for q in Q], truth)
    r_pool = _recall([ann_pool.retrieve_soft(q, k=10, weights=SIM).ids for q in queries], truth)
    cal = ann.graph_info.get("calibration") or {}
    hnsw, hnsw_ef, r_hnsw = None, None, None
    if HNSW:
        hnsw = hnsw_index(X, cache[: -len(".npz")] + ".hnsw" if cache else None)
        for hnsw_ef in HNSW_EFS:
            hnsw.set_ef(max(hnsw_ef, 10))
            r_hnsw = _recall([hnsw.knn_query(q[None, :], k=10)[0][0] for q in Q], truth)
            if r_hnsw >= 0.95:
                break
    beam_pool = None
    if BEAM is not None:
        ef, eps = BEAM
        graph = ann_pool.indexes.graph_arrays()
        graph.pop("calibration", None)
        beam_pool = common.ann_pool(X, graph=graph, ann_min_ef=ef, ann_epsilon=eps)
        r_beam = _recall(
            [beam_pool.retrieve_soft(q, k=10, weights=SIM).ids for q in queries], truth
        )
    it = {"i": 0}

    def nxt():
        it["i"] = (it["i"] + 1) % Q.shape[0]
        return it["i"]

    fns = {
        "ann pool": lambda: ann_pool.retrieve_soft(queries[nxt()], k=10, weights=SIM),
        "exact pool": lambda: exact_pool.retrieve_soft(queries[nxt()], k=10, weights=SIM),
        "ann index k10": lambda: ann.search(Q[nxt()], 10),
        "exact index k10": lambda: exact.search(Q[nxt()], 10),
        "ann index k40": lambda: ann.search(Q[nxt()], 40),
    }
    if beam_pool is not None:
        fns["beam pool"] = lambda: beam_pool.retrieve_soft(queries[nxt()], k=10, weights=SIM)
    if hnsw is not None:
        fns["hnswlib"] = lambda: hnsw.knn_query(Q[nxt()][None, :], k=10)
    load = os.getloadavg()[0]
    t = race(fns, rounds=rounds)
    us = {k: v * 1e6 for k, v in t.items()}
    print(
        f"n={n} {data}: build {build:.0f} s; recall@10 index {r_index:.4f}, pool {r_pool:.4f}; "
        f"load {load:.1f} -> {os.getloadavg()[0]:.1f}\n"
        f"  calibrated beam {cal.get('beam')} (held-out recall@10 {cal.get('recall', 0):.4f} on "
        f"{cal.get('queries')} rows, {cal.get('seconds', 0):.2f} s); walk beam "
        f"{ann.graph_info.get('beam')}\n"
        f"  retrieve_soft: ann {us['ann pool']:.0f} us, exact {us['exact pool']:.0f} us "
        f"-> {us['exact pool'] / us['ann pool']:.1f}x\n"
        f"  index.search k=10: ann {us['ann index k10']:.0f} us, exact {us['exact index k10']:.0f}"
        f" us -> {us['exact index k10'] / us['ann index k10']:.1f}x; ann k=40 "
        f"{us['ann index k40']:.0f} us",
        flush=True,
    )
    if beam_pool is not None:
        print(
            f"  retrieve_soft with ann_min_ef={BEAM[0]}, ann_epsilon={BEAM[1]}: recall@10 "
            f"{r_beam:.4f}, {us['beam pool']:.0f} us -> {us['exact pool'] / us['beam pool']:.1f}x",
            flush=True,
        )
    if hnsw is not None:
        print(
            f"  hnswlib M=16 ef={hnsw_ef}: recall@10 {r_hnsw:.4f}, {us['hnswlib']:.0f} us; "
            f"exact pool / hnswlib {us['exact pool'] / us['hnswlib']:.1f}x, ann pool / hnswlib "
            f"{us['ann pool'] / us['hnswlib']:.1f}x",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--data", default="mixture,clusters")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cache", default=None, help="directory for built graphs (reused)")
    ap.add_argument("--beam", default=None, help="MIN_EF,EPSILON of a third pool")
    ap.add_argument("--no-hnsw", action="store_true", help="leave hnswlib out")
    args = ap.parse_args()
    global CACHE, BEAM, HNSW
    CACHE = args.cache
    HNSW = not args.no_hnsw
    if args.beam:
        ef, eps = args.beam.split(",")
        BEAM = (int(ef), float(eps))
    for n in [int(s) for s in args.sizes.split(",")]:
        for data in args.data.split(","):
            one(n, data, args.rounds)


if __name__ == "__main__":
    main()
