"""Spectral batch and ``add_batch`` with both cores free and with a busy neighbour.

The measurements are the asv benchmarks' own (``asv_bench/benchmarks/bench_spectral.py``
``SpectralBatch``: 1000 tensors 32x32x4x3 against the numpy/scipy peer;
``bench_add.py`` ``AddBatch``: batches of 1000 into a pool at its budget). Each source
tree (``--src``, default this checkout) gets one long-lived worker process that builds
the data and loads the kernels once; then, for every round, each worker measures once
with both cores free and once while a *neighbour* (a child process spinning on one core,
started by this script, which waits for its "ready" line, and stopped after) keeps a
core busy. Trees and conditions are interleaved, so all of them see the same machine.

Reported per tree and condition: the medians over rounds of the spectral batch time,
the numpy/scipy peer's time and their ratio (target >= 8x), and ``add_batch``
tensors/s (target >= 20K/s).

Run: ``python scripts/measure_busy_neighbour.py [--src PATH ...] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SPIN = "import sys\nprint('ready', flush=True)\nwhile True:\n    pass\n"

WORKER = r"""
import json, sys, time
sys.path.append(sys.argv[1])  # this checkout's asv_bench; dreamjit comes from PYTHONPATH
import numpy as np
import dreamjit
from asv_bench.benchmarks.bench_add import AddBatch
from asv_bench.benchmarks.bench_spectral import SpectralBatch
from asv_bench.benchmarks.common import median_seconds

spec = SpectralBatch(); spec.setup()
add = AddBatch(); add.setup()
for _ in range(3):
    spec.time_dreamjit(); spec.time_numpy(); add.time_add_batch()
print(json.dumps({"ready": dreamjit.__file__}), flush=True)
for line in sys.stdin:
    ours = median_seconds(spec.time_dreamjit, repeat=7)
    peer = median_seconds(spec.time_numpy, repeat=3)
    add_s = median_seconds(add.time_add_batch, repeat=7)
    n_add = len(add.T)
    print(json.dumps({"spectral": ours, "numpy": peer, "add_per_s": n_add / add_s}), flush=True)
"""


def start_worker(src: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=src)
    env.pop("NUMBA_DISABLE_JIT", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, ROOT],
        env=env,
        cwd=src,  # `python -c` puts the working directory first on sys.path
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    print(f"worker for {src}: dreamjit from {ready['ready']}", flush=True)
    return proc


def measure(proc: subprocess.Popen) -> dict:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


class Neighbour:
    """A child process spinning on one core while the ``with`` block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SPIN], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the neighbour did not start")
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="source tree(s); default: this checkout")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    srcs = [os.path.abspath(s) for s in (args.src or [ROOT])]
    workers = {src: start_worker(src) for src in srcs}
    results: dict[tuple[str, str], list[dict]] = {}
    loads = []
    try:
        for _ in range(args.rounds):
            for condition in ("idle", "busy"):
                for src, proc in workers.items():
                    loads.append(os.getloadavg()[0])
                    if condition == "busy":
                        with Neighbour():
                            out = measure(proc)
                    else:
                        out = measure(proc)
                    results.setdefault((src, condition), []).append(out)
    finally:
        for proc in workers.values():
            proc.kill()
            proc.wait()
    print(f"load (1-min) during the runs: {min(loads):.2f} .. {max(loads):.2f}")
    print(
        f"{'tree':28s} {'condition':9s} {'spectral ms':>11s} {'numpy ms':>9s} "
        f"{'ratio':>6s} {'add_batch /s':>12s}"
    )
    for (src, condition), outs in results.items():
        spectral = statistics.median(o["spectral"] for o in outs)
        peer = statistics.median(o["numpy"] for o in outs)
        ratio = statistics.median(o["numpy"] / o["spectral"] for o in outs)
        add = statistics.median(o["add_per_s"] for o in outs)
        print(
            f"{src[-28:]:28s} {condition:9s} {spectral * 1e3:11.1f} {peer * 1e3:9.1f} "
            f"{ratio:6.1f} {add:12.0f}"
        )


if __name__ == "__main__":
    main()
