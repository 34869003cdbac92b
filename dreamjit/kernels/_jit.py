"""The one place that sets numba options for every dreamjit kernel.

Kernels are compiled with ``cache=True`` (compiled code is reused across
processes) and ``nogil=True`` (reads can run in parallel threads). Batch
kernels add ``parallel=True`` and use ``prange``. ``fastmath`` is never on for
results (they must match the references in ``tests/``); only
:func:`nav_kernel` functions, whose sums merely steer a graph walk, may
reassociate.

dreamjit never changes numba's process-wide settings (its threading layer,
its thread count): they belong to the application. Instead every batch kernel
is compiled twice, ``prange`` and serial, and each call picks one
(:func:`parallel_allowed`): the serial compile runs wherever the threading
layer numba uses (or will use) cannot run a parallel region safely:

- in a process forked after GNU OpenMP started (numba's ``omp`` layer on
  Linux): numba terminates such a child at its first parallel region
  ("fork() called from a process already using GNU OpenMP");
- in a thread other than the main thread when the layer is ``workqueue``,
  which aborts when two threads launch parallel regions at once.

A fork is noticed by an ``os.register_at_fork`` handler registered when this
module is imported: a child forked from a process that had not imported
dreamjit, after GNU OpenMP started there, is not recognised.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
import queue
import sys
import threading
import types
from typing import Any, TypedDict

import numba
import numba.extending
from numba import njit, prange  # noqa: F401  (prange re-exported for kernels)

#: layers whose parallel regions cannot run in a child forked after the layer started
FORK_UNSAFE_LAYERS = frozenset({"omp"}) if sys.platform.startswith("linux") else frozenset()
#: layers that abort when several threads launch parallel regions at once
THREAD_UNSAFE_LAYERS = frozenset({"workqueue"})

_forked_after_layer = False  # this process was forked after a fork-unsafe layer started
_likely_cache: dict = {}


def active_layer() -> str | None:
    """numba's threading layer once a parallel kernel compiled or loaded, else None."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _layer_loads(name: str) -> bool:
    if name == "workqueue":
        return True
    try:
        if name == "tbb":
            from numba.np.ufunc import parallel

            check = getattr(parallel, "_check_tbb_version_compatible", None)
            if check is not None:
                check()
        importlib.import_module(f"numba.np.ufunc.{name}pool")
        return True
    except Exception:  # ImportError, or a missing/old shared library
        return False


def likely_layer() -> str:
    """The layer numba will pick at its first parallel kernel, from its own settings."""
    # numba.config sets its settings at import from the environment; its stubs omit these
    setting = str(numba.config.THREADING_LAYER).lower()  # type: ignore[attr-defined]
    priority = tuple(numba.config.THREADING_LAYER_PRIORITY)  # type: ignore[attr-defined]
    key = (setting, priority)
    if key not in _likely_cache:
        linux = sys.platform.startswith("linux")
        candidates = {
            "default": priority,
            "safe": ("tbb",),
            "threadsafe": ("tbb", "omp"),
            "forksafe": ("tbb",) + (() if linux else ("omp",)) + ("workqueue",),
        }.get(setting, (setting,))
        _likely_cache[key] = next((c for c in candidates if _layer_loads(c)), "workqueue")
    return _likely_cache[key]


def parallel_allowed() -> bool:
    """Whether a ``prange`` kernel may run in the calling thread of this process now."""
    if _forked_after_layer:
        return False
    if threading.current_thread() is threading.main_thread():
        return True
    return (active_layer() or likely_layer()) not in THREAD_UNSAFE_LAYERS


def _after_fork_in_child() -> None:
    global _forked_after_layer
    if active_layer() in FORK_UNSAFE_LAYERS:
        _forked_after_layer = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class JitOptions(TypedDict, total=False):
    """Keyword arguments of ``numba.njit`` used here (typed so they match its overloads)."""

    cache: bool
    nogil: bool
    parallel: bool
    fastmath: bool | set[str]


KERNEL_OPTIONS: JitOptions = {"cache": True, "nogil": True}
PARALLEL_OPTIONS: JitOptions = {**KERNEL_OPTIONS, "parallel": True}

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


#: batches smaller than this run on one thread: a parallel launch on every thread costs
#: microseconds on an idle machine but milliseconds when another process holds a core
MIN_PARALLEL_ITEMS = 64

