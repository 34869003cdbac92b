"""Measure rebuild scheduling during and after a bulk fill (not a unit test).

Usage::

    python scripts/measure_rebuild.py [--n 200000] [--batch 5000] [--runs 2] [--no-queries]

A pool of user embeddings (default config: ``ann_threshold`` 50,000) is filled
with ``n`` vectors of a 2000-cluster mixture (d=64) in batches of ``batch``.
Run 1 starts in a fresh process (the build worker starts and compiles
pynndescent during the fill); later runs reuse the warm worker. After the fill
the script makes no pool call: it only reads the index state until at least
90 % of the live entries are graph rows, and reports how long that took
against the duration of the last build.

Unless ``--no-queries``, a thread queries all along (``retrieve_soft``, k=10,
plus the index search alone, under the read lock) and times each index search
against an exact scan of the pool taken right after it: the report gives the
ratio's percentiles for searches answered by the graph ("ann" mode) and by
the exact scan ("exact" mode: both timings are the same scan, so their ratio
is the machine's timing noise), and how many cost more than 1.5x the scan.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dreamjit as dj  # noqa: E402
import dreamjit.index.nndescent as index_mod  # noqa: E402
import dreamjit.index.worker as worker_mod  # noqa: E402
from dreamjit import Query  # noqa: E402


class BuildLog(logging.Handler):
    """Keeps (time, entries, seconds) of every finished build from the dreamjit log."""

    pattern = re.compile(r"NN-descent graph of (\d+) entries built in ([\d.]+) s")

    def __init__(self):
        super().__init__(logging.INFO)
        self.builds, self.lines = [], []

    def emit(self, record):
        msg = record.getMessage()
        self.lines.append((time.perf_counter(), msg))
        m = self.pattern.search(msg)
        if m:
            self.builds.append((time.perf_counter(), int(m.group(1)), float(m.group(2))))


def mixture(n, d=64, clusters=2000, seed=0):
    centres = np.random.default_rng(seed).normal(size=(clusters, d))
    rng = np.random.default_rng(seed + 1)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None


def coverage(pool):
    """(graph rows alive, delta, live entries), read without any pool call."""
    ann = pool.indexes.ann
    n_live = len(pool)
    if ann is None:
        return 0, 0, n_live
    rows = ann.graph_info.get("rows", 0) - ann.n_tombstones
    return rows, ann.n_delta, n_live


def run(V, Q, batch, queries, log):
    n = V.shape[0]
    pool = dj.DreamPool(dj.PoolConfig(max_size=n, memory_budget_mb=None, embedding_dim=V.shape[1]))
    tiny = np.zeros((batch, 1, 1, 3), np.float32)
    res = np.tile([0.0, 1.0, 0.0], (batch, 1))
    samples, stop = [], threading.Event()

    def query_loop():
        rng = np.random.default_rng(3)
        while not stop.is_set():
            q = Q[int(rng.integers(0, Q.shape[0]))]
            if len(pool) == 0:
                time.sleep(0.01)
                continue
            pool.retrieve_soft(Query(embedding=q), k=10)
            with pool.lock.read():
                t0 = time.perf_counter()
                pool.indexes.search(q, 40)
                t1 = time.perf_counter()
                pool.indexes.exact.search(q, 40)
                t2 = time.perf_counter()
                rows, delta, live = coverage(pool)
                graph_used = delta <= index_mod.DELTA_EXACT_SHARE * live
                mode = "ann" if pool.indexes.use_ann_now() and graph_used else "exact"
            samples.append((t1 - t0, t2 - t1, rows, delta, live, mode))

    qt = threading.Thread(target=query_loop, daemon=True)
    if queries:
        qt.start()
    n_builds0 = len(log.builds)
    t_start = time.perf_counter()
    for lo in range(0, n, batch):
        pool.add_batch(
            tiny[: min(batch, n - lo)], res[: min(batch, n - lo)], embeddings=V[lo : lo + batch]
        )
    t_fill = time.perf_counter()
    state_at_fill = coverage(pool)
    t_covered = None
    deadline = t_fill + 1800
    while time.perf_counter() < deadline:
        rows, delta, live = coverage(pool)
        if rows >= 0.9 * live and t_covered is None:
            t_covered = time.perf_counter()
            break
        time.sleep(0.05)
    # let the queries see the covered state a little, then stop them
    if queries:
        t_end = time.perf_counter() + 3.0
        while time.perf_counter() < t_end:
            time.sleep(0.1)
        stop.set()
        qt.join(60)
    builds = [(round(t - t_start, 1), m, s) for t, m, s in log.builds[n_builds0:]]
    out = {
        "fill_s": round(t_fill - t_start, 1),
        "state_at_fill_end": state_at_fill,
        "covered_after_fill_s": None if t_covered is None else round(t_covered - t_fill, 1),
        "final_state": coverage(pool),
        "builds (t from start, entries, s)": builds,
        "last_build_s": builds[-1][2] if builds else None,
    }
    if t_covered is not None and builds:
        out["covered within last build + 10 s"] = t_covered - t_fill <= builds[-1][2] + 10
    if samples:
        a = np.array([(s[0], s[1]) for s in samples])
        ratio = a[:, 0] / a[:, 1]
        modes = np.array([s[5] for s in samples])
        out["queries"] = len(samples)
        out["search_ms p50/p99/max"] = [
            round(float(np.percentile(a[:, 0], p)) * 1e3, 2) for p in (50, 99, 100)
        ]
        out["exact_ms p50/p99/max"] = [
            round(float(np.percentile(a[:, 1], p)) * 1e3, 2) for p in (50, 99, 100)
        ]
        for mode in ("ann", "exact"):
            sel = modes == mode
            if sel.any():
                r = ratio[sel]
                out[f"{mode}-mode searches: n, ratio p50/p90/p99/max, n over 1.5x"] = (
                    int(sel.sum()),
                    [round(float(np.percentile(r, p)), 2) for p in (50, 90, 99, 100)],
                    int((r > 1.5).sum()),
                )
        ann_delta = (modes == "ann") & np.array([s[3] > 0 for s in samples])
        if ann_delta.any():
            out["ann-mode with a delta: n, search ms p50, exact ms p50"] = (
                int(ann_delta.sum()),
                round(float(np.median(a[ann_delta, 0])) * 1e3, 2),
                round(float(np.median(a[ann_delta, 1])) * 1e3, 2),
            )
        big = np.array([s[3] > s[2] for s in samples])  # delta larger than the graph
        out["searches while delta > graph rows: n, modes"] = (
            int(big.sum()),
            sorted(set(modes[big].tolist())),
        )
    return out, pool


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-queries", action="store_true")
    args = ap.parse_args(argv)
    log = BuildLog()
    logger = logging.getLogger("dreamjit")
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    V, Q = mixture(args.n), mixture(500, seed=7)
    for r in range(args.runs):
        out, pool = run(V, Q, args.batch, not args.no_queries, log)
        worker = worker_mod._Worker._instance
        out["worker_rss_mb"] = None if worker is None else rss_mb(worker.proc.pid)
        print(f"run {r + 1} ({'fresh process' if r == 0 else 'warm worker'}):", flush=True)
        for key, value in out.items():
            print(f"  {key}: {value}", flush=True)
        del pool
    starts = [round(t, 1) for t, msg in log.lines if "started NN-descent build worker" in msg]
    print("worker starts (perf_counter s):", starts)


if __name__ == "__main__":
    main()
