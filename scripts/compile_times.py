"""How long each kernel takes to compile the first time (empty numba cache).

Runs a workload in this process with ``NUMBA_CACHE_DIR`` pointing at a new empty
directory (set before numba is imported, so nothing is loaded from a cache) and
records numba's ``"numba:compile"`` events, stamped with the process's CPU time
(a compile runs on one thread; on a shared machine wall time mostly measures the
other processes). Each compile is reported with its *own* time (its time minus
the compiles nested in it: a kernel's callees compile while it is typed) and its
total time, slowest first. Kernels of other packages
(rocket-fft's FFT, numba's own helpers) appear under their module name.

Workloads: ``warmup`` (``dreamjit.warmup()``: every kernel the public paths use),
``quickstart`` (the README's python block), ``demo`` (``python -m dreamjit demo``).

Run: ``python scripts/compile_times.py [--workload warmup] [--top 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _quickstart() -> None:
    with open(os.path.join(ROOT, "README.md")) as fh:
        match = re.search(r"```python\n(.*?)```", fh.read(), re.S)
    assert match is not None, "README.md has no python block"
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            exec(compile(match.group(1), "README.md", "exec"), {"__name__": "__quickstart__"})
        finally:
            os.chdir(cwd)


def _demo() -> None:
    from dreamjit.__main__ import demo

    demo()


def _warmup() -> None:
    import dreamjit as dj

    dj.warmup()


WORKLOADS = {"warmup": _warmup, "quickstart": _quickstart, "demo": _demo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="warmup")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    if "numba" in sys.modules:
        raise SystemExit("numba was imported before the cache directory was set")
    cache = tempfile.mkdtemp(prefix="dreamjit-compile-times-")
    os.environ["NUMBA_CACHE_DIR"] = cache
    sys.path.insert(0, ROOT)

    from numba.core import event

    class CpuRecorder(event.Listener):
        """numba's RecordingListener, stamped with this process's CPU time (compiles run
        on one thread, so on a busy machine CPU time is the stable measure)."""

        def __init__(self):
            self.buffer = []

        def on_start(self, ev):
            self.buffer.append((time.process_time(), ev))

        def on_end(self, ev):
            self.buffer.append((time.process_time(), ev))

    t0, c0 = time.perf_counter(), time.process_time()
    rec = CpuRecorder()
    with event.install_listener("numba:compile", rec), contextlib.redirect_stdout(io.StringIO()):
        WORKLOADS[args.workload]()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    # pair START/END events (they nest: a callee compiles inside its caller)
    stack: list[list] = []
    done = []
    for stamp, ev in rec.buffer:
        if ev.status == event.EventStatus.START:
            stack.append([ev.data, stamp, 0.0])
        else:
            data, start, nested = stack.pop()
            total = stamp - start
            if stack:
                stack[-1][2] += total
            disp = data["dispatcher"]
            py = getattr(disp, "py_func", None)
            name = f"{getattr(py, '__module__', '?')}.{getattr(py, '__qualname__', disp)}"
            if getattr(disp, "targetoptions", {}).get("parallel"):
                name += " [parallel]"
            done.append((total - nested, total, name, str(data["args"])))
    own_sum = sum(d[0] for d in done)
    done.sort(reverse=True)
    print(
        f"workload {args.workload}: {wall:.1f} s wall, {cpu:.1f} s cpu; "
        f"{len(done)} compiles, {own_sum:.1f} s cpu in them"
    )
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'own s':>7} {'total s':>8}  kernel (argument types); CPU seconds")
    for own, total, name, sig in done[: args.top]:
        sig = sig if len(sig) < 90 else sig[:87] + "..."
        print(f"{own:7.2f} {total:8.2f}  {name} {sig}")
    by_module: dict[str, float] = {}
    for own, _, name, _ in done:
        mod = name.split(".")[0] if not name.startswith("dreamjit") else name.rsplit(".", 1)[0]
        by_module[mod] = by_module.get(mod, 0.0) + own
    print("own time by module:")
    for mod, sec in sorted(by_module.items(), key=lambda kv: -kv[1]):
        print(f"{sec:7.2f}  {mod}")


if __name__ == "__main__":
    main()
