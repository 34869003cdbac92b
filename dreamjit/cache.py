"""LRU cache of query embeddings, keyed by the exact query features."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

__all__ = ["QueryCache", "CacheStats"]


class CacheStats(NamedTuple):
    """Query-cache counters; unpacks as ``(hits, misses, hit_rate)``."""

    hits: int
    misses: int
    hit_rate: float


def _exact(arr) -> bytes:
    """The exact float32 bytes of a feature vector (what the embedding is computed from)."""
    if arr is None:
        return b"-"
    # +0.0 folds -0.0 into 0.0: both embed identically
    return (np.asarray(arr, dtype=np.float32) + np.float32(0.0)).tobytes()


class QueryCache:
    """Maps query features to their embedding (LRU).

    Keys are the exact float32 bytes of the features (only -0.0 and 0.0 are
    folded), so a hit is always the embedding the query would get, at any
    scale (no rounding: 1e-4 and 3e-4 are different queries). The key also
    holds the mapper's identity, so two pools with different projections
    never share entries. A hit returns the stored embedding (read-only).

    Parameters
    ----------
    capacity : int, default 128
        Entries kept; the least recently used goes first. 0 or less: nothing is
        kept (every lookup misses).

    Examples
    --------
    >>> import numpy as np
    >>> from dreamjit.cache import QueryCache
    >>> c = QueryCache(capacity=2)
    >>> key = c.key(("m",), np.array([0.1, 0.2, 0.3]), None, None, None, None)
    >>> c.get(key) is None
    True
    >>> _ = c.put(key, np.ones(4, np.float32))
    >>> c.get(key).shape, tuple(c.stats())
    ((4,), (1, 1, 0.5))
    >>> c.stats().hit_rate
    0.5
    """

    def __init__(self, capacity: int = 128):
        self.capacity = int(capacity)
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(mapper_key, chroma, spectral, spatial, label, utility) -> tuple:
        """The cache key of a query's features.

        Parameters
        ----------
        mapper_key : hashable
            The embedding mapper's identity.
        chroma, spectral, spatial : array_like or None
            The query's feature vectors (their exact float32 bytes are used).
        label : int or None
            The query's label.
        utility : float or None
            The query's utility.

        Returns
        -------
        tuple
            A hashable key.
        """
        util = None if utility is None else float(utility) + 0.0
        return (mapper_key, _exact(chroma), _exact(spectral), _exact(spatial), label, util)

    def get(self, key):
        """The cached embedding of ``key``, counting a hit or a miss.

        Parameters
        ----------
        key : tuple
            From :meth:`key`.

        Returns
        -------
        numpy.ndarray or None
            The read-only embedding (marked recently used), or None.
        """
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def peek(self, key):
        """The cached value without counting a hit or miss.

        The caller counts with :meth:`count` once it knows the call succeeds.

        Parameters
        ----------
        key : tuple
            As in :meth:`get`.

        Returns
        -------
        numpy.ndarray or None
            As :meth:`get` returns.
        """
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def count(self, hit: bool) -> None:
        """Count one hit or miss.

        Parameters
        ----------
        hit : bool
            True counts a hit, False a miss.
        """
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def put(self, key, embedding: np.ndarray) -> np.ndarray:
        """Cache ``embedding`` under ``key`` (dropping the least recently used past capacity).

        Parameters
        ----------
        key : tuple
            From :meth:`key`.
        embedding : numpy.ndarray
            The embedding (copied as float32).

        Returns
        -------
        numpy.ndarray
            The read-only copy that is cached (returned even when nothing is kept).
        """
        value = np.array(embedding, dtype=np.float32, copy=True)
        value.setflags(write=False)
        if self.capacity <= 0:
            return value
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
        return value

    def stats(self) -> CacheStats:
        """The hit and miss counters.

        Returns
        -------
        CacheStats
            A named tuple ``(hits, misses, hit_rate)``; ``hit_rate`` is 0.0 before
            any lookup.
        """
        with self._lock:
            total = self.hits + self.misses
            return CacheStats(self.hits, self.misses, self.hits / total if total else 0.0)

    def clear(self) -> None:
        """Drop every cached embedding (the counters stay)."""
        with self._lock:
            self._data.clear()

    def __len__(self):
        return len(self._data)

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread of the parent may have held it)."""
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self._data.values()))
