"""Soak: stream many small adds into a pool under a memory budget.

Reports the maximum logical usage seen after any add (it must never pass the
budget) and the process RSS over time. ``python scripts/soak.py`` streams 1M
adds under 50 MB; ``--n 20000`` is the short version CI runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(
    n: int,
    budget_mb: float,
    shape=(8, 8, 3),
    batch: int = 1,
    seed: int = 0,
    report_every: int = 0,
    policy: str = "lowest_utility",
    progress=None,
) -> dict:
    import dreamjit as dj

    pool = dj.DreamPool(
        dj.PoolConfig(
            max_size=10_000_000,
            memory_budget_mb=budget_mb,
            eviction=policy,
            use_ann=False,
            seed=seed,
        )
    )
    budget = pool.config.budget_bytes
    rng = np.random.default_rng(seed)
    block = 4096  # draw random data in blocks: the stream itself stays cheap
    max_used = 0
    rss = []
    t0 = time.perf_counter()
    done = 0
    while done < n:
        m = min(block, n - done)
        tensors = rng.random((m, *shape), dtype=np.float32)
        coherence = rng.random(m)
        utilities = rng.random(m)
        for i in range(0, m, batch):
            j = min(i + batch, m)
            if batch == 1:
                pool.add(tensors[i], (0.0, coherence[i], 0.0), utility=float(utilities[i]))
            else:
                pool.add_batch(
                    tensors[i:j],
                    np.column_stack([np.zeros(j - i), coherence[i:j], np.zeros(j - i)]),
                    utilities=utilities[i:j],
                    only_coherent=False,
                )
            used = pool.used_bytes()
            if used > budget:
                raise AssertionError(f"used {used} bytes > budget {budget} after add {done + j}")
            max_used = max(max_used, used)
        done += m
        if report_every and done % report_every < block:
            rss.append((done, round(time.perf_counter() - t0, 2), round(rss_mb(), 1), len(pool)))
            if progress:  # a line as it goes, so a cut-short run still says something
                print(
                    f"adds={done} s={rss[-1][1]} rss_mb={rss[-1][2]} count={len(pool)} "
                    f"max_used_mb={max_used / 2**20:.3f}",
                    file=progress,
                    flush=True,
                )
    pool.check_invariants()
    return {
        "adds": n,
        "budget_mb": budget_mb,
        "max_used_mb": max_used / 2**20,
        "max_usage_ratio": max_used / budget,
        "final_count": len(pool),
        "evicted": pool.stats()["evicted"],
        "entry_bytes": pool.entry_bytes,
        "seconds": time.perf_counter() - t0,
        "rss_mb": rss or [(n, None, round(rss_mb(), 1), len(pool))],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--budget-mb", type=float, default=50.0)
    parser.add_argument("--batch", type=int, default=1, help="adds per call (1 = single add)")
    parser.add_argument("--report-every", type=int, default=100_000)
    args = parser.parse_args(argv)
    out = soak(
        args.n,
        args.budget_mb,
        batch=args.batch,
        report_every=args.report_every,
        progress=sys.stderr,
    )
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
