"""Saving and loading pools: one versioned ``.npz`` file, never a pickle.

File layout (``FORMAT_VERSION`` 4): an uncompressed (stored) zip, as
``numpy.savez`` writes it, with one ``.npy`` member per storage column (the
live entries in id order, nothing derived) and ``__header__.npy``, a uint8
array holding the header as canonical JSON: format version, config, tensor
shape, counters, the SHA-256 of every column, ``graph`` and
``header_sha256``, the SHA-256 of the canonical JSON of the rest of the
header. ``graph`` is null, or the sizes and settings of the NN-descent search
graph saved in the members ``graph_ids`` (each row's entry id),
``graph_indptr``, ``graph_indices``, ``graph_entries`` and ``graph_block``
(checksummed like the columns; see
:meth:`~dreamjit.index.NNDescentIndex.graph_arrays`), and its ``calibration``:
null, or the walk's beam calibrated for it (``beam``, ``epsilon``, ``recall``,
``target``: :func:`~dreamjit.index.calibrate.calibrate_beam`). A loaded pool adopts
the graph when its settings match the config's (else it builds one as
usual); a graph that is not a well-formed graph over the saved ids, or a
calibration out of its fields' ranges, makes the file corrupt. Format 3 (the
same without ``calibration``: such a graph is calibrated when adopted) and
format 2 (without ``graph``) still load.

Writes are atomic: a temporary file ``.dreamjit-<name>-<random>.tmp`` is
written in the target's directory, flushed and fsynced, then moved over the
target with ``os.replace``. A save onto a symlink writes through to the file
it points to (the link stays), and the new file keeps the mode of the file it
replaces (a new file gets ``0o666`` minus the umask), as ``numpy.save`` would.
A process killed during a save (``kill -9``, power loss) may leave its
temporary file behind: the target still holds the previous complete file,
loading never looks at temporary files, and they can be deleted.

Loading trusts nothing in the file. Every size is checked before anything is
read or allocated: the header's length and JSON nesting before it is parsed
(non-finite numbers refused), then the header's checksum, fields and config,
then every member's size, compression and ``.npy`` header against the shape
the header and config imply, and only then the data (its checksums, then its
values: finite floats, labels >= -1, counts >= 0, unit or zero embeddings,
increasing ids below the id counter). Any failure is an
:class:`~dreamjit.errors.IndexCorruptedError` naming what was wrong; memory
used by a load stays proportional to the file's size (a pool with no entries
may reserve at most ``MAX_EMPTY_SETUP_BYTES``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import stat
import struct
import zipfile

import numpy as np

from ._storage import DERIVED, N_SPECTRAL, ON_DISK, column_spec, row_bytes, row_crcs
from .config import LATER_FIELDS, PoolConfig
from .errors import CriticalStateError, DreamError, IndexCorruptedError

__all__ = ["save_pool", "load_pool", "read_header", "FORMAT_VERSION"]

logger = logging.getLogger("dreamjit")

FORMAT_VERSION = 4
#: versions this reader loads (2: the same file without a search graph; 3: without its
#: beam calibration)
READABLE_VERSIONS = (2, 3, 4)
MAGIC = "dreamjit-pool"
_HEADER = "__header__"
_HEADER_SHA = "header_sha256"
_HEADER_KEYS = frozenset(
    {
        "magic",
        "format_version",
        "config",
        "tensor_shape",
        "next_id",
        "evicted",
        "embedding_mode",
        "count",
        "checksums",
        _HEADER_SHA,
    }
)
#: header fields a format 2 file may leave out (written by later versions of that format)
_OPTIONAL_KEYS = frozenset({"removed"})
#: format 3 adds ``graph``: null, or the shape of the saved NN-descent search graph
_GRAPH = "graph"
_GRAPH_KEYS = frozenset({"rows", "edges", "entries", "n_components", "settings"})
#: format 4 adds the graph's beam calibration (null, or calibrate.CALIBRATION_FIELDS)
_CALIBRATION = "calibration"
_GRAPH_SETTINGS = {"n_neighbors": int, "max_degree": int, "seed": int, "graph": str}
#: graph member -> (dtype, shape from the header's graph object and the embedding dim)
_GRAPH_MEMBERS = {
    "graph_ids": ("<i8", lambda g, d: (g["rows"],)),
    "graph_indptr": ("<i8", lambda g, d: (g["rows"] + 1,)),
    "graph_indices": ("<i4", lambda g, d: (g["edges"],)),
    "graph_entries": ("<i8", lambda g, d: (g["entries"],)),
    "graph_block": ("|i1", lambda g, d: (d, g["entries"])),
}
#: header field of a pool with tensor_store="mmap": the tensor file's name in config.path
_TENSOR_FILE = "tensor_file"
_EMBEDDING_MODES = ("mapper", "user")

# --- limits of the loader: a file beyond any of them is refused before anything is allocated
#: bytes of the JSON header (a real one is about 2 KB)
MAX_HEADER_BYTES = 1 << 16
#: nesting of JSON arrays/objects in the header (a real one nests 3 deep)
MAX_JSON_DEPTH = 8
#: bytes of one member's ``.npy`` preamble (numpy writes 128)
MAX_NPY_HEADER = 4096
#: zip members (a real file has one per column plus the header)
MAX_MEMBERS = 256
#: bytes the zip reader may read at once while opening the archive (end record
#: search and central directory; a real central directory is about 2 KB)
MAX_DIRECTORY_READ = 1 << 17
#: storage a pool with no entries may reserve on creation (its first rows):
#: nothing in such a file proves entries that large are wanted
MAX_EMPTY_SETUP_BYTES = 1 << 30
#: estimated size of the embedding projection built on creation
MAX_PROJECTION_BYTES = 1 << 28
#: every integer and float in the header, and the id counter, stays below this
MAX_COUNTER = 2**62
#: embeddings are unit rows (or all zero) within this tolerance
UNIT_NORM_TOL = 1e-3


def _checksum(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _encode_header(header: dict) -> bytes:
    """The canonical JSON bytes of ``header`` with its ``header_sha256`` added."""
    body = {k: v for k, v in header.items() if k != _HEADER_SHA}
    return _canonical({**body, _HEADER_SHA: hashlib.sha256(_canonical(body)).hexdigest()})


# ---------------------------------------------------------------------- saving
def save_pool(pool, path) -> str:
    """Write ``pool`` to ``path`` atomically; returns ``path``.

    A symlink at ``path`` is followed (the file it points to is replaced, the
    link kept); an existing file's mode is kept, a new file gets ``0o666``
    minus the umask. A save killed half-way leaves the previous file intact
    and may leave ``.dreamjit-*.tmp`` beside it (never read by :func:`load_pool`).
    """
    path = os.fspath(path)
    config, state, arrays = pool.to_columns()
    graph = state.get("graph")
    arrays = dict(arrays)
    if graph is not None:
        for name in _GRAPH_MEMBERS:
            arrays[name] = np.ascontiguousarray(graph[name[len("graph_") :]])
    header = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "tensor_shape": state["tensor_shape"],
        "next_id": state["next_id"],
        "evicted": state["evicted"],
        "removed": state["removed"],
        "embedding_mode": state["embedding_mode"],
        "count": state["count"],
        "checksums": {name: _checksum(a) for name, a in arrays.items()},
        _GRAPH: None
        if graph is None
        else {
            "rows": int(graph["ids"].shape[0]),
            "edges": int(graph["indices"].shape[0]),
            "entries": int(graph["entries"].shape[0]),
            "n_components": int(graph["n_components"]),
            "settings": dict(graph["settings"]),
            _CALIBRATION: graph.get(_CALIBRATION),
        },
    }
    if "tensor_file" in state:  # a sealed sidecar of a memory-mapped tensor file
        header[_TENSOR_FILE] = os.path.basename(state["tensor_file"])
    blob = np.frombuffer(_encode_header(header), dtype=np.uint8)
    target = os.path.realpath(path)  # write through a symlink, as open() would
    directory = os.path.dirname(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: the umask applies when the temporary file is created
    fd, tmp = _create_temp(directory, os.path.basename(target))
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, allow_pickle=False, **{_HEADER: blob}, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    logger.info("saved %d entries to %s", header["count"], path)
    return path


def _create_temp(directory: str, name: str):
    """A new file ``.dreamjit-<name>-<random>.tmp`` in ``directory``, created
    with mode 0o666 so the umask applies (``tempfile.mkstemp`` would force 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".dreamjit-{name}-{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {directory}")


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


