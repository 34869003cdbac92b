"""Start-up costs, each measured in fresh interpreters (``track_*`` return seconds).

* ``track_import_seconds``: ``import dreamjit`` timed inside a fresh process
  (median of 5 processes). Target (issue 4): <= 0.5 s.
* ``track_first_retrieval_warm_seconds``: a fresh process with a warm numba
  cache, from its first line to the first ``retrieve_soft`` answer: import
  dreamjit, make 64 random 32x32x4x3 tensors, ``add_batch`` them (loads the
  describe/embed kernels), ``retrieve_soft`` (loads the index and rerank
  kernels). Median of 5. Target: <= 1.5 s. ``..._call_seconds`` is the
  ``retrieve_soft`` call alone.
* ``track_cold_*``: the same with an empty ``NUMBA_CACHE_DIR`` (every kernel
  compiles): the first-retrieval script, and ``import dreamjit; dj.warmup()``
  (compiles every kernel). One process each.

The warm cache is a private ``NUMBA_CACHE_DIR`` filled by one run of the
script in ``setup``, so results do not depend on the source tree's
``__pycache__``. Skipped in tiny mode (``DREAMJIT_BENCH_SUBPROCESS=1`` runs them).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from .common import memo, require_subprocess

IMPORT_SCRIPT = """
import json, time
t0 = time.perf_counter()
import dreamjit
print(json.dumps({"import": time.perf_counter() - t0}))
"""

FIRST_RETRIEVAL_SCRIPT = """
import json, time
t0 = time.perf_counter()
import numpy as np
import dreamjit as dj
t_import = time.perf_counter()
rng = np.random.default_rng(0)
tensors = (0.5 + 0.1 * rng.standard_normal((64, 32, 32, 4, 3))).clip(0, 1).astype(np.float32)
results = np.tile([1.0, 1.0, 0.0], (64, 1))
pool = dj.DreamPool(dj.PoolConfig(max_size=1000, seed=0))
t_data = time.perf_counter()
pool.add_batch(tensors, results, labels=list(range(64)), only_coherent=False)
t_add = time.perf_counter()
hits = pool.retrieve_soft(tensors[0], k=3)
t_end = time.perf_counter()
assert len(hits) == 3
print(json.dumps({"import": t_import - t0, "add": t_add - t_data,
                  "retrieve": t_end - t_add, "total": t_end - t0}))
"""

WARMUP_SCRIPT = """
import json, time
t0 = time.perf_counter()
import dreamjit as dj
dj.warmup()
print(json.dumps({"total": time.perf_counter() - t0}))
"""


def _run(script: str, cache_dir: str, timeout: float = 900) -> dict:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = cache_dir
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(script: str, cache_dir: str, key: str, runs: int = 5) -> float:
    return float(np.median([_run(script, cache_dir)[key] for _ in range(runs)]))


def _warm_cache_dir() -> str:
    path = tempfile.mkdtemp(prefix="dreamjit-bench-numba-")
    atexit.register(shutil.rmtree, path, True)
    _run(FIRST_RETRIEVAL_SCRIPT, path)  # compiles once; later processes load
    return path


class Startup:
    timeout = 1800

    def setup(self):
        require_subprocess()
        self.warm = memo(("Startup.warm",), _warm_cache_dir)

    def track_import_seconds(self):
        return _median(IMPORT_SCRIPT, self.warm, "import")

    track_import_seconds.unit = "seconds"

    def track_first_retrieval_warm_seconds(self):
        return _median(FIRST_RETRIEVAL_SCRIPT, self.warm, "total")

    track_first_retrieval_warm_seconds.unit = "seconds"

    def track_first_retrieval_warm_call_seconds(self):
        return _median(FIRST_RETRIEVAL_SCRIPT, self.warm, "retrieve")

    track_first_retrieval_warm_call_seconds.unit = "seconds"

    def track_cold_first_retrieval_seconds(self):
        cold = tempfile.mkdtemp(prefix="dreamjit-bench-numba-cold-")
        try:
            return float(_run(FIRST_RETRIEVAL_SCRIPT, cold)["total"])
        finally:
            shutil.rmtree(cold, ignore_errors=True)

    track_cold_first_retrieval_seconds.unit = "seconds"

    def track_cold_warmup_seconds(self):
        """``import dreamjit; dj.warmup()`` with an empty cache: every kernel compiles."""
        cold = tempfile.mkdtemp(prefix="dreamjit-bench-numba-cold-")
        try:
            return float(_run(WARMUP_SCRIPT, cold)["total"])
        finally:
            shutil.rmtree(cold, ignore_errors=True)

    track_cold_warmup_seconds.unit = "seconds"
