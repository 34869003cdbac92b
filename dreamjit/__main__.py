"""Command line: ``python -m dreamjit demo|inspect``.

The comparison with peers lives outside the package: ``python asv_bench/compare.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _table(rows, headers) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def demo(n: int = 2000, seed: int = 0, k: int = 3) -> int:
    t_start = time.perf_counter()
    import dreamjit as dj
    from dreamjit.synthetic import NAMED_COLOURS, smooth_tensors

    t_import = time.perf_counter() - t_start
    timings = [("import dreamjit", t_import)]

    # no dj.warmup(): each step compiles (or loads from numba's cache) only the kernels it
    # calls, so the first run after an install compiles what the demo needs and no more
    t0 = time.perf_counter()
    tensors = smooth_tensors(n, shape=(32, 32, 4, 3), seed=seed)
    timings.append((f"make {n} tensors 32x32x4x3", time.perf_counter() - t0))

    t0 = time.perf_counter()
    results = dj.evaluate_batch(tensors)
    timings.append((f"dj.evaluate_batch ({n} tensors)", time.perf_counter() - t0))

    pool = dj.DreamPool(dj.PoolConfig(max_size=max(n // 4, 1), seed=seed))
    labels = (np.arange(n) % 4).tolist()
    t0 = time.perf_counter()
    ids = pool.add_batch(tensors, results, labels=labels, only_coherent=True)
    dt = time.perf_counter() - t0
    timings.append((f"add_batch ({n} offered, {len(ids)} stored)", dt))

    print(f"dreamjit {dj.__version__} demo: n={n}, seed={seed}")
    coherent = int((results[:, 1] >= pool.config.coherence_threshold).sum())
    print(
        f"{coherent} of {n} tensors reach coherence >= {pool.config.coherence_threshold}; "
        f"the pool keeps {len(pool)} (max_size={pool.config.max_size}, eviction='oldest')\n"
    )

    rows = []
    t0 = time.perf_counter()
    for name, rgb in NAMED_COLOURS.items():
        hits = pool.retrieve_similar(np.array(rgb, np.float32), k=k)
        for rank, (eid, score) in enumerate(hits):
            e = pool[eid]
            rows.append(
                (
                    name if rank == 0 else "",
                    rank + 1,
                    eid,
                    f"{score:.4f}",
                    " ".join(f"{c:.2f}" for c in e.chroma),
                    f"{e.result.coherence:.3f}",
                    f"{e.result.energy:.1f}",
                    e.label,
                )
            )
    timings.append((f"retrieve_similar x {len(NAMED_COLOURS)}", time.perf_counter() - t0))
    print("Hard retrieval (cosine on chroma signatures):")
    print(
        _table(
            rows,
            ["query", "rank", "id", "cosine", "chroma (r g b)", "coherence", "energy", "label"],
        )
    )

    st = pool.stats()
    print("\nPool stats:")
    print(
        _table(
            [
                (key, st[key] if not isinstance(st[key], float) else f"{st[key]:.4f}")
                for key in (
                    "count",
                    "evicted",
                    "capacity",
                    "mean_energy",
                    "mean_coherence",
                    "mean_violation",
                    "label_counts",
                    "entry_bytes",
                    "bytes_used",
                )
            ],
            ["stat", "value"],
        )
    )
    cur, mx, ratio, count = pool.memory_budget_stats()
    print(f"\nMemory budget: {cur:.2f} MiB of {mx} MiB used ({ratio:.2%}), {count} entries")
    print("\nTimings:")
    print(_table([(name, f"{sec * 1e3:.1f} ms") for name, sec in timings], ["step", "time"]))
    print(f"\ntotal {time.perf_counter() - t_start:.2f} s")
    return 0


def inspect(path: str) -> int:
    from dreamjit.errors import DreamError
    from dreamjit.io import read_header

    try:
        header = read_header(path)
    except (DreamError, OSError) as exc:
        print(f"{path}: integrity FAILED: {exc}")
        return 1
    cfg = header["config"]
    rows = [
        ("format_version", header["format_version"]),
        ("entries", header["count"]),
        ("next_id", header["next_id"]),
        ("evicted so far", header["evicted"]),
        ("tensor_shape", header["tensor_shape"]),
        ("embedding_mode", header["embedding_mode"]),
        ("arrays checked", len(header["checksums"])),
        ("header sha256", header.get("header_sha256", "")[:16] + "..."),
        ("integrity", header["integrity"]),
    ]
    rows += [(f"config.{key}", value) for key, value in sorted(cfg.items())]
    print(f"{path}")
    print(_table(rows, ["field", "value"]))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamjit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="build a pool of synthetic dreams and retrieve from it")
    p_demo.add_argument("--n", type=int, default=2000, help="tensors to generate (default 2000)")
    p_demo.add_argument("--seed", type=int, default=0, help="the one seed (default 0)")
    p_demo.add_argument("--k", type=int, default=3, help="hits per query (default 3)")
    p_inspect = sub.add_parser("inspect", help="print a saved pool's header, counts and integrity")
    p_inspect.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        return inspect(args.file)
    if args.command == "demo":
        if args.n < 1:
            parser.error("--n must be >= 1")
        return demo(args.n, args.seed, args.k)
    return 2


if __name__ == "__main__":
    sys.exit(main())
