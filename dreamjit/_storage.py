"""Columnar (structure-of-arrays) entry storage, grown by doubling."""

from __future__ import annotations

import hashlib
import mmap
import os
import zlib

import numpy as np

N_SPECTRAL = 6

#: columns stored column-major, shape (per-entry size, capacity): the exact
#: index scans ``embeddings_t`` across entries, which vectorises (4x faster
#: than row-major dot products without fastmath)
TRANSPOSED = frozenset({"embeddings_t"})
#: columns recomputed from others on load (never written to files)
DERIVED = frozenset({"embeddings_t"})
#: the column kept in a memory-mapped file with ``tensor_store="mmap"``
ON_DISK = "tensors"
#: rows copied per step when a tensor file is compacted (bounds the RAM used)
COPY_ROWS = 1024


def row_bytes(spec: dict, names) -> int:
    """Bytes per entry of the columns ``names`` of ``spec``."""
    return int(
        sum(
            np.dtype(dt).itemsize * int(np.prod(shape, dtype=np.int64))
            for name, (shape, dt) in spec.items()
            if name in names
        )
    )


def row_crcs(path: str, slots: np.ndarray, row: int) -> np.ndarray:
    """CRC-32 (uint32) of rows ``slots`` (``row`` bytes each) of the file ``path``, read
    with ``pread`` (through the page cache, never mapped into this process). A row
    past the end of the file reads short and so gets another CRC."""
    out = np.empty(slots.shape[0], dtype=np.uint32)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, slot in enumerate(slots.tolist()):
            out[i] = zlib.crc32(os.pread(fd, row, slot * row))
    finally:
        os.close(fd)
    return out


