"""Numbers for the foundation: add_batch rate, spectral batch vs numpy, hard-retrieval
latency at 10K entries, import time in a fresh process, demo wall time.

Run from the repo root: ``python scripts/measure_foundation.py``. Timings are
medians (and minimums) of interleaved repeats, after warm-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def timeit(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def main():
    import dreamjit as dj
    from dreamjit.synthetic import smooth_tensors

    from reference_features import spectral_batch_numpy

    dj.warmup(shape=(32, 32, 4, 3))
    rows = []

    t = smooth_tensors(2000, shape=(32, 32, 4, 3), seed=0)
    r = dj.evaluate_batch(t)

    def fill():
        pool = dj.DreamPool(dj.PoolConfig(max_size=5000, memory_budget_mb=500, use_ann=False))
        pool.add_batch(t, r, only_coherent=False)

    med, best = timeit(fill, 5)
    rows.append(
        (
            "add_batch 2000 x 32x32x4x3 (features, embeddings, budget)",
            f"{2000 / med:,.0f} tensors/s (best {2000 / best:,.0f})",
        )
    )

    def fill_evicting():
        pool = dj.DreamPool(
            dj.PoolConfig(
                max_size=500, memory_budget_mb=10, use_ann=False, eviction="lowest_coherence"
            )
        )
        pool.add_batch(t, r, only_coherent=False)

    med, best = timeit(fill_evicting, 5)
    rows.append(("add_batch 2000 into a 10 MB budget (evicting)", f"{2000 / med:,.0f} tensors/s"))

    t1000 = t[:1000]
    k_med, k_best = timeit(lambda: dj.spectral_features_batch(t1000))
    n_med, n_best = timeit(lambda: spectral_batch_numpy(t1000), 5)
    rows.append(
        (
            "spectral_features_batch 1000 x 32x32x4x3",
            f"{k_med * 1e3:.1f} ms vs numpy/scipy {n_med * 1e3:.1f} ms = {n_med / k_med:.1f}x "
            f"(best {n_best / k_best:.1f}x)",
        )
    )
    e_med, _ = timeit(lambda: dj.evaluate_batch(t1000), 5)
    rows.append(("evaluate_batch 1000", f"{e_med * 1e3:.1f} ms"))

    rng = np.random.default_rng(0)
    small = rng.random((10_000, 4, 4, 3), dtype=np.float32)
    pool = dj.DreamPool(dj.PoolConfig(max_size=10_000, memory_budget_mb=None, use_ann=False))
    pool.add_batch(
        small, np.tile([0.0, 0.9, 0.0], (10_000, 1)), labels=list(np.arange(10_000) % 10)
    )
    q = np.array([0.8, 0.3, 0.2], np.float32)
    med, best = timeit(lambda: pool.retrieve_similar(q, k=10), 50)
    rows.append(
        ("retrieve_similar k=10 at 10K entries", f"{med * 1e6:.0f} us (best {best * 1e6:.0f} us)")
    )
    med, best = timeit(lambda: pool.retrieve_similar(q, k=10, label=3), 50)
    rows.append(("retrieve_similar k=10, label filter, 10K", f"{med * 1e6:.0f} us"))
    med, best = timeit(lambda: pool.retrieve_soft(q, k=10), 50)
    rows.append(("retrieve_soft k=10 at 10K entries (exact index)", f"{med * 1e6:.0f} us"))

    imports = []
    for _ in range(5):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import time; t=time.perf_counter(); import dreamjit; print(time.perf_counter()-t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        imports.append(float(out.stdout))
    rows.append(
        (
            "import dreamjit, fresh process",
            f"median {np.median(imports):.3f} s (min {min(imports):.3f} s)",
        )
    )
    first = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import time; t=time.perf_counter(); import numpy as np, dreamjit as dj; "
                "p=dj.DreamPool(dj.PoolConfig(use_ann=False)); "
                "p.add_batch(np.random.default_rng(0).random((50,32,32,4,3),dtype=np.float32), "
                "only_coherent=False); "
                "p.retrieve_soft([0.5,0.4,0.3], k=3); print(time.perf_counter()-t)"
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows.append(
        (
            "fresh process: import + add_batch + first retrieve_soft (warm cache)",
            f"{float(first.stdout):.2f} s",
        )
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dreamjit", "demo"], capture_output=True, check=True)
    rows.append(
        ("python -m dreamjit demo (default n=2000), wall", f"{time.perf_counter() - t0:.2f} s")
    )

    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a.ljust(width)}  {b}")


if __name__ == "__main__":
    main()
