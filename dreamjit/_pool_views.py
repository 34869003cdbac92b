"""Read-side methods of :class:`~dreamjit.DreamPool`: lookups, stats, invariants, files."""
from __future__ import annotations

import numpy as np

from ._validate import is_integer
from .features import SolverResult
from .results import DreamEntry

__all__ = ["PoolViewsMixin"]


class PoolViewsMixin:
    """Lookups (``len``, ``in``, ``[]``, ``ids``, iteration), stats, invariant
    checks and save/load; mixed into ``DreamPool``."""

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, eid) -> bool:
        """True for the id of a live entry. Ids are integers (Python or numpy, any width);
        anything else (a bool, a float such as ``1.0``, a string) is never an id: False."""
        return is_integer(eid) and int(eid) in self._slot_of

    def _slot(self, eid) -> int:
        """The slot of a live id; ``KeyError`` for an unknown or evicted id and for a key
        that is not an integer (bools, floats and strings are never ids)."""
        if not is_integer(eid):
            raise KeyError(eid)
        try:
            return self._slot_of[int(eid)]
        except KeyError:
            raise KeyError(eid) from None

    def __getitem__(self, eid) -> DreamEntry:
        with self._lock.read():
            return self._entry_at(self._slot(eid))

    def _entry_at(self, slot: int) -> DreamEntry:
        """A snapshot of the entry in ``slot`` (read lock held)."""
        s = self._store
        label = int(s.labels[slot])
        util = float(s.utility[slot])
        return DreamEntry(
            id=int(s.ids[slot]), tensor=s.tensors[slot].copy(),
            certainty=s.certainty[slot].copy() if "certainty" in s.columns else None,
            result=SolverResult(float(s.energy[slot]), float(s.coherence[slot]),
                                float(s.violation[slot])),
            chroma=s.chroma[slot].copy(), label=None if label < 0 else label,
            utility=None if np.isnan(util) else util, util_mean=float(s.util_mean[slot]),
            usage_count=int(s.usage[slot]), timestamp=float(s.timestamp[slot]),
            spectral=s.spectral[slot].copy(), embedding=s.embeddings[slot].copy())

    def ids(self) -> np.ndarray:
        """Live ids, oldest first (int64 array)."""
        with self._lock.read():
            if self._store is None:
                return np.empty(0, dtype=np.int64)
            return np.sort(self._store.ids[self._store.live_slots()])

    #: entries read per hold of the read lock while iterating
    ITER_CHUNK = 256

    def __iter__(self):
        """The entries live when iteration starts, oldest first (:class:`DreamEntry` snapshots).

        Safe beside writers in other threads: entries are read in chunks of
        :attr:`ITER_CHUNK`, each chunk under the read lock (consistent within
        a chunk; writers run between chunks). An entry evicted or removed
        before its chunk is read is skipped, never a ``KeyError``; entries
        added after iteration started are not included.
        """
        ids = self.ids().tolist()
        for lo in range(0, len(ids), self.ITER_CHUNK):
            with self._lock.read():
                slots = self._live_slots_of(ids[lo:lo + self.ITER_CHUNK])
                chunk = [self._entry_at(slot) for slot in slots]
            yield from chunk  # never yield while holding the lock

    def _live_slots_of(self, ids) -> np.ndarray:
        """Slots of those ``ids`` still live, in the given order (read lock held)."""
        get = self._slot_of.get
        slots = [get(int(i), -1) for i in ids]
        return np.array([sl for sl in slots if sl >= 0], dtype=np.int64)

    def _entries_of(self, ids) -> list:
        """Snapshots of those ``ids`` still live, in order, all read under one read lock."""
        with self._lock.read():
            return [self._entry_at(slot) for slot in self._live_slots_of(np.asarray(ids).tolist())]

    def _gather(self, column: str, ids) -> np.ndarray:
        """``column`` rows of those ``ids`` still live, in order, read under one read lock."""
        with self._lock.read():
            if self._store is None:
                return np.empty((0, *(self._shape or ())), np.float32)
            slots = self._live_slots_of(np.asarray(ids).tolist())
            return self._store.columns[column][slots].copy()

    # ------------------------------------------------------------------ stats
    def used_bytes(self) -> int:
        """Logical bytes in use: live entries' storage rows plus index arrays."""
        if self._store is None:
            return 0
        return len(self) * self._store.entry_bytes + self._index_nbytes()

    def memory_budget_stats(self) -> tuple:
        """Memory use against the budget.

        Returns
        -------
        tuple
            ``(current_mb, max_mb, usage_ratio, count)``: MiB in use (logical,
            exact: live entries' storage rows plus index arrays), the budget in
            MiB (None when unbounded), their ratio (0.0 when unbounded) and the
            number of live entries.
        """
        with self._lock.read():
            used = self.used_bytes()
            budget = self.config.budget_bytes
            ratio = used / budget if budget else 0.0
            return (used / 2**20, self.config.memory_budget_mb, ratio, len(self))

    def stats(self) -> dict:
        """Counts, means of the solver results, label counts, bytes and index state.

        Returns
        -------
        dict
            ``count``, ``next_id``, ``evicted`` (stored entries removed so
            far), ``capacity``, ``bytes_used``, ``bytes_allocated``,
            ``entry_bytes``, ``tensor_shape``, ``mean_energy``,
            ``mean_coherence``, ``mean_violation``, ``label_counts`` (label ->
            count), ``unlabeled``, and the index keys ``index`` ("exact" or
            "ann", the one answering queries), ``ann_ready``, ``ann_building``
            and ``index_bytes``.
        """
        with self._lock.read():
            s = self._store
            live = s.live_slots() if s is not None else np.empty(0, np.int64)
            out = {"count": int(live.shape[0]), "next_id": self._next_id, "evicted": self._evicted,
                   "capacity": 0 if s is None else s.capacity,
                   "bytes_used": self.used_bytes(),
                   "bytes_allocated": 0 if s is None else s.allocated_bytes + self._index_nbytes(),
                   "entry_bytes": self.entry_bytes, "tensor_shape": self._shape,
                   "parallel_reads": self._lock.shared_reads}
            for col in ("energy", "coherence", "violation"):
                out[f"mean_{col}"] = _mean(s.columns[col][live]) if live.size else float("nan")
            labels, counts = np.unique(s.labels[live], return_counts=True) if live.size else ([], [])
            out["label_counts"] = {int(lab): int(c) for lab, c in zip(labels, counts) if lab >= 0}
            out["unlabeled"] = int(sum(c for lab, c in zip(labels, counts) if lab < 0))
            out.update(self._index_stats())
            return out

    def _check_invariants(self) -> None:
        """Raise CriticalStateError if the bookkeeping disagrees with storage."""
        s = self._store
        problems = []
        if s is not None:
            live = s.live_slots()
            if live.shape[0] != len(self._slot_of):
                problems.append(f"{live.shape[0]} live slots but {len(self._slot_of)} mapped ids")
            ids = s.ids[live]
            if np.unique(ids).shape[0] != ids.shape[0]:
                problems.append("duplicate live ids")
            if ids.size and ids.max() >= self._next_id:
                problems.append("an id at or above the id counter")
            if any(self._slot_of.get(int(i)) != int(sl) for i, sl in zip(ids, live)):
                problems.append("slot map disagrees with the ids column")
        budget = self.config.budget_bytes
        if budget is not None and self.used_bytes() > budget:
            problems.append(f"{self.used_bytes()} bytes used of a {budget} byte budget")
        if len(self) > self.config.max_size:
            problems.append(f"{len(self)} entries above max_size {self.config.max_size}")
        if problems:
            from .errors import CriticalStateError

            raise CriticalStateError("pool", repr(self), "consistent bookkeeping",
                                     detail="; ".join(problems))

    def save(self, path) -> str:
        """Write the pool to one ``.npz`` file, atomically.

        The file holds a JSON header (format version, config, counters and a
        checksum of every array) and the live storage columns; nothing is
        pickled. It is written to a temporary file in the same directory,
        fsynced, then moved over ``path`` with ``os.replace``, so ``path``
        always holds a complete file. ``python -m dreamjit inspect FILE``
        prints the header and checks the checksums.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write (conventionally ending in ``.npz``).

        Returns
        -------
        str
            The path written.

        Examples
        --------
        >>> import os, tempfile, numpy as np, dreamjit as dj
        >>> pool = dj.DreamPool()
        >>> eid = pool.add(np.full((4, 4, 3), 0.5), dj.SolverResult(1.0, 0.9, 0.0), label=3)
        >>> path = pool.save(os.path.join(tempfile.mkdtemp(), "pool.npz"))
        >>> loaded = dj.DreamPool.load(path)
        >>> loaded.ids().tolist(), loaded[eid].label
        ([0], 3)
        """
        from .io import save_pool

        return save_pool(self, path)

    @classmethod
    def load(cls, path):
        """Read a pool written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        DreamPool
            An equal pool: same config, ids, entries and counters.

        Raises
        ------
        IndexCorruptedError
            Any damage: truncation, a checksum mismatch, a wrong format
            version, inconsistent columns or counters.
        FileNotFoundError
            No file at ``path``.
        """
        from .io import load_pool

        return load_pool(cls, path)

    def fingerprint(self) -> str:
        """Digest of all storage and bookkeeping (equal before/after a refused call)."""
        with self._lock.read():
            base = self._store.fingerprint() if self._store is not None else ""
            return f"{base}:{self._next_id}:{len(self._slot_of)}:{self._evicted}:{self._embedding_mode}"

    def __repr__(self):
        return (f"DreamPool(count={len(self)}, max_size={self.config.max_size}, "
                f"shape={self._shape}, eviction={self.config.eviction!r})")


def _mean(values: np.ndarray) -> float:
    """Mean of finite float64 values, finite even when their sum overflows (results
    near the float64 limit): then computed on values scaled by their largest magnitude."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(values.mean())
    if not np.isfinite(mean):
        scale = float(np.abs(values).max())
        mean = scale * float((values / scale).mean())
        mean = min(max(mean, float(values.min())), float(values.max()))
    return mean
