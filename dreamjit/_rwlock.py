"""A reentrant readers-writer lock: many readers at once, one writer alone.

Writers are preferred (a waiting writer stops new readers) so a stream of
queries cannot starve adds. A thread that holds the lock (either way) may take
it again; a reader asking to write is a programming error.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager


class RWLock:
    def __init__(self, shared_reads: bool = True):
        #: False makes every read exclusive (when parallel kernels are not thread-safe)
        self.shared_reads = shared_reads
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = None  # thread ident
        self._writers_waiting = 0
        self._local = threading.local()

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
