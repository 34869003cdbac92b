"""Cold and warm start: ``python -m dreamjit demo``, the README quickstart, the first retrieval.

Each measurement is a fresh interpreter. *Cold* runs get an empty ``NUMBA_CACHE_DIR``
(numba then neither reads nor writes the ``__pycache__`` beside the sources), so every
kernel a run needs compiles; *warm* runs reuse a cache directory filled by one earlier run.
With ``--src A --src B`` the runs of two source trees (e.g. a ``git archive`` of main and
this checkout) are interleaved, so both see the same machine load.

Reported per tree: the demo's wall time (cold), the README quickstart's (the first
```` ```python ```` block of README.md, run in a temporary directory; cold), and a warm
first-retrieval process (import, 64 tensors added, one ``retrieve_soft``) with the
``retrieve_soft`` call alone. ``--only floor``: what any numba library pays there, a
process that imports numba and calls one cached ``njit`` function, with and without
numba's entry points (rocket-fft's import).

Run: ``python scripts/measure_cold_start.py [--src PATH ...] [--repeat 1]
[--only demo,quickstart,warm,floor]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WARM_SCRIPT = """
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


# the floor under any numba library's first call with a warm cache: numba imported, one
# cached njit function called (numba's entry points run then: rocket-fft, which imports
# scipy.fft, and numba's own arraymath, which imports scipy.linalg.cython_blas); with
# NO_ENTRY_POINTS set the entry points are skipped (a measurement only: it shows what
# rocket-fft's import costs)
FLOOR_SCRIPT = """
import json, os, sys, time
t0 = time.perf_counter()
import numba
if os.environ.get("NO_ENTRY_POINTS"):
    from numba.core import dispatcher, entrypoints
    entrypoints.init_all = dispatcher.entrypoints.init_all = lambda: None
t1 = time.perf_counter()
@numba.njit(cache=True)
def plus_one(x):
    return x + 1
plus_one(1)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_call": t2 - t1, "total": t2 - t0,
                  "scipy_fft": "scipy.fft" in sys.modules}))
"""


def quickstart_code(src: str) -> str:
    with open(os.path.join(src, "README.md")) as fh:
        text = fh.read()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    if match is None:
        raise SystemExit(f"{src}/README.md has no python block")
    return match.group(1)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(src: str, argv: list[str], cache_dir: str, cwd: str) -> tuple[float, str]:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = cache_dir
    env["PYTHONPATH"] = src
    env.pop("NUMBA_DISABLE_JIT", None)
    t0, c0 = time.perf_counter(), _children_cpu()
    out = subprocess.run(
        [sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=1800
    )
    seconds = time.perf_counter() - t0
    CPU.append(_children_cpu() - c0)
    if out.returncode != 0:
        raise SystemExit(f"{argv[:2]} failed in {src}:\n{out.stderr[-3000:]}")
    return seconds, out.stdout


CPU: list[float] = []  # CPU seconds (user + system) of each run, in order


def cold(src: str, argv: list[str]) -> float:
    cache = tempfile.mkdtemp(prefix="dreamjit-cold-numba-")
    cwd = tempfile.mkdtemp(prefix="dreamjit-cold-cwd-")
    try:
        return run(src, argv, cache, cwd)[0]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(cwd, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="source tree(s); default: this checkout")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", default="demo,quickstart,warm")
    args = parser.parse_args()
    srcs = [os.path.abspath(s) for s in (args.src or [ROOT])]
    which = set(args.only.split(","))
    rows: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for src in srcs:
            if "demo" in which:
                rows.setdefault((src, "demo cold (s)"), []).append(
                    cold(src, ["-m", "dreamjit", "demo"])
                )
                rows.setdefault((src, "demo cold, cpu (s)"), []).append(CPU[-1])
            if "quickstart" in which:
                rows.setdefault((src, "quickstart cold (s)"), []).append(
                    cold(src, ["-c", quickstart_code(src)])
                )
                rows.setdefault((src, "quickstart cold, cpu (s)"), []).append(CPU[-1])
    if "warm" in which:
        for src in srcs:
            cache = tempfile.mkdtemp(prefix="dreamjit-warm-numba-")
            cwd = tempfile.mkdtemp(prefix="dreamjit-warm-cwd-")
            try:
                run(src, ["-c", WARM_SCRIPT], cache, cwd)  # fills the cache
                for _ in range(max(args.repeat, 3)):
                    out = json.loads(run(src, ["-c", WARM_SCRIPT], cache, cwd)[1].splitlines()[-1])
                    for key in ("total", "import", "add", "retrieve"):
                        rows.setdefault((src, f"warm first retrieval: {key} (s)"), []).append(
                            out[key]
                        )
                    rows.setdefault((src, "warm first retrieval: process cpu (s)"), []).append(
                        CPU[-1]
                    )
            finally:
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(cwd, ignore_errors=True)
    if "floor" in which:  # numba alone, with and without its entry points (rocket-fft)
        cache = tempfile.mkdtemp(prefix="dreamjit-floor-numba-")
        cwd = tempfile.mkdtemp(prefix="dreamjit-floor-cwd-")
        code = os.path.join(cwd, "floor.py")  # a file: numba caches functions of files only
        with open(code, "w") as fh:
            fh.write(FLOOR_SCRIPT)
        try:
            run(ROOT, [code], cache, cwd)  # fills the cache
            for _ in range(max(args.repeat, 3)):
                for label, flag in (("numba floor", ""), ("numba floor, no entry points", "1")):
                    os.environ["NO_ENTRY_POINTS"] = flag
                    out = json.loads(run(ROOT, [code], cache, cwd)[1].splitlines()[-1])
                    for key in ("total", "import", "first_call"):
                        rows.setdefault(("numba", f"{label}: {key} (s)"), []).append(out[key])
        finally:
            os.environ.pop("NO_ENTRY_POINTS", None)
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(cwd, ignore_errors=True)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    for (src, name), values in rows.items():
        shown = " ".join(f"{v:.2f}" for v in values)
        print(f"{src:30s} {name:36s} min {min(values):7.2f}  all {shown}")


if __name__ == "__main__":
    main()
