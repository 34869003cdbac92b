"""Throughput of a ShardedPool against one in-process DreamPool, and the merge overhead.

One LocalCluster (2 worker processes, 1 thread each) holds a 1-shard pool (one worker)
and a 2-shard pool (both workers); an in-process pool gets the same data. The three are
measured interleaved (batch by batch, query by query) so that machine load hits them
alike. Reported:

- add throughput: entries/s of ``add_batch`` in batches of ``--batch``;
- query throughput: ``retrieve_soft(k=10)`` and ``retrieve_similar(k=10)`` per second,
  one query at a time from one client (latency bound), and ``--clients`` client threads
  at once (throughput bound);
- merge overhead: the client-side merge alone (top candidates of the union by
  similarity, then the hybrid rerank kernel) timed on arrays of the merged size, and
  the round-trip overhead (1-shard latency minus in-process latency).

Run: ``python scripts/measure_distributed.py [--n 20000] [--batch 500] [--queries 200]``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
from distributed import Client, LocalCluster

import dreamjit as dj
from dreamjit._indexes import candidate_count
from dreamjit.distributed import ShardedPool
from dreamjit.kernels.hybrid import hybrid_rerank

SHAPE = (32, 32, 3)


def _concurrent(fn, queries, clients):
    """Queries per second with ``clients`` threads sharing the queries."""
    chunks = np.array_split(np.arange(len(queries)), clients)
    threads = [
        threading.Thread(target=lambda idx=idx: [fn(queries[i]) for i in idx]) for idx in chunks
    ]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(queries) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    cfg = dj.PoolConfig(
        max_size=args.n, seed=0, memory_budget_mb=None, ann_threshold=10**9, use_ann=False
    )
    rng = np.random.default_rng(0)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2)
        pools = {
            "in-process": dj.DreamPool(cfg),
            "sharded, 1 worker": ShardedPool(client, 1, cfg),
            "sharded, 2 workers": ShardedPool(client, 2, cfg),
        }
        warm = rng.random((8, *SHAPE), dtype=np.float32)
        for p in pools.values():  # compile kernels everywhere before timing
            p.add_batch(warm, np.tile([1.0, 0.9, 0.0], (8, 1)), only_coherent=False)
            p.retrieve_soft(warm[0], k=10)
            p.retrieve_similar(warm[0], k=10)
        t_add = dict.fromkeys(pools, 0.0)
        results = np.tile([1.0, 0.9, 0.0], (args.batch, 1))
        for _ in range(0, args.n - 8, args.batch):
            batch = rng.random((args.batch, *SHAPE), dtype=np.float32)
            for name, p in pools.items():
                t = time.perf_counter()
                p.add_batch(batch, results, only_coherent=False)
                t_add[name] += time.perf_counter() - t
        counts = {name: len(p) for name, p in pools.items()}
        queries = [dj.Query.from_tensor(q) for q in rng.random((args.queries, *SHAPE), np.float32)]
        chromas = rng.random((args.queries, 3)).astype(np.float32) + 0.01
        lat = {name: {"soft": [], "hard": []} for name in pools}
        for i in range(args.queries):
            for name, p in pools.items():
                t = time.perf_counter()
                p.retrieve_soft(queries[i], k=10)
                lat[name]["soft"].append(time.perf_counter() - t)
                t = time.perf_counter()
                p.retrieve_similar(chromas[i], k=10)
                lat[name]["hard"].append(time.perf_counter() - t)
        conc = dict.fromkeys(pools, 0.0)
        for name, p in pools.items():
            conc[name] = _concurrent(lambda q, p=p: p.retrieve_soft(q, k=10), queries, args.clients)
        # the client-side merge alone, on arrays of the merged size (2 shards' candidates)
        c = candidate_count(10, args.n)
        emb = rng.standard_normal((2 * c, cfg.embedding_dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        sims = rng.random(2 * c).astype(np.float32)
        gids = np.arange(2 * c, dtype=np.int64)
        util, labels = np.zeros(2 * c), np.full(2 * c, -1, np.int32)
        merge = []
        for _ in range(200):
            t = time.perf_counter()
            top = np.lexsort((gids, -sims.astype(np.float64)))[:c]
            top = top[np.argsort(gids[top], kind="stable")]
            hybrid_rerank(
                sims[top],
                util[top],
                labels[top],
                -1,
                np.ascontiguousarray(emb[top]),
                0.65,
                0.2,
                0.1,
                0.05,
                0.7,
                10,
            )
            merge.append(time.perf_counter() - t)
        for p in pools.values():
            if isinstance(p, ShardedPool):
                p.close()
    print(f"load average after: {os.getloadavg()}")
    print(
        f"\n{args.n} entries of {SHAPE} float32 (exact index), batches of {args.batch}, "
        f"{args.queries} queries, k=10\n"
    )
    print(
        "| pool | adds/s | soft queries/s (1 client) | soft median ms | hard median ms "
        f"| soft queries/s ({args.clients} client threads) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in pools:
        soft = np.median(lat[name]["soft"]) * 1e3
        hard = np.median(lat[name]["hard"]) * 1e3
        print(
            f"| {name} | {(counts[name] - 8) / t_add[name]:,.0f} | "
            f"{1e3 / soft:,.0f} | {soft:.2f} | {hard:.2f} | {conc[name]:,.0f} |"
        )
    base = np.median(lat["in-process"]["soft"])
    one = np.median(lat["sharded, 1 worker"]["soft"])
    print(
        f"\nclient-side merge (top {c} of {2 * c} candidates + hybrid rerank): "
        f"median {np.median(merge) * 1e3:.3f} ms"
    )
    print(
        f"round trip + merge overhead (1-shard soft minus in-process soft): "
        f"{(one - base) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