#: iterations of a ``prange`` loop a thread takes at a time (numba's parallel chunk size).
#: The kernels' iterations write their own outputs (no reductions), so results do not
#: depend on which thread runs which iteration.
#: numba's default (0) splits a loop into one equal block per thread up front, so when
#: another process holds a core the thread sharing it finishes last and the call waits
#: for it; small chunks taken on demand let the thread on the free core do the rest.
PARALLEL_CHUNK = 1


class SizeDispatch:
    """A batch kernel with a ``prange`` compile and a serial one, each compiled on first use.

    ``size_arg`` is the position of the argument whose first axis is the batch
    (None: every batch is large). The ``prange`` compile runs only where
    :func:`parallel_allowed` says so; elsewhere the serial one does, with the
    same results. Large batches run on every thread in chunks of ``chunk``
    iterations handed out on demand. Small batches (below
    :data:`MIN_PARALLEL_ITEMS`) run the ``prange`` compile on one thread where
    numba's layer runs such a region in the calling thread (``omp``, ``tbb``),
    else the serial compile; so in the usual case a process compiles a kernel
    once, and the serial compile only after a fork or under ``workqueue``.
    Both compiles are cached (the serial one under its own name, so the two
    never share a cache entry). Not callable from other kernels.
    """

    def __init__(self, fn, size_arg: int | None, chunk: int = PARALLEL_CHUNK):
        self.size_arg = size_arg
        self.chunk = chunk
        self.parallel = njit(**PARALLEL_OPTIONS)(fn)
        serial = types.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__
        )
        serial.__qualname__ = fn.__qualname__ + "_serial"
        serial.__module__, serial.__doc__ = fn.__module__, fn.__doc__
        self.serial = njit(**KERNEL_OPTIONS)(serial)
        functools.update_wrapper(self, fn)
        REGISTRY.extend([self.parallel, self.serial])

    def __call__(self, *args):
        if _NO_JIT or not parallel_allowed():
            return self.serial(*args)
        big = self.size_arg is None or args[self.size_arg].shape[0] >= MIN_PARALLEL_ITEMS
        if big:
            # numba's chunk size is a setting of the calling thread (thread-local, like
            # its thread count; its layer is process-wide): set for this call, then restored
            previous = numba.set_parallel_chunksize(self.chunk)
            try:
                return self.parallel(*args)
            finally:
                numba.set_parallel_chunksize(previous)
        if (active_layer() or likely_layer()) not in ONE_THREAD_INLINE_LAYERS:
            return self.serial(*args)
        # a small batch: the prange compile on one thread (thread-local setting, restored),
        # which these layers run in the calling thread, as fast as the serial compile
        # (measured: 64 against 60 us for one tensor's features, and no stall with a busy
        # core), so a cold cache compiles the kernel once, not twice
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return self.parallel(*args)
        finally:
            numba.set_num_threads(previous)


_NO_JIT = bool(getattr(numba.config, "DISABLE_JIT", False))
#: layers whose one-thread parallel region runs in the calling thread, with no hand-off
ONE_THREAD_INLINE_LAYERS = frozenset({"omp", "tbb"})


def parallel_kernel(fn=None, *, size_arg=0, chunk=PARALLEL_CHUNK):
    """Compile ``fn`` as a ``prange`` batch kernel (see :class:`SizeDispatch`).

    With ``size_arg=None`` it runs in parallel whenever :func:`parallel_allowed`
    (the caller decides on size); otherwise small batches take the serial compile.
    Each call runs its ``prange`` loops in chunks of ``chunk`` iterations handed
    out on demand (dynamic scheduling, :data:`PARALLEL_CHUNK`).
    """
    if fn is None:
        return functools.partial(parallel_kernel, size_arg=size_arg, chunk=chunk)
    return SizeDispatch(fn, size_arg, chunk)


#: the daemon threads that run chunks of a batch beside the calling thread (:func:`run_chunks`)
_helper_threads: list[threading.Thread] = []
_helper_jobs: queue.SimpleQueue = queue.SimpleQueue()
_helper_lock = threading.Lock()


def _helper_loop(jobs: queue.SimpleQueue) -> None:
    while True:
        jobs.get()()


def _start_helpers(count: int) -> queue.SimpleQueue:
    """At least ``count`` helper threads running; their job queue."""
    with _helper_lock:
        while len(_helper_threads) < count:
            thread = threading.Thread(
                target=_helper_loop,
                args=(_helper_jobs,),
                name=f"dreamjit-chunks-{len(_helper_threads)}",
                daemon=True,
            )
            thread.start()
            _helper_threads.append(thread)
        return _helper_jobs


