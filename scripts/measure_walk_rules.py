"""Stopping rules for the graph walk: recall@10 against work done, per data set (not a unit test).

Usage::

    python scripts/measure_walk_rules.py --cache DIR [--data mixture,clusters,c20000]
        RULE [RULE ...]

A RULE is ``EF,EPSILON,MODE,PATIENCE,ARG`` (``MODE`` 0: the library's rule, ARG unused;
1: the library's rule plus a per-query stop once the top 10 has not changed for
PATIENCE expansions and the best candidate is farther than ``1 + ARG`` times the
10th best distance; 2: two phases, a small beam of ARG rows first, then the full
beam EF only if the top 10 changed within the last PATIENCE expansions).

For each data set: ``mixture`` (compare.py's 100-centre mixture, 1e5 rows),
``clusters`` (asv's ``cluster_mixture``, 1e5 rows in 1000 clusters) and ``c20000``
(2e5 rows in 20000 clusters, the retrieval-quality issue's hardest set), 1000
queries (stream 2), k=10. The graph is read from ``DIR/graph-{mixture,clusters}-100000.npz``
/ ``DIR/graph-c20000-200000.npz`` as ``measure_ann_speed.py --cache DIR`` writes them
(ids must be 0..n-1); a missing graph is built (pynndescent, minutes) and saved.
Prints recall@10, mean expansions and mean distance evaluations per query, the work
that does not depend on the machine's load, and a time per query that does.

The walk here is a copy of :func:`dreamjit.kernels.graph._walk_into` without masks,
tombstones, delta or prefetch, so rules can be compared without touching the library.
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

from dreamjit.kernels._jit import kernel  # noqa: E402
from dreamjit.kernels.graph import _nav_scores, _quantize_query, _scan_block  # noqa: E402
from dreamjit.kernels.heap import heap_offer, heap_pop, heap_push  # noqa: E402

from compare_data import _mixture, _recall, _truth  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "_bench_common", os.path.join(ROOT, "asv_bench", "benchmarks", "common.py")
)
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)


@kernel
def _nav_int8(X8, rows, m, q16, inv, out):
    """``out[t] ~ dot(X[rows[t]], q)`` from the int8 row-major copy (int32 sums, scaled)."""
    d = q16.shape[0]
    for t in range(m):
        x = X8[rows[t]]
        s = np.int32(0)
        for j in range(d):
            s += np.int32(np.int16(x[j]) * q16[j])
        out[t] = np.float32(s) * inv


@kernel
def quantize_rows(X):
    """int8 row-major copy ``round(127 * X / max|X|)`` and its scale ``127 / max|X|``."""
    n, d = X.shape
    top = 0.0
    for i in range(n):
        for j in range(d):
            top = max(top, abs(np.float64(X[i, j])))
    scale = 127.0 / top if top > 0.0 else 0.0
    out = np.empty((n, d), dtype=np.int8)
    for i in range(n):
        for j in range(d):
            out[i, j] = np.int8(np.rint(X[i, j] * scale))
    return out, scale


@kernel
def walk(
    X, X8, qscale, indptr, indices, entries, block, q, k, ef, epsilon, n_seeds, mode, patience, arg
):
    """Top-k rows of one query under a stopping rule; ``(rows, expansions, distances)``.

    ``X8`` (n, d) int8 (empty: navigate on ``X``) with scale ``qscale``: navigation
    scores from the int8 copy (a quarter of the bytes per row), the beam rescored on ``X``.
    """
    n = indptr.shape[0] - 1
    d = q.shape[0]
    one = np.float32(1.0)
    scale = np.float32(1.0 + epsilon)
    scale_k = np.float32(1.0 + arg)
    ef = max(ef, k)
    small = max(k, int(arg)) if mode == 2 else k
    q16 = np.empty(d, dtype=np.int16)
    _quantize_query(q, q16)
    use8 = X8.shape[0] > 0
    qtop = 0.0
    for j in range(d):
        qtop = max(qtop, abs(np.float64(q[j])))
    inv = np.float32(qtop / 127.0 / qscale) if use8 and qtop > 0.0 else np.float32(0.0)
    ne = entries.shape[0]
    es = np.empty(ne, dtype=np.int32)
    _scan_block(block, q16, es)
    n_seeds = min(max(n_seeds, 1), ne)
    ss = np.empty(n_seeds, dtype=np.int32)
    si = np.empty(n_seeds, dtype=np.int64)
    ssize = 0
    for e in range(ne):
        if ssize < n_seeds or es[e] >= ss[0]:
            ssize = heap_offer(ss, si, ssize, es[e], entries[e])
    seed_sc = np.empty(ssize, dtype=np.float32)
    if use8:
        _nav_int8(X8, si, ssize, q16, inv, seed_sc)
    else:
        _nav_scores(X, si, ssize, q, seed_sc)
    rs = np.empty(ef, dtype=np.float32)  # the beam
    ri = np.empty(ef, dtype=np.int64)
    rsize = 0
    ks = np.empty(k, dtype=np.float32)  # the top k
    ki = np.empty(k, dtype=np.int64)
    ksize = 0
    bs = np.empty(small, dtype=np.float32)  # mode 2: the small beam
    bi = np.empty(small, dtype=np.int64)
    bsize = 0
    phase = 1
    bits = np.zeros((n >> 3) + 1, dtype=np.uint8)
    cs = np.empty(max(64, 2 * ef), dtype=np.float32)
    ci = np.empty(cs.shape[0], dtype=np.int64)
    csize = 0
    for t in range(ssize):
        r = si[t]
        bits[r >> 3] |= np.uint8(1 << (r & 7))
        cs, ci, csize = heap_push(cs, ci, csize, -seed_sc[t], r)
        rsize = heap_offer(rs, ri, rsize, seed_sc[t], r)
        ksize = heap_offer(ks, ki, ksize, seed_sc[t], r)
        bsize = heap_offer(bs, bi, bsize, seed_sc[t], r)
    buf = np.empty(64, dtype=np.int64)
    sc = np.empty(64, dtype=np.float32)
    n_exp = 0
    n_dist = 0
    stale = 0  # expansions since the top k last changed
    while csize > 0:
        s = -cs[0]
        r = ci[0]
        if mode == 2 and phase == 1 and bsize == small and one - s > scale * (one - bs[0]):
            if stale >= patience:
                break
            phase = 2
        csize = heap_pop(cs, ci, csize)
        if rsize == ef and one - s > scale * (one - rs[0]):
            break
        if mode == 1 and ksize == k and stale >= patience and one - s > scale_k * (one - ks[0]):
            break
        n_exp += 1
        stale += 1
        lo = indptr[r]
        hi = indptr[r + 1]
        if hi - lo > buf.shape[0]:
            buf = np.empty(hi - lo, dtype=np.int64)
            sc = np.empty(hi - lo, dtype=np.float32)
        m = 0
        for e in range(lo, hi):
            v = indices[e]
            w = v >> 3
            bit = np.uint8(1 << (v & 7))
            if bits[w] & bit:
                continue
            bits[w] |= bit
            buf[m] = v
            m += 1
        n_dist += m
        if use8:
            _nav_int8(X8, buf, m, q16, inv, sc)
        else:
            _nav_scores(X, buf, m, q, sc)
        for t in range(m):
            sv = sc[t]
            if rsize < ef or one - sv <= scale * (one - rs[0]):
                v = buf[t]
                cs, ci, csize = heap_push(cs, ci, csize, -sv, v)
                if rsize < ef or sv >= rs[0]:
                    rsize = heap_offer(rs, ri, rsize, sv, v)
                if bsize < small or sv > bs[0]:
                    bsize = heap_offer(bs, bi, bsize, sv, v)
                if ksize < k or sv > ks[0]:
                    ksize = heap_offer(ks, ki, ksize, sv, v)
                    stale = 0
    fs = np.empty(k, dtype=np.float64)  # exact scores of the beam, best k
    fi = np.empty(k, dtype=np.int64)
    fsize = 0
    for t in range(rsize):
        x = X[ri[t]]
        acc = 0.0
        for j in range(d):
            acc += np.float64(x[j]) * np.float64(q[j])
        fsize = heap_offer(fs, fi, fsize, acc, ri[t])
    return fi[:fsize].copy(), n_exp, n_dist


def load(data, cache):
    if data == "mixture":
        n, X, Q = 100_000, _mixture(100_000), _mixture(1000, stream=2)
    elif data == "clusters":
        n = 100_000
        X, Q = common.cluster_mixture(n, 1000), common.cluster_mixture(1000, 1000, stream=2)
    else:
        n = 200_000
        X, Q = common.cluster_mixture(n, 20_000), common.cluster_mixture(1000, 20_000, stream=2)
    path = os.path.join(cache, f"graph-{data}-{n}.npz")
    if not os.path.exists(path):
        g = common.ann_pool(X).indexes.graph_arrays()
        np.savez(path, **{**g, "settings": json.dumps(g["settings"])})
    with np.load(path) as g:
        if not (g["ids"] == np.arange(n)).all():
            raise SystemExit(f"{path}: ids are not 0..{n - 1}")
        return X, Q, g["indptr"], g["indices"], g["entries"], np.ascontiguousarray(g["block"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True, help="directory of built graphs (reused)")
    ap.add_argument("--data", default="mixture,clusters,c20000")
    ap.add_argument("--seeds", type=int, default=8, help="walk seeds (the index's n_seeds)")
    ap.add_argument("--int8", action="store_true", help="also each rule navigating on int8 rows")
    ap.add_argument("--reps", type=int, default=1, help="timed passes (interleaved, median)")
    ap.add_argument("rules", nargs="+", help="EF,EPSILON,MODE,PATIENCE,ARG")
    args = ap.parse_args()
    rules = []
    for r in args.rules:
        ef, eps, mode, pat, arg = r.split(",")
        rules.append((r, int(ef), float(eps), int(mode), int(pat), float(arg)))
    for data in args.data.split(","):
        X, Q, indptr, indices, entries, block = load(data, args.cache)
        truth = _truth(X, Q)
        X8, qscale = quantize_rows(X) if args.int8 else (np.empty((0, X.shape[1]), np.int8), 1.0)
        navs = [("f32", np.empty((0, X.shape[1]), np.int8))] + ([("int8", X8)] if args.int8 else [])
        runs = [
            (name, nav, a8, (10, ef, eps, args.seeds, mode, pat, arg))
            for name, ef, eps, mode, pat, arg in rules
            for nav, a8 in navs
        ]
        times = {i: [] for i in range(len(runs))}
        stats = {}
        for _rep in range(args.reps):
            for i, (_name, _nav, a8, a) in enumerate(runs):
                walk(X, a8, qscale, indptr, indices, entries, block, Q[0], *a)
                got, n_exp, n_dist = [], 0, 0
                t = time.perf_counter()
                for q in Q:
                    rows, e, dd = walk(X, a8, qscale, indptr, indices, entries, block, q, *a)
                    got.append(rows)
                    n_exp += e
                    n_dist += dd
                times[i].append((time.perf_counter() - t) / Q.shape[0] * 1e6)
                stats[i] = (_recall(got, truth), n_exp / Q.shape[0], n_dist / Q.shape[0])
        for i, (name, nav, _, _) in enumerate(runs):
            r, e, dd = stats[i]
            print(
                f"{data:9s} {name:22s} {nav:4s} recall@10 {r:.4f}  expansions {e:6.1f}  "
                f"distances {dd:6.0f}  {np.median(times[i]):5.0f} us",
                flush=True,
            )


if __name__ == "__main__":
    main()
