"""Out-of-core tensors: fill a pool with 5e5 tensors of 32x32x4x3 (24.6 GB of float32)
into ``tensor_store="mmap"`` and report the add rate, query latency and peak RSS.

The tensors are random float32 in [0, 1) (generated a batch at a time, never all in RAM);
each batch is added with fixed solver results (coherence 0.9), so the add rate is the
pool's (features, embedding, storage), not a solver's. Exact index (``use_ann=False``),
so the query latency is that of a full scan of the 5e5 embeddings. Before filling, the
free disk space at ``--path`` is checked against the tensor bytes (the script stops and
says so if there is not enough room). At the end the pool is sealed (``save``) and
reopened (``DreamPool.load``, which checks every row's CRC-32), and both are timed.

Run: ``python scripts/measure_out_of_core.py [--n 500000] [--batch 2000] [--path DIR]``.
The tensor file and sidecar are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time

import numpy as np

import dreamjit as dj

SHAPE = (32, 32, 4, 3)


def rss_mb() -> float:
    """Current resident set size (MiB) from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--path", default="/tmp/dreamjit-out-of-core")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    row = int(np.prod(SHAPE)) * 4
    need = args.n * row
    os.makedirs(args.path, exist_ok=True)
    free = shutil.disk_usage(args.path).free
    print(
        f"tensors: {args.n} x {SHAPE} float32 = {need / 1e9:.1f} GB; free at {args.path}: "
        f"{free / 1e9:.1f} GB",
        flush=True,
    )
    if free < need * 1.05:
        print("not enough free disk space: stopping")
        raise SystemExit(2)
    cfg = dj.PoolConfig(
        max_size=args.n,
        tensor_store="mmap",
        path=args.path,
        memory_budget_mb=None,
        use_ann=False,
        seed=0,
    )
    pool = dj.DreamPool(cfg)
    rng = np.random.default_rng(0)
    results = np.tile([1.0, 0.9, 0.0], (args.batch, 1))
    dj.warmup()
    t_add = 0.0
    done = 0
    t0 = time.perf_counter()
    while done < args.n:
        m = min(args.batch, args.n - done)
        batch = rng.random((m, *SHAPE), dtype=np.float32)
        t = time.perf_counter()
        pool.add_batch(batch, results[:m], only_coherent=False)
        t_add += time.perf_counter() - t
        done += m
        if done % (args.batch * 25) == 0 or done == args.n:
            print(
                f"{done:>7} entries  {done / t_add:8.0f} adds/s  RSS {rss_mb():7.0f} MiB  "
                f"peak {peak_rss_mb():7.0f} MiB  elapsed {time.perf_counter() - t0:6.0f} s",
                flush=True,
            )
    queries = rng.random((args.queries, *SHAPE), dtype=np.float32)
    lat = []
    for q in queries:
        t = time.perf_counter()
        pool.retrieve_soft(dj.Query.from_tensor(q), k=10)
        lat.append(time.perf_counter() - t)
    fetch = []
    for q in queries[:10]:
        t = time.perf_counter()
        pool.retrieve_soft(dj.Query.from_tensor(q), k=10).tensors()
        fetch.append(time.perf_counter() - t)
    ref = pool.retrieve_soft(dj.Query.from_tensor(queries[0]), k=10).ids.tolist()
    side = os.path.join(args.path, "sidecar.npz")
    t = time.perf_counter()
    pool.save(side)
    t_save = time.perf_counter() - t
    t = time.perf_counter()
    reopened = dj.DreamPool.load(side)
    t_load = time.perf_counter() - t
    same = reopened.retrieve_soft(dj.Query.from_tensor(queries[0]), k=10).ids.tolist()
    out = {
        "n": len(pool),
        "tensor_gb": need / 1e9,
        "add_rate_per_s": args.n / t_add,
        "query_ms_median": 1e3 * float(np.median(lat)),
        "query_ms_p95": 1e3 * float(np.percentile(lat, 95)),
        "query_plus_tensors_ms_median": 1e3 * float(np.median(fetch)),
        "save_s": t_save,
        "reopen_s": t_load,
        "reopen_same_answer": same == ref,
        "ram_mb": pool.memory_budget_stats()[0],
        "disk": pool.budget.disk_stats(),
        "peak_rss_mb": peak_rss_mb(),
        "total_s": time.perf_counter() - t0,
    }
    print(json.dumps(out, indent=1))
    if not args.keep:
        del pool, reopened
        shutil.rmtree(args.path, ignore_errors=True)


if __name__ == "__main__":
    main()
