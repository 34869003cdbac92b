"""Columnar (structure-of-arrays) entry storage, grown by doubling."""

from __future__ import annotations

import hashlib

import numpy as np

N_SPECTRAL = 6

#: columns stored column-major, shape (per-entry size, capacity): the exact
#: index scans ``embeddings_t`` across entries, which vectorises (4x faster
#: than row-major dot products without fastmath); ``embeddings_q`` is its int8
#: copy (``round(127 x)``), scanned first for candidates that are then rescored
#: exactly (:func:`dreamjit.kernels.query.topk_dot_int8`)
TRANSPOSED = frozenset({"embeddings_t", "embeddings_q"})
#: columns recomputed from others on load (never written to files)
DERIVED = frozenset({"embeddings_t", "embeddings_q"})


def column_spec(shape: tuple, dim: int, store_certainty: bool) -> dict:
    """name -> (per-entry shape, dtype) for a pool of tensors of ``shape``."""
    rows, cols = shape[0], shape[1]
    layers = shape[2] if len(shape) == 4 else 1
    channels = shape[-1]
    spec = {
        "tensors": (tuple(shape), np.float32),
        "embeddings": ((dim,), np.float32),
        "embeddings_t": ((dim,), np.float32),
        "embeddings_q": ((dim,), np.int8),
        "chroma": ((channels,), np.float32),
        "spectral": ((N_SPECTRAL,), np.float32),
        "energy": ((), np.float64),
        "coherence": ((), np.float64),
        "violation": ((), np.float64),
        "labels": ((), np.int32),
        "utility": ((), np.float64),
        "util_mean": ((), np.float64),
        "util_count": ((), np.int64),
        "usage": ((), np.int64),
        "timestamp": ((), np.float64),
        "ids": ((), np.int64),
        "alive": ((), np.bool_),
    }
    if store_certainty:
        spec["certainty"] = ((rows, cols, layers), np.float32)
    return spec


class ColumnStore:
    """Preallocated per-entry columns; ``capacity`` rows, grown by doubling up to ``max_rows``."""

    def __init__(self, spec: dict, max_rows: int, initial: int = 16):
        self.spec = spec
        self.max_rows = max_rows
        self.capacity = 0
        self.columns: dict[str, np.ndarray] = {}
        #: the largest ``|x - q/127|`` (L2) of any embedding row ``x`` ever written and its
        #: int8 copy ``q`` (never lowered: a bound, so the int8 prefilter stays exact)
        self.quant_error = 0.0
        self.entry_bytes = int(
            sum(
                np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
                for shape, dt in spec.values()
            )
        )
        self._allocate(min(initial, max_rows))

    def _allocate(self, capacity: int) -> None:
        new = {}
        for name, (shape, dtype) in self.spec.items():
            transposed = name in TRANSPOSED
            arr = np.zeros((*shape, capacity) if transposed else (capacity, *shape), dtype=dtype)
            if name == "labels":
                arr[:] = -1
            old = self.columns.get(name)
            if old is not None:
                if transposed:
                    arr[..., : self.capacity] = old
                else:
                    arr[: self.capacity] = old
            new[name] = arr
        # swap in all at once: a failed allocation above leaves the store as it was
        self.columns = new
        self.capacity = capacity

    def plan_capacity(self, rows_needed: int) -> int:
        cap = max(self.capacity, 1)
        while cap < rows_needed:
            cap *= 2
        return min(cap, self.max_rows) if rows_needed <= self.max_rows else rows_needed

    def ensure_capacity(self, rows_needed: int) -> None:
        if rows_needed > self.capacity:
            self._allocate(self.plan_capacity(rows_needed))

    def __getattr__(self, name):
        try:
            return self.__dict__["columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def set_embeddings(self, slots, rows) -> None:
        """Write embedding rows and their column-major (and int8) copies together."""
        self.columns["embeddings"][slots] = rows
        if "embeddings_t" in self.columns:
            self.columns["embeddings_t"][:, slots] = np.asarray(rows).T
        if "embeddings_q" in self.columns:
            from .kernels.query import quantize_rows

            q, err = quantize_rows(np.ascontiguousarray(rows, dtype=np.float32))
            self.columns["embeddings_q"][:, slots] = q.T
            if err.shape[0]:
                self.quant_error = max(self.quant_error, float(err.max()))

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.columns["alive"])

    def free_slots(self, n: int) -> np.ndarray:
        """The ``n`` lowest free slots (deterministic placement)."""
        return np.flatnonzero(~self.columns["alive"])[:n]

    @property
    def allocated_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.columns.values()))

    def fingerprint(self) -> str:
        """A digest of every column (for "nothing changed" checks)."""
        h = hashlib.sha256()
        for name in sorted(self.columns):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.columns[name]).tobytes())
        return h.hexdigest()