# ---------------------------------------------------------------------- loading
class _Corrupt(Exception):
    """Raised inside the reader; becomes IndexCorruptedError with the path."""

    def __init__(self, what, detail=""):
        super().__init__(what)
        self.what, self.detail = what, detail


def _corrupt(path, what, detail=""):
    return IndexCorruptedError(
        "path", os.fspath(path), f"a dreamjit pool file with {what}", detail=detail
    )


class _GuardedFile:
    """A read-only file whose reads are capped at ``limit`` bytes while
    ``limit`` is set: the zip reader reads the end record and the central
    directory in single reads, so a file claiming a huge directory is refused
    before the reader builds an object per claimed member."""

    def __init__(self, fh, size):
        self._fh, self.size = fh, size
        self.limit: int | None = MAX_DIRECTORY_READ

    def read(self, n=-1):
        if self.limit is not None:
            want = self.size - self._fh.tell() if n is None or n < 0 else n
            if want > self.limit:
                raise _Corrupt(
                    f"a zip directory of at most {self.limit} bytes",
                    f"the archive asks to read {want} bytes",
                )
        return self._fh.read(n)

    def seek(self, *args):
        return self._fh.seek(*args)

    def tell(self):
        return self._fh.tell()

    def seekable(self):
        return True

    def close(self):
        pass  # the caller closes the real file


