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
from contextlib import contextmanager
from typing import Protocol

logger = logging.getLogger("dreamjit")


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


class RWLock:
    def __init__(self, shared_reads: bool = True):
        #: False makes every read exclusive
        self.shared_reads = shared_reads
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None  # thread ident
        self._writers_waiting = 0
        self._local = threading.local()
        after_fork(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: keep only the forking thread's own hold, if any."""
        me = threading.get_ident()
        self._cond = threading.Condition(threading.Lock())
        self._writers_waiting = 0
        if self._writer != me:
            self._writer = None
            self._readers = 1 if self._depth() and self.shared_reads else 0

    def _depth(self):
        return getattr(self._local, "depth", 0)

    @contextmanager
    def read(self):
        if not self.shared_reads:
            with self.write():
                yield
            return
        me = threading.get_ident()
        if self._writer == me or self._depth():
            self._local.depth = self._depth() + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._cond:
            while self._writer is not None or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self):
        me = threading.get_ident()
        if self._writer == me:
            yield
            return
        if self._depth():
            raise RuntimeError("a thread holding the read lock asked for the write lock")
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = me
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self._cond.notify_all()