def _reset_helpers_in_child() -> None:
    # a forked child has none of its parent's threads: start its own on demand
    global _helper_jobs, _helper_lock
    _helper_threads.clear()
    _helper_jobs = queue.SimpleQueue()
    _helper_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_helpers_in_child)


def _thread_count() -> int:
    """``numba.get_num_threads()``, without starting numba's threading layer for it: before
    the layer starts, ``set_num_threads`` cannot have been called (it starts the layer)."""
    if active_layer() is None:
        return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    return numba.get_num_threads()


def run_chunks(body, n: int, step: int, min_items: int = MIN_PARALLEL_ITEMS) -> None:
    """Call ``body(lo, hi)`` for the chunks ``[lo, hi)`` of ``range(n)``, ``step`` long.

    For batch work whose chunks are calls of one serial ``nogil`` kernel writing
    their own outputs: a ``prange`` loop over the same calls would compile the
    kernel's whole call tree twice more (numba optimises and generates the code a
    parallel region calls once in the region's function and once in its wrapper),
    seconds of compile on an empty cache for nothing faster.

    Batches of at least ``min_items`` items run on ``numba.get_num_threads()``
    threads (read without starting numba's threading layer): the calling thread
    and daemon helper threads, which take chunks on demand (dynamic scheduling:
    a thread sharing its core with another process does fewer), each a kernel
    call that releases the GIL. Smaller batches, batches with one chunk, one
    thread, or ``NUMBA_DISABLE_JIT=1`` (bodies that hold the GIL) run in the
    calling thread, in order. No threading layer is
    involved: it runs alike after a fork and in any thread. An exception raised
    by a chunk is raised here (on threads, once every chunk has run).

    Parameters
    ----------
    body : callable
        ``body(lo, hi)``; chunks must not depend on each other's results.
    n : int
        Number of items.
    step : int
        Items per chunk (>= 1).
    min_items : int, default MIN_PARALLEL_ITEMS
        Smallest batch that runs on more than one thread.

    Returns
    -------
    None
    """
    count = -(-n // step)
    threads = 1 if _NO_JIT or n < min_items else min(_thread_count(), count)
    if threads <= 1:
        for lo in range(0, n, step):
            body(lo, min(n, lo + step))
        return
    claim = itertools.count()  # next() is atomic under the GIL
    finished = [0]
    errors: list[BaseException] = []
    lock = threading.Lock()
    done = threading.Event()

    def work() -> None:
        while True:
            i = next(claim)
            if i >= count:
                return
            lo = i * step
            try:
                body(lo, min(n, lo + step))
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)
            finally:
                with lock:
                    finished[0] += 1
                    if finished[0] == count:
                        done.set()

    jobs = _start_helpers(threads - 1)
    for _ in range(threads - 1):
        jobs.put(work)
    work()
    # every chunk was claimed; wait for the ones helpers still run (a helper busy with
    # another call's chunks claims none of these, so this never waits for that call)
    done.wait()
    if errors:
        raise errors[0]


#: navigation arithmetic only: float reassociation and contraction allowed (the
#: dot products vectorise), never the no-NaN/no-Inf assumptions. A kernel compiled
#: with it must not return its sums: they steer a graph walk whose results are
#: scored again exactly (tests bound the difference, ``tests/test_graph_structure.py``).
NAV_OPTIONS: JitOptions = {**KERNEL_OPTIONS, "fastmath": {"reassoc", "contract"}}


def nav_kernel(fn):
    """Compile ``fn`` as a serial kernel with :data:`NAV_OPTIONS`."""
    dispatcher = njit(**NAV_OPTIONS)(fn)
    REGISTRY.append(dispatcher)
    return dispatcher


@numba.extending.intrinsic
def _prefetch_intrinsic(typingctx, arr, row, col):
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
        builder.call(
            fn,
            [
                builder.bitcast(ptr, i8p),
                ir.Constant(i32, 0),
                ir.Constant(i32, 3),
                ir.Constant(i32, 1),
            ],
        )
        return context.get_dummy_value()

    return numba.types.void(arr, row, col), codegen


def _prefetch_noop(arr, row, col) -> None:
    """With ``NUMBA_DISABLE_JIT=1`` kernel bodies run as Python: a prefetch hint does nothing."""


#: ``prefetch(arr, row, col)``: the LLVM intrinsic in compiled kernels, a no-op without the JIT
prefetch: Any = (
    _prefetch_noop if getattr(numba.config, "DISABLE_JIT", False) else _prefetch_intrinsic
)