def read_rows(path: str, slots: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """Rows ``slots`` of a tensor file as an array ``(len(slots), *shape)`` (pread)."""
    row = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    out = np.empty((slots.shape[0], *shape), dtype=dtype)
    flat = out.reshape(slots.shape[0], -1).view(np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, slot in enumerate(slots.tolist()):
            data = os.pread(fd, row, slot * row)
            if len(data) != row:
                raise EOFError(f"row {slot} of {path} is cut short")
            flat[i] = np.frombuffer(data, dtype=np.uint8)
    finally:
        os.close(fd)
    return out


def column_spec(shape: tuple, dim: int, store_certainty: bool) -> dict:
    """name -> (per-entry shape, dtype) for a pool of tensors of ``shape``."""
    rows, cols = shape[0], shape[1]
    layers = shape[2] if len(shape) == 4 else 1
    channels = shape[-1]
    spec = {
        "tensors": (tuple(shape), np.float32),
        "embeddings": ((dim,), np.float32),
        "embeddings_t": ((dim,), np.float32),
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
    """Preallocated per-entry columns; ``capacity`` rows, grown by doubling up to ``max_rows``.

    With ``tensor_file`` the ``tensors`` column is a ``numpy.memmap`` of that
    file (created or, with ``adopt``, opened as it is: its rows are kept), grown
    by extending the file; ``entry_bytes`` then counts the RAM columns only and
    ``disk_entry_bytes`` the tensor row.
    """

    def __init__(
        self,
        spec: dict,
        max_rows: int,
        initial: int = 16,
        tensor_file: str | None = None,
        on_disk: bool = False,
    ):
        self.spec = spec
        self.max_rows = max_rows
        self.capacity = 0
        self.columns: dict[str, np.ndarray] = {}
        self.tensor_file = tensor_file
        self._map: mmap.mmap | None = None  # the tensor file's mapping
        disk = {ON_DISK} if (on_disk or tensor_file is not None) else set()
        self.disk_entry_bytes = row_bytes(spec, disk)
        self.entry_bytes = row_bytes(spec, set(spec) - disk)
        if tensor_file is not None:
            with open(tensor_file, "xb"):  # a new file, never one in use
                pass
        self._allocate(min(initial, max_rows))

    def reopen(self, tensor_file: str) -> None:
        """Use the existing tensor file ``tensor_file`` (its rows kept) instead of this
        empty store's own new one, which is deleted."""
        assert self.tensor_file is not None and not self.columns["alive"].any()
        own = self.tensor_file
        rows = os.path.getsize(tensor_file) // max(self.disk_entry_bytes, 1)
        self.columns.pop(ON_DISK)
        self.tensor_file = tensor_file
        self._allocate(max(self.capacity, rows))
        if own != tensor_file:
            os.remove(own)

    def _disk_column(self, capacity: int) -> np.ndarray:
        """The tensors column mapped from the file for ``capacity`` rows (the file
        grows, its rows stay)."""
        assert self.tensor_file is not None
        shape, dtype = self.spec[ON_DISK]
        size = capacity * self.disk_entry_bytes
        with open(self.tensor_file, "r+b") as f:
            if os.fstat(f.fileno()).st_size < size:
                f.truncate(size)
            if capacity == 0:
                self._map = None
                return np.zeros((0, *shape), dtype=dtype)
            self._map = mmap.mmap(f.fileno(), size)  # shared, read-write
        return np.frombuffer(self._map, dtype=dtype).reshape(capacity, *shape)

    def release(self, slots=None) -> None:
        """Drop the mapped tensor pages of rows ``slots`` (all rows when None) from
        this process's memory; written rows are kept by the page cache and the file,
        so resident memory stays bounded while a pool larger than RAM fills."""
        if self._map is None or self.capacity == 0:
            return
        row = self.disk_entry_bytes
        if slots is None or len(slots) == 0:
            lo, hi = 0, self.capacity * row
        else:
            lo, hi = int(np.min(slots)) * row, (int(np.max(slots)) + 1) * row
        lo -= lo % mmap.PAGESIZE
        self._map.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(self._map)) - lo)

    def _allocate(self, capacity: int) -> None:
        new = {}
        for name, (shape, dtype) in self.spec.items():
            transposed = name in TRANSPOSED
            if name == ON_DISK and self.tensor_file is not None:
                new[name] = self._disk_column(capacity)  # old rows are in the file already
                continue
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
        """Write embedding rows and their column-major copy together."""
        self.columns["embeddings"][slots] = rows
        if "embeddings_t" in self.columns:
            self.columns["embeddings_t"][:, slots] = np.asarray(rows).T

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.columns["alive"])

    def free_slots(self, n: int) -> np.ndarray:
        """The ``n`` lowest free slots (deterministic placement)."""
        return np.flatnonzero(~self.columns["alive"])[:n]

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the columns held in RAM."""
        return int(sum(a.nbytes for n, a in self.columns.items() if not self.is_mapped(n)))

    def is_mapped(self, name: str) -> bool:
        """True for the column kept in the memory-mapped tensor file."""
        return name == ON_DISK and self.tensor_file is not None

    @property
    def disk_bytes(self) -> int:
        """Size of the tensor file (0 without one)."""
        return 0 if self.tensor_file is None else os.path.getsize(self.tensor_file)

    def flush(self) -> None:
        """Write the memory-mapped rows to the file and fsync it (no-op in RAM)."""
        if self._map is not None:
            self._map.flush()
        if self.tensor_file is not None:
            fd = os.open(self.tensor_file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def fingerprint(self) -> str:
        """A digest of every column (for "nothing changed" checks)."""
        h = hashlib.sha256()
        for name in sorted(self.columns):
            h.update(name.encode())
            col = self.columns[name]
            if self.is_mapped(name):  # a block at a time: the file may be larger than RAM
                for lo in range(0, col.shape[0], COPY_ROWS):
                    h.update(np.ascontiguousarray(col[lo : lo + COPY_ROWS]).tobytes())
                    self.release(np.arange(lo, min(lo + COPY_ROWS, col.shape[0])))
            else:
                h.update(np.ascontiguousarray(col).tobytes())
        return h.hexdigest()
