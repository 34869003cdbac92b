"""The one place that sets numba options for every dreamjit kernel.

Kernels are compiled with ``cache=True`` (compiled code is reused across
processes) and ``nogil=True`` (reads can run in parallel threads). Batch
kernels add ``parallel=True`` and use ``prange``. ``fastmath`` is never on:
results must match the references in ``tests/reference.py``.
"""
from __future__ import annotations

import importlib
import os

import numba
from numba import njit, prange  # noqa: F401  (prange re-exported for kernels)


def _threadsafe_layer_available() -> bool:
    for module in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
        try:
            importlib.import_module(module)
            return True
        except ImportError:
            pass
    return False


#: True when parallel kernels may be launched from several threads at once
#: (numba's tbb or omp layer; its fallback "workqueue" layer is not thread-safe)
THREADSAFE_PARALLEL = _threadsafe_layer_available()
if THREADSAFE_PARALLEL and "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"

KERNEL_OPTIONS = {"cache": True, "nogil": True}
PARALLEL_OPTIONS = {**KERNEL_OPTIONS, "parallel": True}

#: every function decorated here, so ``dreamjit.warmup`` can find them
REGISTRY: list = []


def kernel(fn):
    """Compile ``fn`` as a serial kernel."""
    dispatcher = njit(**KERNEL_OPTIONS)(fn)
    REGISTRY.append(dispatcher)
    return dispatcher


def parallel_kernel(fn):
    """Compile ``fn`` as a ``prange`` batch kernel."""
    dispatcher = njit(**PARALLEL_OPTIONS)(fn)
    REGISTRY.append(dispatcher)
    return dispatcher
