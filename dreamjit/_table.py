"""The entry table of a :class:`~dreamjit.DreamPool`: ids, slots and the storage columns.

:class:`EntryTable` owns the :class:`~dreamjit._storage.ColumnStore`, the
tensor shape, the id -> slot map, the id counter, the evicted counter, the
embedding mode and the embedding mapper (fixed by the shape). It issues ids,
writes and removes slots, answers lookups, checks its own bookkeeping and
moves its state to and from plain columns (for :mod:`dreamjit.io`). It takes
no locks: the pool calls it under its readers-writer lock.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Generic, TypeVar, overload

import numpy as np

from ._storage import (
    COPY_ROWS,
    DERIVED,
    N_SPECTRAL,
    ON_DISK,
    ColumnStore,
    column_spec,
    read_rows,
    row_crcs,
)
from ._validate import is_integer
from .embedding import EmbeddingMapper
from .features import SolverResult
from .kernels.usage import count_slot_uses, count_uses
from .results import DreamEntry

__all__ = ["COLUMN_DTYPES", "Columns", "EntryTable", "make_mapper"]


#: the metadata columns :meth:`EntryTable.columns` gives, with their dtypes (``chroma``
#: ``(n, C)`` and ``spectral`` ``(n, 6)`` are 2-d, the others 1-d)
COLUMN_DTYPES = {
    "ids": np.int64,
    "labels": np.int32,
    "energy": np.float64,
    "coherence": np.float64,
    "violation": np.float64,
    "utility": np.float64,
    "util_mean": np.float64,
    "usage": np.int64,
    "timestamp": np.float64,
    "chroma": np.float32,
    "spectral": np.float32,
}
#: the fields :meth:`EntryTable.rewrite` can overwrite
_REWRITABLE = frozenset({"tensor", "embedding", "chroma", "spectral", "result", "label", "utility"})


class Columns:
    """A read-only namespace of per-entry numpy arrays aligned with each other: one
    row per live entry, oldest first (``ids``, ``labels`` (-1 for none), ``energy``,
    ``coherence``, ``violation``, ``utility`` (NaN for none), ``util_mean``,
    ``usage``, ``timestamp``, ``chroma`` (n, C) and ``spectral`` (n, 6), in
    :class:`~dreamjit.SpectralFeatures` field order). The arrays are read-only copies.

    Parameters
    ----------
    arrays : dict
        Column name -> array, all of one length.
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: dict):
        frozen = {}
        for name, arr in arrays.items():
            arr = np.array(arr, copy=True)
            arr.setflags(write=False)
            frozen[name] = arr
        object.__setattr__(self, "_arrays", frozen)

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_arrays")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("Columns is read-only")

    def __getitem__(self, name):
        return self._arrays[name]

    def __len__(self) -> int:
        """The number of rows (live entries)."""
        return int(self._arrays["ids"].shape[0])

    def keys(self) -> list:
        """The column names.

        Returns
        -------
        list of str
            The names, in column order.
        """
        return list(self._arrays)

    def __dir__(self):
        return sorted(set(object.__dir__(self)) | set(self._arrays))

    def __repr__(self):
        return f"Columns({len(self)} rows: {', '.join(self._arrays)})"


T = TypeVar("T")


def make_mapper(cfg, shape: tuple) -> EmbeddingMapper:
    """The embedding mapper of a pool with config ``cfg`` and tensors of ``shape``."""
    return EmbeddingMapper(
        cfg.embedding_dim,
        cfg.seed,
        shape[-1],
        cfg.embedding_weights,
        cfg.label_buckets,
        cfg.spatial_grid,
    )


