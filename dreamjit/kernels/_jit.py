"""The one place that sets numba options for every dreamjit kernel.

Kernels are compiled with ``cache=True`` (compiled code is reused across
processes) and ``nogil=True`` (reads can run in parallel threads). Batch
kernels add ``parallel=True`` and use ``prange``. ``fastmath`` is never on for
results (they must match the references in ``tests/reference.py``); only
:func:`nav_kernel` functions, whose sums merely steer a graph walk, may
reassociate.
"""
from __future__ import annotations

import functools
import importlib
import os
import types

import numba
import numba.extending
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


def inline_kernel(fn):
    """Compile ``fn`` as a small serial helper that numba inlines into its callers.

    For per-element helpers of hot loops (heap steps): a call between
    kernels passes and reference-counts every array argument, which costs
    more than such a helper's own work.
    """
    dispatcher = njit(inline="always", **KERNEL_OPTIONS)(fn)
    REGISTRY.append(dispatcher)
    return dispatcher


#: batches smaller than this run the serial compile: a parallel launch costs
#: microseconds on an idle machine but milliseconds when another process holds a core
MIN_PARALLEL_ITEMS = 64


class SizeDispatch:
    """A batch kernel compiled twice: serial for small batches, ``prange`` for large.

    ``size_arg`` is the position of the argument whose first axis is the batch.
    Both compiles are cached (the serial one under its own name, so the two
    never share a cache entry). Not callable from other kernels.
    """

    def __init__(self, fn, size_arg: int):
        self.size_arg = size_arg
        self.parallel = njit(**PARALLEL_OPTIONS)(fn)
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                    fn.__defaults__, fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        serial.__module__, serial.__doc__ = fn.__module__, fn.__doc__
        self.serial = njit(**KERNEL_OPTIONS)(serial)
        functools.update_wrapper(self, fn)
        REGISTRY.extend([self.parallel, self.serial])

    def __call__(self, *args):
        big = args[self.size_arg].shape[0] >= MIN_PARALLEL_ITEMS
        return (self.parallel if big else self.serial)(*args)


def parallel_kernel(fn=None, *, size_arg=0):
    """Compile ``fn`` as a ``prange`` batch kernel.

    With ``size_arg=None`` it always runs in parallel (the caller decides);
    otherwise small batches take a serial compile (see :class:`SizeDispatch`).
    """
    if fn is None:
        return functools.partial(parallel_kernel, size_arg=size_arg)
    if size_arg is None:
        dispatcher = njit(**PARALLEL_OPTIONS)(fn)
        REGISTRY.append(dispatcher)
        return dispatcher
    return SizeDispatch(fn, size_arg)


#: navigation arithmetic only: float reassociation and contraction allowed (the
#: dot products vectorise), never the no-NaN/no-Inf assumptions. A kernel compiled
#: with it must not return its sums: they steer a graph walk whose results are
#: scored again exactly (tests bound the difference, ``tests/test_graph_structure.py``).
NAV_OPTIONS = {**KERNEL_OPTIONS, "fastmath": {"reassoc", "contract"}}


def nav_kernel(fn):
    """Compile ``fn`` as a serial kernel with :data:`NAV_OPTIONS`."""
    dispatcher = njit(**NAV_OPTIONS)(fn)
    REGISTRY.append(dispatcher)
    return dispatcher


@numba.extending.intrinsic
def prefetch(typingctx, arr, row, col):
    """Hint the CPU to fetch the cache line holding ``arr[row, col]`` (2-D array) for reading.

    Emits LLVM's ``llvm.prefetch`` (locality 3, data cache); it never faults
    and changes no result. Graph walks call it for the rows they will score
    next, so the memory loads of several rows overlap.
    """
    from llvmlite import ir
    from numba.core import cgutils

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]])
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return numba.types.void(arr, row, col), codegen