def _read_exact(fp, n: int, what: str) -> bytes:
    data = fp.read(n)
    if len(data) != n:
        raise _Corrupt(f"a complete {what}", f"{len(data)} of {n} bytes")
    return data


_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}()")))


def _nesting(text: bytes) -> int:
    """Deepest bracket nesting in ``text`` (an over-estimate if strings hold brackets)."""
    kept = np.frombuffer(text.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if not kept.size:
        return 0
    step = np.where((kept == ord("[")) | (kept == ord("{")) | (kept == ord("(")), 1, -1)
    return int(np.cumsum(step).max())


def _members(zf, archive_size: int) -> dict:
    """name -> ZipInfo after checking names, compression and sizes (nothing read yet)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _Corrupt(f"at most {MAX_MEMBERS} members", f"found {len(infos)}")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _Corrupt("unique member names", f"duplicated: {dup[:5]}")
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Corrupt(
                f"member {info.filename!r} stored uncompressed, as save() writes it",
                f"compression method {info.compress_type}",
            )
        if info.flag_bits & 0x1:
            raise _Corrupt(f"member {info.filename!r} not encrypted")
        if info.compress_size != info.file_size:
            raise _Corrupt(
                f"member {info.filename!r} of equal stored and real size",
                f"{info.compress_size} vs {info.file_size} bytes",
            )
        total += info.file_size
    if total > archive_size:
        raise _Corrupt(
            "members that fit in the file",
            f"members claim {total} bytes in a {archive_size} byte file",
        )
    return dict(zip(names, infos))


def _open_npy(zf, info, name: str):
    """Open member ``info`` and parse its ``.npy`` preamble with numpy's own
    reader, after bounding its length and nesting. Returns
    ``(file, shape, fortran_order, dtype, data_bytes_left)``."""
    fp = zf.open(info)
    try:
        pre = _read_exact(fp, 10, f"{name!r} .npy header")
        if pre[:6] != b"\x93NUMPY":
            raise _Corrupt(f"member {name!r} in .npy format", "no .npy magic")
        version = (pre[6], pre[7])
        if version == (1, 0):
            hlen = struct.unpack("<H", pre[8:10])[0]
        elif version == (2, 0):
            pre += _read_exact(fp, 2, f"{name!r} .npy header")
            hlen = struct.unpack("<I", pre[8:12])[0]
        else:
            raise _Corrupt(f"member {name!r} in .npy format 1.0 or 2.0", f"version {version}")
        if hlen > MAX_NPY_HEADER or len(pre) + hlen > info.file_size:
            raise _Corrupt(
                f"member {name!r} with a .npy header of at most {MAX_NPY_HEADER} bytes",
                f"{hlen} bytes claimed",
            )
        text = _read_exact(fp, hlen, f"{name!r} .npy header")
        if _nesting(text) > 3:
            raise _Corrupt(f"member {name!r} with a plain .npy header", "nested too deeply")
        bio = io.BytesIO(pre + text)
        np.lib.format.read_magic(bio)
        try:
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(bio)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(bio)
        except (MemoryError, RecursionError):
            raise  # cannot happen within the bounds above; never hidden
        except Exception as exc:  # numpy's parser of untrusted text raises many types
            # (ValueError, SyntaxError, tokenize.TokenError, ...)
            raise _Corrupt(
                f"member {name!r} with a valid .npy header",
                f"{type(exc).__name__}: {str(exc)[:200]}",
            ) from None
        return fp, shape, fortran, dtype, info.file_size - len(pre) - hlen
    except BaseException:
        fp.close()
        raise


def _read_member(zf, info, name: str, dtype, shape) -> tuple:
    """``(array, sha256)`` of member ``name``, which must hold exactly ``shape`` of ``dtype``."""
    fp, got_shape, fortran, got_dtype, left = _open_npy(zf, info, name)
    with fp:
        dtype = np.dtype(dtype)
        if got_dtype != dtype:
            raise _Corrupt(f"member {name!r} of dtype {dtype.str}", f"found {got_dtype.str}")
        if tuple(got_shape) != tuple(shape):
            raise _Corrupt(f"member {name!r} of shape {tuple(shape)}", f"found {tuple(got_shape)}")
        if fortran:
            raise _Corrupt(f"member {name!r} in C order", "found fortran_order=True")
        nbytes = math.prod(shape) * dtype.itemsize
        if left != nbytes:
            raise _Corrupt(f"member {name!r} of {nbytes} data bytes", f"found {left}")
        data = _read_exact(fp, nbytes, f"{name!r} data")  # the zip reader checks the CRC at the end
        if fp.read(1):
            raise _Corrupt(f"member {name!r} without trailing bytes")
    h = hashlib.sha256()
    h.update(f"{dtype.str}{tuple(shape)}".encode())
    h.update(data)
    return np.frombuffer(data, dtype=dtype).reshape(shape), h.hexdigest()


def _reject_constant(text):
    raise ValueError(f"non-finite number {text}")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text}")
    return value


def _parse_header(zf, members) -> dict:
    info = members.get(_HEADER + ".npy")
    if info is None:
        raise _Corrupt(f"a {_HEADER!r} member", f"members {sorted(members)[:10]}")
    if info.file_size > MAX_HEADER_BYTES + MAX_NPY_HEADER:
        raise _Corrupt(f"a header of at most {MAX_HEADER_BYTES} bytes", f"{info.file_size} bytes")
    fp, shape, fortran, dtype, left = _open_npy(zf, info, _HEADER)
    with fp:
        if dtype != np.uint8 or len(shape) != 1 or fortran or shape[0] != left:
            raise _Corrupt("a 1-d uint8 header", f"found {dtype} {shape}")
        if left > MAX_HEADER_BYTES:
            raise _Corrupt(f"a header of at most {MAX_HEADER_BYTES} bytes", f"{left} bytes")
        raw = _read_exact(fp, left, "header")
        if fp.read(1):
            raise _Corrupt("a header without trailing bytes")
    depth = _nesting(re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw, flags=re.S))  # strings stripped
    if depth > MAX_JSON_DEPTH:
        raise _Corrupt(f"JSON nested at most {MAX_JSON_DEPTH} deep in the header", f"depth {depth}")
    try:
        header = json.loads(
            raw.decode("ascii"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise _Corrupt("a JSON header", str(exc)[:200]) from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise _Corrupt(f"magic {MAGIC!r}")
    version = header.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise _Corrupt(
            f"format_version in {list(READABLE_VERSIONS)} (the ones this dreamjit reads; "
            "for another: load it with the version that wrote it and save again)",
            f"found {version!r}",
        )
    sha = header.get(_HEADER_SHA)
    body = {k: v for k, v in header.items() if k != _HEADER_SHA}
    if not isinstance(sha, str) or hashlib.sha256(_canonical(body)).hexdigest() != sha:
        raise _Corrupt(
            "an intact header", "header_sha256 mismatch: the header was edited or damaged"
        )
    if _canonical(header) != raw:
        raise _Corrupt("a header in canonical JSON", "edited: keys, spacing or number forms differ")
    return header


def _int_field(header, key, lo, hi):
    value = header.get(key)
    if type(value) is not int or not lo <= value < hi:
        raise _Corrupt(f"header field {key!r} an integer in [{lo}, {hi})", f"found {value!r}"[:200])
    return value


def _check_numbers(obj, where="header"):
    """Every number in the parsed header is below MAX_COUNTER in magnitude."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and abs(obj) >= MAX_COUNTER:
        raise _Corrupt(f"{where} below 2**62 in magnitude", f"found {obj!r}"[:200])


def _removed_count(header) -> int:
    """The ``removed`` counter of a header (0 in files written before it existed)."""
    return _int_field(header, "removed", 0, MAX_COUNTER) if "removed" in header else 0


def _validate_header(header):
    """``(config, shape, count, next_id, evicted, mode)`` from a parsed header."""
    keys = set(header)
    want = _HEADER_KEYS | ({_TENSOR_FILE} if _TENSOR_FILE in keys else set())
    if header.get("format_version") == 2:
        want |= _OPTIONAL_KEYS & keys  # format 2 files from before these fields existed
    else:
        want = want | {_GRAPH} | _OPTIONAL_KEYS  # every format 3 writer writes them
    if keys != want:
        raise _Corrupt(
            f"header fields {sorted(want)}",
            f"missing {sorted(want - keys)}, unknown {sorted(keys - want)[:5]}",
        )
    _check_numbers(header)
    raw_config = header["config"]
    if not isinstance(raw_config, dict):
        raise _Corrupt("a config object", f"found {type(raw_config).__name__}")
    if header.get("format_version") != 2:  # format 3 writers write every setting
        missing = [key for key in LATER_FIELDS if key not in raw_config]
        if missing:
            raise _Corrupt("a config with every setting", f"missing {missing}")
    try:
        config = PoolConfig.from_dict(raw_config)
        rebuilt = config.to_dict()
        for key in LATER_FIELDS:  # files written before these settings existed
            if key not in raw_config:
                rebuilt.pop(key)
    except (DreamError, TypeError, ValueError, OverflowError, KeyError, AttributeError) as exc:
        raise _Corrupt("a valid config", str(exc)[:300]) from None
    if _canonical(rebuilt) != _canonical(raw_config):
        diff = sorted(
            k
            for k in set(rebuilt) | set(raw_config)
            if _canonical(rebuilt.get(k)) != _canonical(raw_config.get(k))
        )
        raise _Corrupt("a config of exactly the PoolConfig fields and types", f"differs in {diff}")
    count = _int_field(header, "count", 0, MAX_COUNTER)
    next_id = _int_field(header, "next_id", 0, MAX_COUNTER)
    evicted = _int_field(header, "evicted", 0, MAX_COUNTER)
    _removed_count(header)
    if count > config.max_size:
        raise _Corrupt(f"at most max_size={config.max_size} entries", f"count {count}")
    mode = header["embedding_mode"]
    if mode is not None and mode not in _EMBEDDING_MODES:
        raise _Corrupt(f"embedding_mode one of {_EMBEDDING_MODES} or null", f"found {mode!r}"[:200])
    if count and mode is None:
        raise _Corrupt("an embedding_mode for its entries", f"{count} entries, embedding_mode null")
    if count > next_id:
        raise _Corrupt("next_id above every entry's id", f"count {count}, next_id {next_id}")
    shape = header["tensor_shape"]
    if shape is not None:
        if not (
            isinstance(shape, list)
            and len(shape) in (3, 4)
            and all(type(s) is int and 1 <= s < 2**31 for s in shape)
        ):
            raise _Corrupt(
                "tensor_shape null or 3 or 4 integers in [1, 2**31)", f"found {shape!r}"[:200]
            )
        shape = tuple(shape)
    if config.tensor_shape is not None and shape != config.tensor_shape:
        raise _Corrupt(f"tensor_shape {list(config.tensor_shape)} as configured", f"found {shape}")
    if shape is None and count:
        raise _Corrupt("a tensor_shape for its entries", f"{count} entries, tensor_shape null")
    sums = header["checksums"]
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise _Corrupt("a checksums object of strings")
    mmap = config.tensor_store == "mmap" and shape is not None
    name = header.get(_TENSOR_FILE)
    if mmap != (name is not None):
        raise _Corrupt(
            "a tensor_file exactly for a pool with tensor_store='mmap'", f"found {name!r}"[:200]
        )
    if name is not None and not (
        isinstance(name, str) and re.fullmatch(r"tensors-[0-9a-f]{16}\.f32", name)
    ):
        raise _Corrupt("a tensor_file named tensors-<16 hex digits>.f32", f"found {name!r}"[:200])
    _check_graph_header(header.get(_GRAPH), count, shape, header["format_version"])
    return config, shape, count, next_id, evicted, mode


def _check_graph_header(graph, count, shape, version=FORMAT_VERSION) -> None:
    """The header's ``graph`` object: null, or sizes a graph over ``count`` entries can have
    (and, from format 4 on, its beam calibration: null or a well-formed record)."""
    if graph is None:
        return
    keys = _GRAPH_KEYS | ({_CALIBRATION} if version >= 4 else set())
    if not isinstance(graph, dict) or set(graph) != keys:
        raise _Corrupt(f"a graph object with fields {sorted(keys)} or null")
    if version >= 4:
        from .index.calibrate import check_calibration

        try:
            check_calibration(graph[_CALIBRATION])
        except IndexCorruptedError as exc:
            raise _Corrupt("a well-formed graph calibration", str(exc)[:300]) from None
    settings = graph["settings"]
    if not (
        isinstance(settings, dict)
        and set(settings) == set(_GRAPH_SETTINGS)
        and all(type(settings[k]) is t for k, t in _GRAPH_SETTINGS.items())
    ):
        raise _Corrupt(f"graph settings {sorted(_GRAPH_SETTINGS)}", f"found {settings!r}"[:200])
    for key in ("rows", "edges", "entries", "n_components"):
        if type(graph[key]) is not int or graph[key] < 0:
            raise _Corrupt(f"graph {key} a non-negative integer", f"found {graph[key]!r}"[:200])
    rows = graph["rows"]
    degree = settings["max_degree"] + 2  # a row's edges plus bridges (see per_entry_bound)
    if shape is None or not 1 <= rows <= count:
        raise _Corrupt(f"a graph of 1 to {count} rows", f"{rows} rows")
    if graph["edges"] > rows * max(degree, 1) or not 1 <= graph["entries"] <= rows:
        raise _Corrupt(
            f"a graph of at most {degree} edges a row and 1 to {rows} entries",
            f"{graph['edges']} edges, {graph['entries']} entries",
        )
    if not 1 <= graph["n_components"] <= rows:
        raise _Corrupt(f"graph n_components in [1, {rows}]", f"{graph['n_components']}")


def _expected_members(config, shape, count, graph=None) -> dict:
    """member name -> (column, dtype, shape) that save() writes for this header."""
    if shape is None:
        return {}
    spec = column_spec(shape, config.embedding_dim, config.store_certainty)
    mmap = config.tensor_store == "mmap"
    out = {
        f"{name}.npy": (name, np.dtype(dt), (count, *row))
        for name, (row, dt) in spec.items()
        if name not in DERIVED and not (mmap and name == ON_DISK)
    }
    if mmap:  # the sealed sidecar: where each live tensor row is and its CRC-32
        out["tensor_slots.npy"] = ("tensor_slots", np.dtype(np.int64), (count,))
        out["tensor_crc.npy"] = ("tensor_crc", np.dtype(np.uint32), (count,))
    if graph is not None:
        for name, (dt, shp) in _GRAPH_MEMBERS.items():
            out[f"{name}.npy"] = (name, np.dtype(dt), shp(graph, config.embedding_dim))
    return out


def _graph_of(arrays, header, config):
    """The saved graph (``graph_*`` columns moved out of ``arrays``) checked as a graph over
    the saved entries, as :meth:`~dreamjit.index.NNDescentIndex.graph_arrays` gives it;
    None without one."""
    meta = header.get(_GRAPH)
    if meta is None:
        return None
    from .index import NNDescentIndex

    graph = {name[len("graph_") :]: arrays.pop(name) for name in _GRAPH_MEMBERS}
    graph["n_components"] = meta["n_components"]
    graph["settings"] = dict(meta["settings"])
    graph[_CALIBRATION] = meta.get(_CALIBRATION)  # format 3: none (calibrated when adopted)
    try:
        NNDescentIndex.check_graph_arrays(graph, meta["rows"], config.embedding_dim)
    except IndexCorruptedError as exc:
        raise _Corrupt("an intact search graph", str(exc)[:300]) from None
    if not np.isin(graph["ids"], arrays["ids"]).all():
        raise _Corrupt("a search graph over the saved entries", "a graph row has an unknown id")
    return graph


def _check_setup_bounds(config, shape, count):
    """Refuse configs whose pool would reserve absurd memory on creation."""
    # the embedding projection (the mapper's feature groups, with slack for new ones),
    # built with the first entry's shape: checked even when that shape is not known yet
    features = (
        (shape[-1] if shape is not None else 1)
        + N_SPECTRAL
        + 1
        + int(getattr(config, "label_buckets", 0))
        + len(getattr(config, "embedding_weights", ()))
    )
    projection = 8 * features * config.embedding_dim
    if projection > MAX_PROJECTION_BYTES:
        raise _Corrupt(
            f"an embedding projection of at most {MAX_PROJECTION_BYTES} bytes",
            f"embedding_dim {config.embedding_dim} x about {features} features",
        )
    if shape is None or count:
        return  # entries: their storage is proven by the members' sizes, checked next
    spec = column_spec(shape, config.embedding_dim, config.store_certainty)
    entry = sum(math.prod(row) * np.dtype(dt).itemsize for row, dt in spec.values())
    if min(16, config.max_size) * entry > MAX_EMPTY_SETUP_BYTES:
        raise _Corrupt(
            f"an empty pool reserving at most {MAX_EMPTY_SETUP_BYTES} bytes on creation",
            f"{entry} bytes per entry for tensor_shape {list(shape)}",
        )


def _check_values(arrays, count, next_id):
    """Column values a pool can hold; generic over columns, with rules for the known ones."""
    for name, arr in arrays.items():
        if arr.dtype.kind == "f":
            # a NaN utility means none was given
            bad = np.isinf(arr) if name == "utility" else ~np.isfinite(arr)
            if bad.any():
                raise _Corrupt(
                    f"finite values in column {name!r}", f"entry {int(np.argwhere(bad)[0][0])}"
                )
    rules = {
        "labels": (-1, "labels >= -1 (-1: none)"),
        "usage": (0, "usage counts >= 0"),
        "util_count": (0, "feedback counts >= 0"),
        "certainty": (0, "certainties >= 0"),
    }
    for name, (lo, what) in rules.items():
        arr = arrays.get(name)
        if arr is not None and arr.size and arr.min() < lo:
            raise _Corrupt(what, f"column {name!r} holds {arr.min()}")
    if "alive" in arrays and not arrays["alive"].all():
        raise _Corrupt("only live entries", "an 'alive' value is False")
    ids = arrays.get("ids")
    if ids is not None and count:
        if ids[0] < 0 or ids[-1] >= next_id or (count > 1 and not (np.diff(ids) > 0).all()):
            raise _Corrupt(
                "unique increasing ids in [0, next_id)",
                f"ids from {ids[0]} to {ids[-1]}, next_id {next_id}",
            )
    emb = arrays.get("embeddings")
    if emb is not None and count:
        e = emb.astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", e, e))
        ok = (np.abs(norms - 1.0) <= UNIT_NORM_TOL) | (norms == 0.0)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise _Corrupt("unit (or all-zero) embeddings", f"entry {i} has norm {norms[i]:.6g}")


def _read_validated(path):
    """``(header, config, shape, count, next_id, evicted, mode, arrays)`` of a checked file."""
    path = os.fspath(path)
    with open(path, "rb") as fh:  # OSErrors about the path itself (missing, permissions) propagate
        try:
            size = os.fstat(fh.fileno()).st_size
            guarded = _GuardedFile(fh, size)
            with zipfile.ZipFile(guarded) as zf:
                guarded.limit = None
                members = _members(zf, size)
                header = _parse_header(zf, members)
                config, shape, count, next_id, evicted, mode = _validate_header(header)
                _check_setup_bounds(config, shape, count)
                expected = _expected_members(config, shape, count, header.get(_GRAPH))
                found = set(members) - {_HEADER + ".npy"}
                if found != set(expected):
                    raise _Corrupt(
                        f"members {sorted(expected)}",
                        f"missing {sorted(set(expected) - found)}, "
                        f"unknown {sorted(found - set(expected))[:5]}",
                    )
                sums = header["checksums"]
                if set(sums) != {col for col, _, _ in expected.values()}:
                    raise _Corrupt(
                        "a checksum for every column", f"checksums for {sorted(sums)[:30]}"
                    )
                for member, (_col, dtype, shp) in expected.items():  # sizes first, nothing read
                    want = math.prod(shp) * dtype.itemsize
                    got = members[member].file_size
                    if not want < got <= want + MAX_NPY_HEADER + 12:
                        raise _Corrupt(
                            f"member {member!r} of {want} data bytes",
                            f"{got} bytes including its .npy header",
                        )
                arrays = {}
                for member, (col, dtype, shp) in expected.items():
                    arr, digest = _read_member(zf, members[member], member, dtype, shp)
                    if digest != sums[col]:
                        raise _Corrupt(f"an intact {col!r} array", "checksum mismatch")
                    arrays[col] = arr
        except _Corrupt as exc:
            raise _corrupt(path, exc.what, exc.detail) from None
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            OSError,
            ValueError,
            struct.error,
            NotImplementedError,
            RuntimeError,
        ) as exc:
            raise _corrupt(
                path,
                "a readable zip archive (no truncation, no damage)",
                f"{type(exc).__name__}: {str(exc)[:200]}",
            ) from None
    try:
        graph = _graph_of(arrays, header, config)
        _check_values(arrays, count, next_id)
        if header.get(_TENSOR_FILE) is not None:
            arrays = _check_tensor_file(header[_TENSOR_FILE], config, shape, count, arrays)
    except _Corrupt as exc:
        raise _corrupt(path, exc.what, exc.detail) from None
    if graph is not None:
        arrays["__graph__"] = graph
    return header, config, shape, count, next_id, evicted, mode, arrays


