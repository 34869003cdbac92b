"""Saving and loading pools: one versioned ``.npz`` file, never a pickle.

The file holds a JSON header (format version, config, tensor shape, id
counter, a checksum of every array) as a uint8 array, and the live storage
columns in id order. Writes are atomic: a temporary file in the same
directory is written, flushed and fsynced, then moved over the target with
``os.replace``. Loading checks everything and raises
:class:`~dreamjit.errors.IndexCorruptedError` on any mismatch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile

import numpy as np

from ._storage import DERIVED, column_spec
from .config import PoolConfig
from .errors import DreamError, IndexCorruptedError

__all__ = ["save_pool", "load_pool", "read_header", "FORMAT_VERSION"]

logger = logging.getLogger("dreamjit")

FORMAT_VERSION = 1
MAGIC = "dreamjit-pool"
_HEADER = "__header__"


def _checksum(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def save_pool(pool, path) -> str:
    """Write ``pool`` to ``path`` atomically; returns the path written."""
    path = os.fspath(path)
    with pool._lock.read():
        store = pool._store
        arrays = {}
        if store is not None:
            live = store.live_slots()
            live = live[np.argsort(store.ids[live], kind="stable")]
            arrays = {name: np.ascontiguousarray(col[live]) for name, col in store.columns.items()
                      if name not in DERIVED}
        header = {
            "magic": MAGIC, "format_version": FORMAT_VERSION,
            "config": pool.config.to_dict(),
            "tensor_shape": None if pool._shape is None else list(pool._shape),
            "next_id": int(pool._next_id), "evicted": int(pool._evicted),
            "embedding_mode": pool._embedding_mode, "count": len(pool),
            "checksums": {name: _checksum(a) for name, a in arrays.items()},
        }
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".dreamjit-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **{_HEADER: blob}, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    logger.info("saved %d entries to %s", header["count"], path)
    return path


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _corrupt(path, what, detail=""):
    return IndexCorruptedError("path", os.fspath(path), f"a dreamjit pool file with {what}",
                               detail=detail)


def _read(path):
    """``(header, arrays)`` from a file, every failure as IndexCorruptedError."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as npz:
            if _HEADER not in npz.files:
                raise _corrupt(path, "a header")
            raw = npz[_HEADER]
            arrays = {name: npz[name] for name in npz.files if name != _HEADER}
    except DreamError:
        raise
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:
        raise _corrupt(path, "readable arrays (no pickles, no truncation)",
                       f"{type(exc).__name__}: {exc}") from None
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _corrupt(path, "a uint8 header")
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(path, "a JSON header", str(exc)) from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise _corrupt(path, f"magic {MAGIC!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise _corrupt(path, f"format_version {FORMAT_VERSION}",
                       f"found {header.get('format_version')!r}")
    return header, arrays


def read_header(path) -> dict:
    """The header of a saved pool, after checking every array's checksum
    (adds ``"integrity": "ok"``; raises IndexCorruptedError otherwise)."""
    header, arrays = _read(path)
    _check_arrays(path, header, arrays)
    return {**header, "integrity": "ok"}


def _check_arrays(path, header, arrays):
    sums = header.get("checksums")
    if not isinstance(sums, dict) or set(sums) != set(arrays):
        raise _corrupt(path, "a checksum for every array",
                       f"arrays {sorted(arrays)} vs checksums {sorted(sums or {})}")
    for name, arr in arrays.items():
        if _checksum(arr) != sums[name]:
            raise _corrupt(path, f"an intact {name!r} array", "checksum mismatch")


def load_pool(cls, path):
    """A new ``cls`` pool from ``path`` (see :meth:`DreamPool.load`)."""
    header, arrays = _read(path)
    _check_arrays(path, header, arrays)
    try:
        config = PoolConfig.from_dict(header["config"])
        count, next_id = int(header["count"]), int(header["next_id"])
        shape = header["tensor_shape"]
        shape = None if shape is None else tuple(int(s) for s in shape)
        mode = header["embedding_mode"]
        evicted = int(header.get("evicted", 0))
    except (DreamError, KeyError, TypeError, ValueError) as exc:
        raise _corrupt(path, "a valid config and counters", str(exc)) from None
    if mode not in (None, "mapper", "user"):
        raise _corrupt(path, "a known embedding mode", repr(mode))
    pool = cls(config)
    if shape is None or count == 0:
        if count or arrays and any(a.shape[0] for a in arrays.values()):
            raise _corrupt(path, "no entries when no tensor shape is recorded")
        if shape is not None:
            pool._setup(shape)
        pool._next_id, pool._evicted, pool._embedding_mode = next_id, evicted, mode
        return pool
    spec = {name: value for name, value in
            column_spec(shape, config.embedding_dim, config.store_certainty).items()
            if name not in DERIVED}
    if set(spec) != set(arrays):
        raise _corrupt(path, f"columns {sorted(spec)}", f"found {sorted(arrays)}")
    for name, (row_shape, dtype) in spec.items():
        arr = arrays[name]
        if arr.dtype != np.dtype(dtype) or arr.shape != (count, *row_shape):
            raise _corrupt(path, f"column {name!r} of dtype {np.dtype(dtype)} and shape "
                           f"{(count, *row_shape)}", f"found {arr.dtype} {arr.shape}")
    ids = arrays["ids"]
    if not arrays["alive"].all() or (count > 1 and not (np.diff(ids) > 0).all()) \
            or ids[0] < 0 or ids[-1] >= next_id:
        raise _corrupt(path, "live entries with increasing ids below the id counter")
    if count > config.max_size:
        raise _corrupt(path, f"at most max_size={config.max_size} entries", f"found {count}")
    for name in ("energy", "coherence", "violation", "utility", "util_mean", "timestamp"):
        col = arrays[name]
        if not np.isfinite(col if name != "utility" else np.nan_to_num(col)).all():
            raise _corrupt(path, f"finite {name!r} values")
    for name in ("tensors", "embeddings", "chroma", "spectral"):
        if not np.isfinite(arrays[name]).all():
            raise _corrupt(path, f"finite {name!r} values")
    pool._setup(shape)
    store = pool._store
    store.ensure_capacity(count)
    for name, arr in arrays.items():
        store.columns[name][:count] = arr
    store.embeddings_t[:, :count] = arrays["embeddings"].T
    slots = np.arange(count, dtype=np.int64)
    pool._slot_of = dict(zip(ids.tolist(), slots.tolist()))
    pool._next_id, pool._evicted, pool._embedding_mode = next_id, evicted, mode
    try:
        pool._check_invariants()
    except DreamError as exc:
        raise _corrupt(path, "a pool within its own limits", str(exc)) from None
    pool._after_add(slots)  # indexes: exact now, ANN rebuilt by the usual rules
    logger.info("loaded %d entries from %s", count, os.fspath(path))
    return pool
