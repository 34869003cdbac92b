"""Per-core cost of the spectral batch and ``add_batch``: one thread, process CPU time.

On a shared 2-core machine wall time mostly measures the other processes; the CPU seconds
a one-thread process spends on a call are the stable measure of how much work the call is
(what a busy neighbour leaves us is about one core). For each source tree (``--src``,
default this checkout) a worker process with ``NUMBA_NUM_THREADS=1`` loads the kernels and
the asv benchmarks' data (``bench_spectral.SpectralBatch``: 1000 tensors 32x32x4x3;
``bench_add.AddBatch``: batches of 1000 into a pool at its budget), then every round each
worker measures once, trees interleaved. Reported: medians over rounds of the lower-quartile
CPU time of ``repeat`` calls: spectral batch, its numpy/scipy peer and their ratio,
``describe_entries`` with thumbnails (what ``add_batch`` computes), ``add_batch``, and
``add_batch`` tensors per CPU second.

Run: ``python scripts/measure_per_core.py [--src PATH ...] [--rounds 3]``.
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

WORKER = r"""
import json, sys, time
sys.path.append(sys.argv[1])  # this checkout's asv_bench; dreamjit comes from PYTHONPATH
import numpy as np
import dreamjit
from asv_bench.benchmarks.bench_add import AddBatch
from asv_bench.benchmarks.bench_spectral import SpectralBatch
from dreamjit.kernels.spectral import describe_entries

def cpu(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    times.sort()
    return times[len(times) // 4]

spec = SpectralBatch(); spec.setup()
add = AddBatch(); add.setup()
none = np.empty((0, 0, 0, 0), np.float32)
describe = lambda: describe_entries(add.T, none, False, 4)
for _ in range(3):
    spec.time_dreamjit(); spec.time_numpy(); add.time_add_batch(); describe()
print(json.dumps({"ready": dreamjit.__file__}), flush=True)
for line in sys.stdin:
    out = {
        "spectral": cpu(spec.time_dreamjit, 15),
        "numpy": cpu(spec.time_numpy, 5),
        "describe": cpu(describe, 15),
        "add": cpu(add.time_add_batch, 15),
        "n_add": len(add.T),
    }
    print(json.dumps(out), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="source tree(s); default: this checkout")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    srcs = [os.path.abspath(s) for s in (args.src or [ROOT])]
    workers = {}
    for src in srcs:
        env = dict(os.environ, PYTHONPATH=src, NUMBA_NUM_THREADS="1")
        env.pop("NUMBA_DISABLE_JIT", None)
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, ROOT],
            env=env,
            cwd=src,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        print(f"worker for {src}: dreamjit from {json.loads(proc.stdout.readline())['ready']}")
        workers[src] = proc
    results: dict[str, list[dict]] = {}
    loads = []
    try:
        for _ in range(args.rounds):
            for src, proc in workers.items():
                assert proc.stdin is not None and proc.stdout is not None
                loads.append(os.getloadavg()[0])
                proc.stdin.write("go\n")
                proc.stdin.flush()
                results.setdefault(src, []).append(json.loads(proc.stdout.readline()))
    finally:
        for proc in workers.values():
            proc.kill()
            proc.wait()
    print(f"load (1-min) during the runs: {min(loads):.2f} .. {max(loads):.2f}")
    print(
        f"{'tree':28s} {'spectral ms':>11s} {'numpy ms':>9s} {'ratio':>6s} "
        f"{'describe ms':>11s} {'add_batch ms':>12s} {'add /CPU s':>10s}"
    )
    for src, outs in results.items():

        def med(key: str, outs: list[dict] = outs) -> float:
            return statistics.median(o[key] for o in outs)

        ratio = statistics.median(o["numpy"] / o["spectral"] for o in outs)
        per_s = statistics.median(o["n_add"] / o["add"] for o in outs)
        print(
            f"{src[-28:]:28s} {med('spectral') * 1e3:11.1f} {med('numpy') * 1e3:9.1f} "
            f"{ratio:6.1f} {med('describe') * 1e3:11.1f} {med('add') * 1e3:12.1f} {per_s:10.0f}"
        )


if __name__ == "__main__":
    main()
