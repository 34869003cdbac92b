"""A reentrant readers-writer lock: many readers at once, one writer alone.

Writers are preferred (a waiting writer stops new readers) so a stream of
queries cannot starve adds. A thread that holds the lock (either way) may take
it again; a reader asking to write is a programming error.

Shared reads are safe whatever numba's threading layer: kernels pick their
serial compile wherever a parallel region could not run safely (see
:func:`dreamjit.kernels._jit.parallel_allowed`), so concurrent readers never
launch parallel regions from several threads under a layer that forbids it.

After ``os.fork`` the child has only the forking thread: holds of other
threads, copied into the child, would never be released. :func:`after_fork`
objects (every lock here) reset such state in the child.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Protocol

logger = logging.getLogger("dreamjit")
_get_ident = threading.get_ident


class _ResetsAfterFork(Protocol):
    def _reset_after_fork(self) -> None: ...


_AFTER_FORK: weakref.WeakSet[_ResetsAfterFork] = weakref.WeakSet()


def after_fork(obj):
    """Call ``obj._reset_after_fork()`` in every child this process forks (while ``obj`` lives)."""
    _AFTER_FORK.add(obj)
    return obj


def _reset_all_in_child() -> None:
    for obj in list(_AFTER_FORK):
        try:
            obj._reset_after_fork()
        except Exception:  # pragma: no cover - a fork handler must not raise
            logger.exception("dreamjit: resetting %r after fork failed", obj)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_all_in_child)


class _Depth(threading.local):
    """Each thread's count of its read holds of one lock (0 until its first)."""

    depth = 0


class RWLock:
    """A reentrant readers-writer lock (see the module docstring).

    ``with lock.read():`` and ``with lock.write():`` hold it; the objects they
    return are plain context managers made once per lock (no generator per
    use), so a read costs two short calls.

    Parameters
    ----------
    shared_reads : bool, default True
        False makes every read exclusive (a read takes the write lock).
    """

    def __init__(self, shared_reads: bool = True):
        #: False makes every read exclusive
        self.shared_reads = shared_reads
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer: int | None = None  # thread ident
        self._write_depth = 0  # nested write holds of the writer beyond its first
        self._writers_waiting = 0
        self._local = _Depth()
        self._read_hold = _ReadHold(self)
        self._write_hold = _WriteHold(self)
        after_fork(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: keep only the forking thread's own hold, if any."""
        me = threading.get_ident()
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._writers_waiting = 0
        if self._writer != me:
            self._writer = None
            self._write_depth = 0
            self._readers = 1 if self._depth() and self.shared_reads else 0

    def _depth(self):
        return self._local.depth

    def read(self) -> _ReadHold | _WriteHold:
        """The read lock, as a context manager (the write lock when reads are not shared).

        Returns
        -------
        context manager
            ``with lock.read(): ...`` holds the lock shared with other readers.
        """
        return self._read_hold if self.shared_reads else self._write_hold

    def write(self) -> _WriteHold:
        """The write lock, as a context manager.

        Returns
        -------
        context manager
            ``with lock.write(): ...`` holds the lock alone.

        Raises
        ------
        RuntimeError
            On entry, when the calling thread holds the read lock (a reader asking to write).
        """
        return self._write_hold


class _ReadHold:
    """``with``-statement side of :meth:`RWLock.read` (one per lock, stateless: the
    depth of each thread's holds lives in the lock's thread-local)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock):
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        local = lock._local
        depth = local.depth
        writer = lock._writer  # another thread's, or None, or this thread's (then stable)
        if depth or (writer is not None and writer == _get_ident()):
            local.depth = depth + 1  # nested, or the writer reading: no count
            return
        mutex = lock._mutex  # acquire/try/finally: as safe as ``with``, half the cost
        mutex.acquire()
        try:
            if lock._writer is not None or lock._writers_waiting:
                cond = lock._cond  # over the same mutex
                while lock._writer is not None or lock._writers_waiting:
                    cond.wait()
            lock._readers += 1
        finally:
            mutex.release()
        local.depth = 1

    def __exit__(self, *exc) -> None:
        lock = self._lock
        local = lock._local
        depth = local.depth - 1
        local.depth = depth
        writer = lock._writer
        if depth or (writer is not None and writer == _get_ident()):
            return  # still held by this thread, or the writer's nested read
        mutex = lock._mutex
        mutex.acquire()
        try:
            lock._readers -= 1
            # only a waiting writer can proceed once the readers are gone (readers wait
            # for writers alone), so without one there is no one to wake
            if lock._readers == 0 and lock._writers_waiting:
                lock._cond.notify_all()
        finally:
            mutex.release()


class _WriteHold:
    """``with``-statement side of :meth:`RWLock.write` (one per lock)."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock):
        self._lock = lock

    def __enter__(self) -> None:
        lock = self._lock
        me = _get_ident()
        if lock._writer == me:
            lock._write_depth += 1
            return
        if lock._local.depth:
            raise RuntimeError("a thread holding the read lock asked for the write lock")
        cond = lock._cond
        with cond:
            lock._writers_waiting += 1
            try:
                while lock._writer is not None or lock._readers:
                    cond.wait()
            finally:
                lock._writers_waiting -= 1
            lock._writer = me

    def __exit__(self, *exc) -> None:
        lock = self._lock
        if lock._write_depth:
            lock._write_depth -= 1
            return
        with lock._cond:
            lock._writer = None
            lock._cond.notify_all()
