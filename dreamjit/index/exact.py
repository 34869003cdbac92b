"""The exact index: a top-k scan of the live embeddings (see :mod:`dreamjit.index`)."""

from __future__ import annotations

import numpy as np

from ..errors import DimensionMismatchError
from ..kernels.cosine import topk_dot, topk_dot_batch, topk_dot_columns, topk_dot_columns_parallel

__all__ = ["ExactIndex", "exact_topk"]

_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_S = np.empty(0, dtype=np.float32)


def _as_query(q, store) -> np.ndarray:
    q = np.ascontiguousarray(q, dtype=np.float32)
    dim = store.embeddings.shape[1]
    if q.shape != (dim,):
        raise DimensionMismatchError("q", q, f"shape ({dim},)")
    return q


def _as_queries(Q, store) -> np.ndarray:
    Q = np.ascontiguousarray(Q, dtype=np.float32)
    dim = store.embeddings.shape[1]
    if Q.ndim != 2 or Q.shape[1] != dim:
        raise DimensionMismatchError("Q", Q, f"shape (m, {dim})")
    return Q


#: rows from which the exact scan splits over threads. A single scan is short
#: (0.8 ms at 1e5 x 64 serially), and on a machine whose other core is busy a
#: statically scheduled parallel region waits for the descheduled thread:
#: 10-16 ms measured here at 1e5-4e5 rows, against 0.8-3.9 ms serial.
PARALLEL_SCAN_ROWS = (
    8_000_000  # at 1e6 too: 23.8 ms parallel vs 13.8 ms serial, measured under load
)


def exact_topk(store, q, mask, k):
    """Exact top-k over ``mask``: the column-major copy when the store keeps one."""
    cols = getattr(store, "columns", {}).get("embeddings_t")
    if cols is None:
        return topk_dot(store.embeddings, q, mask, k)
    if cols.shape[1] >= PARALLEL_SCAN_ROWS:
        return topk_dot_columns_parallel(cols, q, mask, k)
    return topk_dot_columns(cols, q, mask, k)


def _live_mask(store, mask):
    alive = store.alive
    if mask is None:
        return alive
    return np.logical_and(np.asarray(mask, dtype=np.bool_)[: alive.shape[0]], alive)


class ExactIndex:
    """Exact top-k by dot product over the store's live (and masked) rows.

    Parameters
    ----------
    store : ColumnStore-like
        Has ``embeddings`` (cap, d) float32 unit rows, ``alive``, ``ids``.
    """

    def __init__(self, store):
        self._store = store

    def add(self, slots) -> None:
        """Nothing to do: the scan reads the store.

        Parameters
        ----------
        slots : numpy.ndarray
            The store slots just written.
        """

    def remove(self, slots) -> None:
        """Nothing to do: the scan reads ``store.alive``.

        Parameters
        ----------
        slots : numpy.ndarray
            The store slots just freed.
        """

    def rebuild(self, block: bool = False) -> None:
        """Nothing to rebuild.

        Parameters
        ----------
        block : bool, default False
            Ignored (the index protocol's argument).
        """

    def maybe_rebuild(self) -> bool:
        """Never rebuilds.

        Returns
        -------
        bool
            False.
        """
        return False

    def __len__(self) -> int:
        return int(np.count_nonzero(self._store.alive))

    @property
    def nbytes(self) -> int:
        return 0

    def bytes_bound(self, n_entries: int) -> int:
        """The most bytes the index can hold for ``n_entries`` entries: none.

        Parameters
        ----------
        n_entries : int
            Live entries (the bound does not depend on them).

        Returns
        -------
        int
            0 (the scan reads the store).
        """
        return 0

    def search(self, q, k, mask=None):
        """The best ``min(k, #candidates)`` live rows for one query, best first.

        Parameters
        ----------
        q : array_like
            ``(d,)`` query vector.
        k : int
            Rows wanted; ``k <= 0`` gives none.
        mask : numpy.ndarray of bool, optional
            ``(capacity,)``: only these slots are candidates (with the live ones).

        Returns
        -------
        tuple of numpy.ndarray
            ``(slots int64, scores float32)``.
        """
        k = int(k)
        if k <= 0:
            return _EMPTY_I.copy(), _EMPTY_S.copy()
        store = self._store
        return exact_topk(store, _as_query(q, store), _live_mask(store, mask), k)

    def search_batch(self, Q, k, mask=None):
        """The best ``k`` live rows for each query row.

        Parameters
        ----------
        Q : array_like
            ``(m, d)`` query vectors.
        k : int
            Rows wanted per query.
        mask : numpy.ndarray of bool, optional
            As in :meth:`search`.

        Returns
        -------
        tuple of numpy.ndarray
            ``(slots (m, k), scores (m, k))``, padded with -1 / -inf.
        """
        store = self._store
        Q = _as_queries(Q, store)
        return topk_dot_batch(store.embeddings, Q, _live_mask(store, mask), max(int(k), 0))