class _ReadOnly(Generic[T]):
    """A read-only attribute ``name`` that reads its owner's private ``_name``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._private = "_" + name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _ReadOnly[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj, objtype=None):
        return self if obj is None else getattr(obj, self._private)

    def __set__(self, obj: object, value: T) -> None:
        raise AttributeError(f"{self._private[1:]} is read-only")


class EntryTable:
    """Storage columns plus the bookkeeping that maps entry ids to slots."""

    def __init__(self, config):
        self.config = config
        self._store: ColumnStore | None = None
        self._shape: tuple | None = None
        self._mapper: EmbeddingMapper | None = None
        self._embedding_mode: str | None = None  # "mapper" or "user", fixed by the first add
        self._slot_of: dict[int, int] = {}
        self._next_id = 0
        self._evicted = 0
        self._removed = 0

    # ------------------------------------------------------------------ set-up
    def setup(self, shape: tuple, adopt=None) -> None:
        """Allocate the columns for tensors of ``shape`` (once, before the first write).

        With ``tensor_store="mmap"`` the tensors go to a new file in ``config.path``;
        ``adopt=(file, slots)`` reopens a saved one instead: the file itself when its
        live rows ``slots`` are ``0..count-1``, else a compacted copy of those rows.
        """
        cfg = self.config
        spec = column_spec(shape, cfg.embedding_dim, cfg.store_certainty)
        if cfg.tensor_store == "mmap":
            os.makedirs(cfg.path, exist_ok=True)
            fresh = os.path.join(cfg.path, f"tensors-{uuid.uuid4().hex[:16]}.f32")
            self._store = ColumnStore(spec, self._disk_rows(spec), tensor_file=fresh)
        else:
            self._store = ColumnStore(spec, cfg.max_size)
        self._shape = tuple(shape)
        self._mapper = make_mapper(cfg, shape)
        if adopt is not None:
            self._open_saved(*adopt)

    def _open_saved(self, source: str, slots: np.ndarray) -> None:
        """Take the saved tensor rows ``slots`` of file ``source`` into this empty table:
        the file itself when they are rows ``0..n-1``, else a compacted copy (the saved
        file is then left as it was)."""
        store = self._columns()
        if np.array_equal(slots, np.arange(slots.shape[0])):
            store.reopen(source)
        else:
            self._copy_rows(source, slots)

    def _disk_rows(self, spec) -> int:
        """Most tensor rows the file may hold: ``max_size``, and the disk budget's rows."""
        cfg = self.config
        rows = cfg.max_size
        budget = cfg.disk_budget_bytes
        if budget is not None:
            row = ColumnStore(spec, 1, initial=0, on_disk=True).disk_entry_bytes
            rows = min(rows, max(budget // max(row, 1), 1))
        return int(rows)

    def _copy_rows(self, source: str, slots: np.ndarray) -> None:
        """Copy rows ``slots`` of the tensor file ``source`` to rows ``0..n-1`` of this
        table's file, a block at a time (RAM stays bounded)."""
        store = self._columns()
        n = slots.shape[0]
        store.ensure_capacity(n)
        shape, dtype = store.spec[ON_DISK]
        dest = store.columns[ON_DISK]
        for lo in range(0, n, COPY_ROWS):
            hi = min(lo + COPY_ROWS, n)  # the file may hold more rows than there are entries
            dest[lo:hi] = read_rows(source, slots[lo:hi], shape, dtype)
            store.release(np.arange(lo, hi))
        store.flush()

    def store_entry_bytes(self, shape: tuple | None = None) -> int:
        """Bytes of one entry's storage rows in RAM (of the table, or of a table for
        ``shape``); with ``tensor_store="mmap"`` the tensor row is on disk instead."""
        if self._store is not None:
            return self._store.entry_bytes
        if shape is None:
            return 0
        return self._probe(shape).entry_bytes

    def store_disk_entry_bytes(self, shape: tuple | None = None) -> int:
        """Bytes of one entry's tensor row on disk (0 with tensors in RAM)."""
        if self._store is not None:
            return self._store.disk_entry_bytes
        if shape is None:
            return 0
        return self._probe(shape).disk_entry_bytes

    def _probe(self, shape) -> ColumnStore:
        cfg = self.config
        spec = column_spec(shape, cfg.embedding_dim, cfg.store_certainty)
        return ColumnStore(spec, 1, initial=0, on_disk=cfg.tensor_store == "mmap")

    # ------------------------------------------------------------------ state
    @property
    def store(self) -> ColumnStore | None:
        """The storage columns (None before the first add); read them, write through the table."""
        return self._store

    def _columns(self) -> ColumnStore:
        """The storage columns of a table already set up (every writer and every reader
        of given slots runs after the first add)."""
        assert self._store is not None, "setup() runs before the first write"
        return self._store

    def set_embedding_mode(self, mode: str) -> None:
        if self._embedding_mode is None:
            self._embedding_mode = mode

    #: the tensor shape (None before the first add)
    shape: _ReadOnly[tuple | None] = _ReadOnly()
    #: the embedding mapper (None before the first add)
    mapper: _ReadOnly[EmbeddingMapper | None] = _ReadOnly()
    #: "mapper" or "user", fixed by the first add (None before it)
    embedding_mode: _ReadOnly[str | None] = _ReadOnly()
    #: the id the next added entry gets
    next_id: _ReadOnly[int] = _ReadOnly()
    #: how many entries were evicted so far
    evicted: _ReadOnly[int] = _ReadOnly()

    @property
    def removed(self) -> int:
        """Entries removed by the user (``remove``, ``del``, ``clear``), not by eviction."""
        return self._removed

    @property
    def capacity(self) -> int:
        return 0 if self._store is None else self._store.capacity

    @property
    def allocated_bytes(self) -> int:
        return 0 if self._store is None else self._store.allocated_bytes

    @property
    def disk_bytes(self) -> int:
        """Size of the tensor file (0 with tensors in RAM)."""
        return 0 if self._store is None else self._store.disk_bytes

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self._slot_of)

    def contains(self, eid) -> bool:
        """True for the id of a live entry (integers only; bools, floats, strings: False)."""
        return is_integer(eid) and int(eid) in self._slot_of

    def slot(self, eid) -> int:
        """The slot of a live id; ``KeyError`` for an unknown or evicted id and for a key
        that is not an integer (bools, floats and strings are never ids)."""
        if not is_integer(eid):
            raise KeyError(eid)
        try:
            return self._slot_of[int(eid)]
        except KeyError:
            raise KeyError(eid) from None

    def slot_or_none(self, eid: int):
        """The slot of a live (Python int) id, or -1."""
        return self._slot_of.get(eid, -1)

    def slots_of(self, ids) -> np.ndarray:
        """Slots of those ``ids`` still live, in the given order."""
        get = self._slot_of.get
        slots = [get(int(i), -1) for i in ids]
        return np.array([sl for sl in slots if sl >= 0], dtype=np.int64)

    def live_slots(self) -> np.ndarray:
        if self._store is None:
            return np.empty(0, dtype=np.int64)
        return self._store.live_slots()

    def ids(self) -> np.ndarray:
        """Live ids, oldest first (int64)."""
        if self._store is None:
            return np.empty(0, dtype=np.int64)
        return np.sort(self._store.ids[self._store.live_slots()])

    def live_slots_by_id(self) -> np.ndarray:
        """Slots of the live entries, oldest (lowest id) first.

        Returns
        -------
        numpy.ndarray of int64
        """
        if self._store is None:
            return np.empty(0, dtype=np.int64)
        live = self._store.live_slots()
        return live[np.argsort(self._store.ids[live], kind="stable")]

    def columns(self) -> Columns:
        """The metadata columns of the live entries, oldest first.

        Returns
        -------
        Columns
            A read-only namespace of numpy arrays aligned with each other (copies:
            later writes to the pool do not show through).
        """
        slots = self.live_slots_by_id()
        if self._store is None:
            empty = {name: np.empty(0, dtype=dt) for name, dt in COLUMN_DTYPES.items()}
            empty["chroma"] = np.empty((0, 0), np.float32)  # channels unknown before an add
            empty["spectral"] = np.empty((0, N_SPECTRAL), np.float32)
            return Columns(empty)
        s = self._store.columns
        return Columns({name: s[name][slots] for name in COLUMN_DTYPES})

    def ids_at(self, slots) -> np.ndarray:
        return self._columns().ids[slots]

    def slot_map(self) -> dict:
        """A copy of the id -> slot map."""
        return dict(self._slot_of)

    def entry(self, slot: int) -> DreamEntry:
        """A snapshot of the entry in ``slot``."""
        s = self._columns()
        label = int(s.labels[slot])
        util = float(s.utility[slot])
        return DreamEntry(
            id=int(s.ids[slot]),
            tensor=s.tensors[slot].copy(),
            certainty=s.certainty[slot].copy() if "certainty" in s.columns else None,
            result=SolverResult(
                float(s.energy[slot]), float(s.coherence[slot]), float(s.violation[slot])
            ),
            chroma=s.chroma[slot].copy(),
            label=None if label < 0 else label,
            utility=None if np.isnan(util) else util,
            util_mean=float(s.util_mean[slot]),
            usage_count=int(s.usage[slot]),
            timestamp=float(s.timestamp[slot]),
            spectral=s.spectral[slot].copy(),
            embedding=s.embeddings[slot].copy(),
        )

    def gather(self, column: str, ids) -> np.ndarray:
        """``column`` rows of those ``ids`` still live, in order (copies)."""
        if self._store is None:
            return np.empty((0, *(self._shape or ())), np.float32)
        slots = self.slots_of(np.asarray(ids).tolist())
        return self._store.columns[column][slots].copy()

    # ------------------------------------------------------------------ writes
    def issue_ids(self, m: int) -> np.ndarray:
        """The next ``m`` ids (not yet issued: :meth:`advance` issues them)."""
        return np.arange(self._next_id, self._next_id + m, dtype=np.int64)

    def advance(self, m: int, dropped: int = 0) -> None:
        """Issue ``m`` ids, ``dropped`` of which were evicted within their own batch."""
        self._next_id += m
        self._evicted += dropped

    def ensure_capacity(self, rows: int) -> None:
        """Grow the columns to ``rows`` (may raise; then nothing changed)."""
        self._columns().ensure_capacity(rows)

    def free_slots(self, n: int) -> np.ndarray:
        return self._columns().free_slots(n)

    def write(
        self, slots, ids, tensors, certainty, embeddings, chroma, spectral, results, labels, utility
    ) -> None:
        """Fill ``slots`` with new live entries ``ids`` (rows of already validated arrays)."""
        s = self._columns()
        s.tensors.reshape(s.capacity, *tensors.shape[1:])[slots] = tensors
        if s.tensor_file is not None:
            s.release(slots)  # the rows are in the page cache / file, not this process
        if certainty is not None:
            s.certainty[slots] = certainty
        elif "certainty" in s.columns:
            s.certainty[slots] = 1.0
        s.set_embeddings(slots, embeddings)
        s.chroma[slots] = chroma
        s.spectral[slots] = spectral
        s.energy[slots], s.coherence[slots], s.violation[slots] = results.T
        s.labels[slots] = labels
        given = ~np.isnan(utility)
        s.utility[slots] = utility
        s.util_mean[slots] = np.where(given, utility, 0.0)
        s.util_count[slots] = given
        s.usage[slots] = 0
        s.timestamp[slots] = time.time()
        s.ids[slots] = ids
        s.alive[slots] = True
        self._slot_of.update(zip(ids.tolist(), slots.tolist()))

    def remove(self, slots: np.ndarray, evicted: bool = True) -> None:
        """Drop the live entries in ``slots`` (distinct), counted as evicted or, with
        ``evicted=False``, as removed by the user. Their ids are never issued again."""
        s = self._columns()
        for eid in s.ids[slots].tolist():
            del self._slot_of[eid]
        s.alive[slots] = False
        if evicted:
            self._evicted += int(slots.shape[0])
        else:
            self._removed += int(slots.shape[0])

    def rewrite(self, slot: int, fields: dict) -> None:
        """Overwrite fields of the live entry in ``slot`` in place. ``fields`` maps some of
        ``tensor``, ``embedding``, ``chroma``, ``spectral``, ``result``, ``label`` and
        ``utility`` to new values, already validated and computed (None: unchanged). Its
        id, timestamp and usage count stay; a new ``utility`` restarts the running mean at
        that value."""
        unknown = set(fields) - _REWRITABLE
        if unknown:
            raise TypeError(f"rewrite: unknown fields {sorted(unknown)}")
        new = {name: value for name, value in fields.items() if value is not None}
        s = self._columns()
        if "tensor" in new:
            s.tensors.reshape(s.capacity, *new["tensor"].shape)[slot] = new["tensor"]
            if s.tensor_file is not None:
                s.release(np.array([slot]))  # as write(): the row lives in the file
        if "embedding" in new:
            s.set_embeddings(np.array([slot]), new["embedding"][None])
        for name, column in (("chroma", s.chroma), ("spectral", s.spectral), ("label", s.labels)):
            if name in new:
                column[slot] = new[name]
        if "result" in new:
            s.energy[slot], s.coherence[slot], s.violation[slot] = new["result"]
        if "utility" in new:
            s.utility[slot] = new["utility"]
            s.util_mean[slot] = new["utility"]
            s.util_count[slot] = 1

    def fold_utilities(self, slots: np.ndarray, u: np.ndarray) -> None:
        """Fold utilities ``u`` into the running means of live ``slots`` (repeats allowed)."""
        s = self._columns()
        total = np.zeros(s.capacity)
        count = np.zeros(s.capacity, dtype=np.int64)
        np.add.at(total, slots, u)
        np.add.at(count, slots, 1)
        touched = np.flatnonzero(count)
        n_old = s.util_count[touched]
        s.util_mean[touched] = (s.util_mean[touched] * n_old + total[touched]) / (
            n_old + count[touched]
        )
        s.util_count[touched] = n_old + count[touched]

    def use(self, slots) -> np.ndarray:
        """The ids of ``slots`` (int64, distinct slots of one result), counting one use of
        each (the caller serialises counting).

        Parameters
        ----------
        slots : numpy.ndarray
            ``(k,)`` distinct slots of live entries (any integer type).

        Returns
        -------
        numpy.ndarray
            ``(k,)`` int64 ids, a new array.
        """
        cols = self._columns().columns  # the dict: cheaper than the store's attributes
        if slots.dtype != np.int64:  # one compiled signature
            slots = slots.astype(np.int64)
        return count_uses(cols["usage"], cols["ids"], slots)

    def count_uses(self, slots) -> None:
        """One use of each of ``slots``, as :meth:`use` without gathering the ids (a caller
        that has them already: the fused soft path's kernel gathers them with the hits).

        Parameters
        ----------
        slots : numpy.ndarray
            ``(k,)`` int64 distinct slots of live entries (the caller serialises counting).

        Returns
        -------
        None
        """
        count_slot_uses(self._columns().columns["usage"], slots)

    def count_usage(self, slots, times=None) -> None:
        """One more use (``times[i]`` more when given) of each of ``slots`` (distinct; the
        caller serialises counting)."""
        self._columns().usage[slots] += 1 if times is None else times

    # ------------------------------------------------------------------ checks
    def problems(self) -> list:
        """What disagrees between the bookkeeping and the columns (empty when consistent)."""
        s = self._store
        out = []
        if s is None:
            if self._slot_of:
                out.append(f"{len(self._slot_of)} mapped ids but no storage")
            return out
        live = s.live_slots()
        if live.shape[0] != len(self._slot_of):
            out.append(f"{live.shape[0]} live slots but {len(self._slot_of)} mapped ids")
        ids = s.ids[live]
        if np.unique(ids).shape[0] != ids.shape[0]:
            out.append("duplicate live ids")
        if ids.size and ids.max() >= self._next_id:
            out.append("an id at or above the id counter")
        if ids.size and ids.min() < 0:
            out.append("a negative id")
        if any(self._slot_of.get(int(i)) != int(sl) for i, sl in zip(ids, live)):
            out.append("slot map disagrees with the ids column")
        return out

    def fingerprint(self) -> str:
        """Digest of all columns and bookkeeping (equal before/after a refused call)."""
        base = self._store.fingerprint() if self._store is not None else ""
        return (
            f"{base}:{self._next_id}:{len(self._slot_of)}:{self._evicted}:{self._removed}:"
            f"{self._embedding_mode}"
        )

    # ------------------------------------------------------------------ files
    def to_columns(self) -> tuple:
        """``(state, arrays)``: counters, shape and mode, and the live rows of every stored
        column (derived columns left out), oldest first."""
        state = {
            "tensor_shape": None if self._shape is None else list(self._shape),
            "next_id": int(self._next_id),
            "evicted": int(self._evicted),
            "removed": int(self._removed),
            "embedding_mode": self._embedding_mode,
            "count": len(self),
        }
        arrays = {}
        store = self._store
        if store is not None:
            live = store.live_slots()
            live = live[np.argsort(store.ids[live], kind="stable")]
            tensor_file = store.tensor_file
            on_disk = tensor_file is not None
            arrays = {
                name: np.ascontiguousarray(col[live])
                for name, col in store.columns.items()
                if name not in DERIVED and not (on_disk and name == ON_DISK)
            }
            if tensor_file is not None:  # a sealed sidecar: rows stay in the file, with CRCs
                store.flush()
                arrays["tensor_slots"] = live.astype(np.int64)
                arrays["tensor_crc"] = row_crcs(tensor_file, live, store.disk_entry_bytes)
                state["tensor_file"] = tensor_file
        return state, arrays

    def from_columns(
        self, shape, arrays: dict, count: int, next_id: int, evicted: int, mode, removed: int = 0
    ) -> None:
        """Fill an empty table from :meth:`to_columns` output (validated by the caller);
        entries take slots ``0..count-1``. With ``tensor_store="mmap"``, ``arrays``
        holds ``"tensor_source": (file, slots)`` (checked by the caller) instead of
        the tensors: the file is reopened (see :meth:`setup`)."""
        arrays = dict(arrays)
        adopt = arrays.pop("tensor_source", None)
        if shape is not None and self._shape is None:
            self.setup(tuple(shape), adopt=adopt)
        elif adopt is not None:  # set up already (tensor_shape configured): still empty
            self._open_saved(*adopt)
        if count:
            store = self._columns()
            store.ensure_capacity(count)
            for name, arr in arrays.items():
                store.columns[name][:count] = arr
            store.set_embeddings(np.arange(count), arrays["embeddings"])
            self._slot_of = dict(zip(arrays["ids"].tolist(), range(count)))
        self._next_id, self._evicted, self._embedding_mode = next_id, evicted, mode
        self._removed = removed
