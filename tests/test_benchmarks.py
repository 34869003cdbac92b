"""Every asv benchmark runs once on tiny sizes, so CI catches a broken benchmark.

Imports each ``asv_bench/benchmarks/bench_*.py`` with ``DREAMJIT_BENCH_TINY=1``
and, for every benchmark (``time_``, ``timeraw_``, ``track_``, ``mem_``,
``peakmem_``), runs ``setup_cache`` (once per class), then for each parameter
combination ``setup``, the benchmark once, ``teardown`` -- as asv does, minus
the timing. ``NotImplementedError`` from ``setup`` is asv's "skip" (a peer is
not installed; in tiny mode also the ANN and fresh-subprocess benchmarks,
unless ``DREAMJIT_BENCH_ANN=1`` / ``DREAMJIT_BENCH_SUBPROCESS=1``).
CI never runs the full suite; see ``docs/performance.md``.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import sys
from pathlib import Path

import pytest

os.environ["DREAMJIT_BENCH_TINY"] = "1"  # before any benchmark module is imported

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "asv_bench" / "benchmarks"
PREFIXES = ("time_", "timeraw_", "track_", "mem_", "peakmem_")

pytestmark = pytest.mark.jit_only

if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR.parent))


def _module_names():
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def _import(name):
    return importlib.import_module(f"benchmarks.{name}")


def _param_grid(owner):
    params = getattr(owner, "params", None)
    if not params:
        return [()]
    if not isinstance(params[0], (list, tuple)):
        params = [params]
    return list(itertools.product(*params))


def _cases():
    cases = []
    for name in _module_names():
        mod = _import(name)
        for cls_name, cls in sorted(vars(mod).items()):
            if not inspect.isclass(cls) or cls.__module__ != mod.__name__:
                continue
            for attr in sorted(dir(cls)):
                if attr.startswith(PREFIXES) and callable(getattr(cls, attr)):
                    cases.append(pytest.param(name, cls_name, attr, id=f"{name}.{cls_name}.{attr}"))
        for attr, fn in sorted(vars(mod).items()):
            if attr.startswith(PREFIXES) and inspect.isfunction(fn):
                cases.append(pytest.param(name, None, attr, id=f"{name}.{attr}"))
    return cases


_CACHES: dict = {}


def _setup_cache(cls, name):
    """asv runs ``setup_cache`` once and hands its result to every benchmark of the class."""
    key = (name, cls.__name__)
    if key not in _CACHES:
        fn = getattr(cls, "setup_cache", None)
        _CACHES[key] = ("none", None) if fn is None else ("value", fn(cls()))
    return _CACHES[key]


def _run_one(owner, target, cache, params):
    """setup -> benchmark once -> teardown; True if run, False if setup skipped it."""
    args = ((cache[1],) if cache[0] == "value" else ()) + tuple(params)
    setup = getattr(owner, "setup", None)
    try:
        if setup is not None:
            setup(*args)
    except NotImplementedError:
        return False
    try:
        result = target(*args)
        if target.__name__.startswith("timeraw_"):
            assert isinstance(result, str)
        if target.__name__.startswith("track_"):
            assert isinstance(result, (int, float)), f"{target.__name__} returned {result!r}"
    finally:
        teardown = getattr(owner, "teardown", None)
        if teardown is not None:
            teardown(*args)
    return True


@pytest.mark.parametrize("module_name, cls_name, attr", _cases())
def test_benchmark_runs(module_name, cls_name, attr):
    mod = _import(module_name)
    ran = 0
    if cls_name is None:
        fn = getattr(mod, attr)
        for params in _param_grid(fn):
            ran += _run_one(mod, fn, ("none", None), params)
    else:
        cls = getattr(mod, cls_name)
        cache = _setup_cache(cls, module_name)
        for params in _param_grid(cls):
            obj = cls()
            ran += _run_one(obj, getattr(obj, attr), cache, params)
    if not ran:
        pytest.skip("setup raised NotImplementedError (peer missing or off in tiny mode)")


def test_every_module_has_benchmarks():
    names = _module_names()
    for expected in (
        "bench_cache",
        "bench_knn",
        "bench_mmr",
        "bench_spectral",
        "bench_embedding",
        "bench_budget",
        "bench_pipeline",
        "bench_startup",
        "bench_add",
    ):
        assert expected in names
    assert len(_cases()) >= len(names)