def _check_tensor_file(name, config, shape, count, arrays) -> dict:
    """The memory-mapped tensor file a sealed sidecar names: present, large enough,
    and every saved row's CRC-32 as recorded. Returns ``arrays`` with
    ``tensor_source = (file, slots)`` in place of the slots and CRCs."""
    arrays = dict(arrays)
    slots = arrays.pop("tensor_slots")
    crc = arrays.pop("tensor_crc")
    file = os.path.join(config.path, name)
    if count and (slots.min() < 0 or np.unique(slots).shape[0] != count):
        raise _Corrupt("distinct tensor slots >= 0", f"slots from {slots.min()} to {slots.max()}")
    spec = column_spec(shape, config.embedding_dim, config.store_certainty)
    row = row_bytes(spec, {ON_DISK})
    try:
        size = os.path.getsize(file)
    except OSError as exc:
        raise _Corrupt(f"the tensor file {file}", f"{type(exc).__name__}: {exc}") from None
    need = (int(slots.max()) + 1) * row if count else 0
    if size < need or size % row:
        raise _Corrupt(
            f"a tensor file of whole {row}-byte rows, at least {need} bytes", f"{size} bytes"
        )
    if count:
        got = row_crcs(file, slots, row)
        bad = np.flatnonzero(got != crc)
        if bad.size:
            raise _Corrupt(
                "tensor rows as saved (CRC-32 of each)",
                f"{bad.size} rows differ, first the entry at position {int(bad[0])} "
                "(damaged, or overwritten by adds after the save)",
            )
        arrays["tensor_source"] = (file, slots)
    return arrays


def read_header(path) -> dict:
    """The header of a saved pool after every check :func:`load_pool` makes
    short of building the pool (adds ``"integrity": "ok"``; raises
    IndexCorruptedError otherwise)."""
    header = _read_validated(path)[0]
    return {**header, "integrity": "ok"}


def load_pool(cls, path):
    """A new ``cls`` pool from ``path`` (see :meth:`DreamPool.load`)."""
    header, config, shape, count, next_id, evicted, mode, arrays = _read_validated(path)
    graph = arrays.pop("__graph__", None)
    try:
        pool = cls.from_columns(
            config,
            shape,
            arrays,
            count=count,
            next_id=next_id,
            evicted=evicted,
            embedding_mode=mode,
            removed=_removed_count(header),
            graph=graph,
        )
    except CriticalStateError as exc:  # the entries break the config's limits or bookkeeping
        raise _corrupt(path, "a pool within its own limits", str(exc)) from None
    except DreamError as exc:
        raise _corrupt(path, "a config a pool can be built from", str(exc)) from None
    logger.info("loaded %d entries from %s", count, os.fspath(path))
    return pool
