import io
import json
import os
import pathlib
import queue
import signal
import stat
import struct
import subprocess
import sys
import threading
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest

import dreamjit as dj
from dreamjit import IndexCorruptedError, PoolConfig
from dreamjit.io import FORMAT_VERSION, _checksum, _encode_header

from invariants import assert_invariants

SHAPE = (5, 4, 2, 3)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_pool(n=12, **cfg):
    cfg.setdefault("memory_budget_mb", None)
    pool = dj.DreamPool(PoolConfig(**cfg))
    rng = np.random.default_rng(1)
    t = rng.random((n, *SHAPE), dtype=np.float32)
    r = np.column_stack([rng.random(n), np.full(n, 0.9), rng.random(n) * 0.1])
    pool.add_batch(t, r, labels=list(np.arange(n) % 3), utilities=[0.5] * n)
    pool.record_feedback(pool.ids()[:3], 1.0)
    return pool


# --------------------------------------------------------------------------- file crafting
# (shared with test_io_fuzz.py) A pool file is taken apart into (header, arrays) with plain
# numpy, changed, and put together again, sealed (column checksums and header_sha256
# recomputed, so the change reaches the loader's deeper checks) or not.


class RawJSON:
    """A header value written as this exact JSON text (Infinity, deep nesting, ...)."""

    def __init__(self, text):
        self.text = text


def read_parts(src):
    """``(header, arrays)`` of a pool file (path or bytes), read with plain zipfile and numpy."""
    src = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
    arrays = {}
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            with zf.open(info) as fp:
                arrays[info.filename[:-4]] = np.lib.format.read_array(fp, allow_pickle=False)
    header = json.loads(arrays.pop("__header__").tobytes())
    return header, arrays


def header_text(header, seal=True):
    """Header bytes: canonical and sealed, or (seal=False) canonical with a stale seal.
    RawJSON values are spliced in as their text."""
    raws = {}

    def swap(v):
        if isinstance(v, RawJSON):
            key = f"@@raw{len(raws)}@@"
            raws[key] = v.text
            return key
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    h = swap(header)
    if seal:
        text = _encode_header(h).decode()
    else:
        text = json.dumps(h, sort_keys=True, separators=(",", ":"))
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), raw)
    return text.encode()


def npy_bytes(arr):
    bio = io.BytesIO()
    np.lib.format.write_array(bio, np.asarray(arr), allow_pickle=False)
    return bio.getvalue()


def npy_raw(header_dict_text, data=b"", version=(1, 0)):
    """A .npy member with a hand-written header (which may lie about the data)."""
    text = header_dict_text.encode("latin1")
    lenfmt = "<H" if version == (1, 0) else "<I"
    pre = 8 + struct.calcsize(lenfmt)
    pad = 64 - (pre + len(text) + 1) % 64
    text = text + b" " * (pad % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, len(text)) + text + data


def zip_bytes(members, compression=zipfile.ZIP_STORED):
    """A zip of ``[(name, bytes)]`` (names may repeat)."""
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", compression) as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are wanted here
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
    return bio.getvalue()


def pack(
    header,
    arrays,
    *,
    seal=True,
    fix_sums=None,
    members=None,
    header_bytes=None,
    compression=zipfile.ZIP_STORED,
):
    """A pool file from parts. ``seal`` recomputes the column checksums (unless
    ``fix_sums=False``) and header_sha256; ``members`` replaces or adds raw
    members ``{name: bytes or None (drop)}``."""
    header = dict(header)
    if fix_sums if fix_sums is not None else seal:
        header["checksums"] = {k: _checksum(v) for k, v in arrays.items()}
    if header_bytes is None:
        header_bytes = header_text(header, seal)
    out = {"__header__.npy": npy_bytes(np.frombuffer(header_bytes, np.uint8))}
    out.update({f"{k}.npy": npy_bytes(v) for k, v in arrays.items()})
    for name, data in (members or {}).items():
        if data is None:
            out.pop(name, None)
        else:
            out[name] = data
    return zip_bytes(list(out.items()), compression)


def patch_member(data, name, method=None, crc=None, compress_size=None, file_size=None):
    """Rewrite fields of member ``name`` in its local header and central directory entry."""
    buf = bytearray(data)
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(name)
    local = info.header_offset
    assert buf[local : local + 4] == b"PK\x03\x04"
    cd = buf.find(b"PK\x01\x02")
    while cd >= 0:
        nlen = struct.unpack_from("<H", buf, cd + 28)[0]
        if buf[cd + 46 : cd + 46 + nlen] == name.encode():
            break
        cd = buf.find(b"PK\x01\x02", cd + 4)
    assert cd >= 0
    for value, at_local, at_cd, fmt in [
        (method, 8, 10, "<H"),
        (crc, 14, 16, "<I"),
        (compress_size, 18, 20, "<I"),
        (file_size, 22, 24, "<I"),
    ]:
        if value is not None:
            struct.pack_into(fmt, buf, local + at_local, value)
            struct.pack_into(fmt, buf, cd + at_cd, value)
    return bytes(buf)


def deflate_bomb(mib):
    """A raw deflate stream of ``mib`` MiB of zeros, about 1 KB per MiB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return first + again * (mib - 1) + c.flush(zlib.Z_FINISH)


def with_bomb(data, name="bomb.npy", mib=1400):
    """``data`` plus a deflate member inflating to ``mib`` MiB."""
    stream = deflate_bomb(mib)
    members = list(zipfile.ZipFile(io.BytesIO(data)).infolist())
    zf = zipfile.ZipFile(io.BytesIO(data))
    parts = [(i.filename, zf.read(i)) for i in members] + [(name, stream)]
    return patch_member(
        zip_bytes(parts), name, method=zipfile.ZIP_DEFLATED, file_size=(mib << 20) & 0xFFFFFFFF
    )


def load_traced(path):
    """``(pool or None, exception or None, peak traced bytes)`` of one load."""
    tracemalloc.start()
    try:
        try:
            return dj.DreamPool.load(path), None, tracemalloc.get_traced_memory()[1]
        except Exception as exc:  # noqa: BLE001 - the callers assert on the type
            return None, exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def refused(tmp_path, data, match=None, name="bad.npz", max_peak=16 << 20):
    """Assert ``data`` is refused with IndexCorruptedError, within ``max_peak`` traced bytes."""
    p = tmp_path / name
    p.write_bytes(data)
    pool, exc, peak = load_traced(p)
    assert pool is None, "a damaged file loaded"
    assert isinstance(exc, IndexCorruptedError), repr(exc)
    if match is not None:
        assert match in str(exc), str(exc)
    assert peak < max_peak, (peak, str(exc))
    return exc


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Saved pools: name -> file bytes."""
    d = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(3)
    user = dj.DreamPool(PoolConfig(max_size=10, embedding_dim=8, memory_budget_mb=None))
    user.add_batch(
        rng.random((6, 4, 4, 3), dtype=np.float32),
        np.column_stack([np.ones(6), np.full(6, 0.9), np.zeros(6)]),
        embeddings=rng.standard_normal((6, 8)),
        labels=[0, 1, None, 2, 0, 1],
    )
    pools = {
        "small": make_pool(12, max_size=8, store_certainty=True),
        "user": user,
        "empty": dj.DreamPool(PoolConfig(max_size=5)),
        "empty_shaped": dj.DreamPool(PoolConfig(max_size=5, tensor_shape=(4, 4, 3))),
    }
    return {name: pathlib.Path(p.save(d / f"{name}.npz")).read_bytes() for name, p in pools.items()}


# --------------------------------------------------------------------------- round trips
def test_round_trip_exact(tmp_path):
    pool = make_pool(12, max_size=8, store_certainty=True)
    pool.retrieve_similar([0.5, 0.4, 0.3], k=2)
    path = pool.save(tmp_path / "pool.npz")
    back = dj.DreamPool.load(path)
    assert_invariants(back)
    assert back.config == pool.config
    assert back.ids().tolist() == pool.ids().tolist()
    for eid in pool.ids():
        a, b = pool[eid], back[eid]
        for field in ("tensor", "certainty", "chroma", "spectral", "embedding"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert (a.result, a.label, a.utility, a.util_mean, a.usage_count, a.timestamp) == (
            b.result,
            b.label,
            b.utility,
            b.util_mean,
            b.usage_count,
            b.timestamp,
        )
    q = [0.7, 0.2, 0.1]
    h1, h2 = pool.retrieve_similar(q, k=4), back.retrieve_similar(q, k=4)
    assert h1.ids.tolist() == h2.ids.tolist() and np.array_equal(h1.scores, h2.scores)
    new_id = back.add(np.zeros(SHAPE, np.float32), (0, 0.9, 0))
    assert new_id == pool.table.next_id  # ids continue after the highest saved one
    assert_invariants(back)


def test_empty_pool_round_trip(tmp_path):
    for cfg in (PoolConfig(max_size=5), PoolConfig(max_size=5, tensor_shape=(4, 4, 3))):
        pool = dj.DreamPool(cfg)
        back = dj.DreamPool.load(pool.save(tmp_path / "empty.npz"))
        assert len(back) == 0 and back.config == pool.config
        assert back.tensor_shape == pool.tensor_shape
        assert back.fingerprint() == pool.fingerprint()
        assert_invariants(back)


def test_user_embedding_pool_round_trip_keeps_its_mode(tmp_path, saved):
    p = tmp_path / "user.npz"
    p.write_bytes(saved["user"])
    back = dj.DreamPool.load(p)
    assert back.table.embedding_mode == "user"
    with pytest.raises(dj.InvalidParameterError):  # still refuses a computed embedding
        back.add(np.zeros((4, 4, 3), np.float32), (0, 0.9, 0))
    assert back.add(np.zeros((4, 4, 3), np.float32), (0, 0.9, 0), embedding=np.ones(8)) == 6


def test_save_is_atomic_no_temp_left(tmp_path):
    pool = make_pool(4)
    pool.save(tmp_path / "p.npz")
    pool.save(tmp_path / "p.npz")
    assert sorted(os.listdir(tmp_path)) == ["p.npz"]


def test_file_is_a_plain_stored_npz_with_a_sealed_header(tmp_path):
    path = make_pool(4).save(tmp_path / "p.npz")
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    header, arrays = read_parts(path)
    assert header["format_version"] == FORMAT_VERSION == 4 and header["graph"] is None
    assert _encode_header(header) == header_text(header)
    assert set(header["checksums"]) == set(arrays)
    info = dj.io.read_header(path)
    assert info["integrity"] == "ok" and info["count"] == 4


# ------------------------------------------------------------------ save: links, modes, temps
def test_save_through_a_symlink_replaces_the_target_not_the_link(tmp_path):
    target = tmp_path / "real.npz"
    link = tmp_path / "link.npz"
    make_pool(3).save(target)
    link.symlink_to(target)
    make_pool(5).save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(dj.DreamPool.load(target)) == 5
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "new.npz")
    make_pool(2).save(dangling)  # creates the file the link points to, as open() would
    assert dangling.is_symlink() and len(dj.DreamPool.load(tmp_path / "new.npz")) == 2
    assert sorted(os.listdir(tmp_path)) == ["dangling.npz", "link.npz", "new.npz", "real.npz"]


def test_save_keeps_the_mode_of_the_file_it_replaces_else_the_umask(tmp_path):
    pool = make_pool(3)
    p = tmp_path / "p.npz"
    for mode in (0o644, 0o640, 0o600, 0o664):
        p.write_bytes(b"old")
        os.chmod(p, mode)
        pool.save(p)
        assert stat.S_IMODE(os.stat(p).st_mode) == mode
    # new files: in a child, so this process's umask is never changed under other threads
    script = (
        "import os, sys, numpy as np, dreamjit as dj; os.umask(int(sys.argv[2], 8));"
        "pool = dj.DreamPool(max_size=3); pool.save(sys.argv[1])"
    )
    for umask, want in (("022", 0o644), ("077", 0o600), ("002", 0o664)):
        q = tmp_path / f"new{umask}.npz"
        subprocess.run([sys.executable, "-c", script, str(q), umask], check=True, env=_child_env())
        assert stat.S_IMODE(os.stat(q).st_mode) == want, (umask, oct(os.stat(q).st_mode))


def test_load_ignores_temporary_files_left_by_killed_saves(tmp_path):
    pool = make_pool(4)
    p = pool.save(tmp_path / "p.npz")
    data = pathlib.Path(p).read_bytes()
    (tmp_path / ".dreamjit-p.npz-0123456789ab.tmp").write_bytes(data[: len(data) // 2])
    (tmp_path / ".dreamjit-p.npz-ba9876543210.tmp").write_bytes(b"")
    back = dj.DreamPool.load(p)
    assert back.ids().tolist() == pool.ids().tolist()
    pool.save(p)  # saving again works beside them, and leaves them alone
    assert len(os.listdir(tmp_path)) == 3
    with pytest.raises(IndexCorruptedError):  # a half-written temp itself is refused
        dj.DreamPool.load(tmp_path / ".dreamjit-p.npz-0123456789ab.tmp")


# --------------------------------------------------------------------------- damage
def test_truncated_files_raise_typed_error(tmp_path):
    path = make_pool(6).save(tmp_path / "p.npz")
    data = pathlib.Path(path).read_bytes()
    for cut in [0, 10, 100, len(data) // 2, len(data) - 1]:
        refused(tmp_path, data[:cut], name=f"cut{cut}.npz")


def test_random_byte_flips_always_detected(tmp_path):
    path = make_pool(6).save(tmp_path / "p.npz")
    data = bytearray(pathlib.Path(path).read_bytes())
    rng = np.random.default_rng(0)
    detected = 0
    orig = dj.DreamPool.load(path)
    for _ in range(200):
        bad = bytearray(data)
        pos = int(rng.integers(0, len(bad)))
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        p = tmp_path / "flip.npz"
        p.write_bytes(bytes(bad))
        try:
            back = dj.DreamPool.load(p)
        except IndexCorruptedError:
            detected += 1
            continue
        # a flip in zip metadata that changes nothing we read may load: then it must be exact
        assert back.fingerprint() == orig.fingerprint() and back.config == orig.config
    assert detected > 150


def test_object_arrays_and_pickles_refused(tmp_path):
    good = make_pool(3).save(tmp_path / "good.npz")
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["labels"] = np.array([object()] * 3, dtype=object)
    evil = tmp_path / "evil.npz"
    np.savez(evil, **arrays)  # numpy writes the object array as a pickle
    with pytest.raises(IndexCorruptedError):
        dj.DreamPool.load(evil)
    pkl = tmp_path / "p.pkl"
    import pickle

    pkl.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(IndexCorruptedError):
        dj.DreamPool.load(pkl)


def _set(key, value):
    def change(h, a):
        target = h
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]
        target[last] = value

    return change


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda h, a: h.update(format_version=99), "format_version in [2, 3, 4]"),
        (lambda h, a: h.update(format_version=1), "format_version in [2, 3, 4]"),
        (lambda h, a: h.update(magic="other"), "magic"),
        (_set("config.max_size", 0), "max_size"),
        (_set("config.max_size", 2), "max_size=2"),
        (_set("config.bogus", 1), "config"),
        (lambda h, a: h["config"].pop("seed"), "seed"),
        (_set("config.max_size", 8.0), "max_size"),
        (_set("next_id", 1), "next_id"),
        (_set("next_id", -5), "next_id"),
        (_set("next_id", 2**70), "2**62"),
        (_set("next_id", 2**62), "next_id"),
        (_set("next_id", True), "next_id"),
        (_set("next_id", "12"), "next_id"),
        (_set("evicted", -1), "evicted"),
        (_set("count", 7), "count"),
        (_set("count", 9), "max_size"),
        (_set("embedding_mode", None), "embedding_mode"),
        (_set("embedding_mode", "other"), "embedding_mode"),
        (_set("tensor_shape", [5, 4, 6]), "of shape"),
        (_set("tensor_shape", [5, 4, 0, 3]), "tensor_shape"),
        (_set("tensor_shape", None), "tensor_shape"),
        (_set("extra", 1), "unknown ['extra']"),
        (lambda h, a: h.pop("evicted"), "missing ['evicted']"),
        (lambda h, a: a.update(ids=a["ids"][::-1].copy()), "increasing ids"),
        (lambda h, a: a.update(ids=np.zeros_like(a["ids"])), "increasing ids"),
        (lambda h, a: a.update(tensors=a["tensors"][:, :1].copy()), "'tensors.npy' of"),
        (lambda h, a: a.update(energy=a["energy"].astype(np.float32)), "'energy.npy' of"),
        (lambda h, a: a.update(labels=a["labels"].astype(">i4")), "'labels.npy' of dtype"),
        (lambda h, a: a.update(tensors=np.asfortranarray(a["tensors"])), "C order"),
        (lambda h, a: a.pop("chroma"), "missing ['chroma.npy']"),
        (lambda h, a: a.update(extra=np.zeros(3)), "unknown ['extra.npy']"),
        (lambda h, a: a.update(labels=np.full_like(a["labels"], -5)), "labels >= -1"),
        (lambda h, a: a.update(usage=a["usage"] - 3), "usage counts >= 0"),
        (lambda h, a: a.update(util_count=a["util_count"] - 3), "feedback counts >= 0"),
        (lambda h, a: a.update(certainty=-a["certainty"]), "certainties >= 0"),
        (lambda h, a: a.update(embeddings=a["embeddings"] * 2), "unit"),
        (lambda h, a: a.update(energy=a["energy"] * np.inf), "finite"),
        (lambda h, a: a.update(utility=np.full_like(a["utility"], np.inf)), "finite"),
        (lambda h, a: a.update(spectral=a["spectral"] * np.nan), "finite"),
        (lambda h, a: a.update(alive=np.zeros_like(a["alive"])), "live entries"),
    ],
)
def test_self_consistent_but_invalid_files_refused(tmp_path, change, match):
    """Each change is sealed (checksums recomputed), so it reaches the check made for it."""
    pool = make_pool(5, store_certainty=True, max_size=8)
    header, arrays = read_parts(pool.save(tmp_path / "good.npz"))
    change(header, arrays)
    refused(tmp_path, pack(header, arrays), match)


def test_unit_or_zero_embeddings_and_nan_utility_accepted(tmp_path, saved):
    header, arrays = read_parts(saved["user"])
    arrays["embeddings"] = arrays["embeddings"].copy()
    arrays["embeddings"][1] = 0.0
    p = tmp_path / "zero.npz"
    p.write_bytes(pack(header, arrays))
    back = dj.DreamPool.load(p)
    assert np.isnan(arrays["utility"]).all() and np.array_equal(back[1].embedding, np.zeros(8))


@pytest.mark.parametrize(
    "change",
    [
        _set("config.seed", 1),
        _set("config.embedding_weights", [1.0, 0.5, 0.5, 0.5]),
        _set("next_id", 100),
        _set("config.coherence_threshold", 0.5),
    ],
)
def test_header_edits_detected_by_its_checksum(tmp_path, change):
    header, arrays = read_parts(make_pool(5).save(tmp_path / "good.npz"))
    change(header, arrays)
    refused(tmp_path, pack(header, arrays, seal=False, fix_sums=True), "header_sha256")


def test_checksum_mismatch_refused(tmp_path):
    header, arrays = read_parts(make_pool(5).save(tmp_path / "good.npz"))
    sums = {k: _checksum(v) for k, v in arrays.items()}
    arrays["energy"] = arrays["energy"] + 1.0
    header["checksums"] = sums
    refused(tmp_path, pack(header, arrays, fix_sums=False), "checksum mismatch")


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        dj.DreamPool.load("/nonexistent/dir/pool.npz")


# --------------------------------------------------------------------------- hostile files
def test_deeply_nested_header_refused_before_parsing(tmp_path, saved):
    header, arrays = read_parts(saved["small"])
    for depth, match in ((100_000, "at most 65536 bytes"), (1000, "nested at most 8")):
        header["config"] = RawJSON("[" * depth + "]" * depth)
        refused(tmp_path, pack(header, arrays), match)
    big = RawJSON('"' + "x" * 200_000 + '"')
    refused(tmp_path, pack({**header, "magic": big}, arrays), "at most 65536 bytes")


@pytest.mark.parametrize(
    "key",
    [
        "next_id",
        "count",
        "evicted",
        "config.max_size",
        "config.coherence_threshold",
        "config.memory_budget_mb",
    ],
)
@pytest.mark.parametrize("text", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_non_finite_numbers_refused(tmp_path, saved, key, text):
    header, arrays = read_parts(saved["small"])
    _set(key, RawJSON(text))(header, arrays)
    refused(tmp_path, pack(header, arrays), "a JSON header")


def test_non_finite_shape_element_refused(tmp_path, saved):
    header, arrays = read_parts(saved["small"])
    header["tensor_shape"] = [5, 4, RawJSON("Infinity"), 3]
    refused(tmp_path, pack(header, arrays), "non-finite")


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda h: (
                h.update(tensor_shape=[100000, 100000, 3]),
                h["config"].update(tensor_shape=[100000, 100000, 3]),
            ),
            "reserving at most",
        ),
        (lambda h: h.update(tensor_shape=[100000, 100000, 3]), "reserving at most"),
        (
            lambda h: (
                h.update(tensor_shape=[4, 4, 3]),
                h["config"].update(tensor_shape=[4, 4, 4]),
            ),
            "as configured",
        ),
        (lambda h: h["config"].update(embedding_dim=2**31), "embedding_dim=2147483648"),
        (
            lambda h: (h.update(tensor_shape=[4, 4, 3]), h["config"].update(embedding_dim=2**31)),
            "embedding_dim=2147483648",
        ),
        (lambda h: h["config"].update(label_buckets=2**31), "label_buckets=2147483648"),
        (lambda h: h["config"].update(memory_budget_mb=1e300), "below 2**62"),
        (lambda h: h["config"].update(max_size=2**70), "below 2**62"),
    ],
)
def test_absurd_config_refused_before_any_allocation(tmp_path, saved, change, match):
    header, arrays = read_parts(saved["empty"])
    change(header)
    refused(tmp_path, pack(header, arrays), match, max_peak=4 << 20)


def test_npy_member_claiming_huge_shape_refused_before_reading(tmp_path, saved):
    header, arrays = read_parts(saved["small"])
    n = len(arrays["ids"])
    tensors = arrays["tensors"]
    for shape in [(2**40, *SHAPE), (n, 2**40, 4, 2, 3), (2**40,)]:
        member = npy_raw(
            f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}", tensors.tobytes()
        )
        refused(tmp_path, pack(header, arrays, members={"tensors.npy": member}))
    # the header agrees with the huge count: the central directory sizes refuse it first
    header["count"], header["next_id"] = 2**40 - 1, 2**40
    header["config"]["max_size"] = 2**40
    member = npy_raw(
        f"{{'descr': '<f4', 'fortran_order': False, 'shape': {(2**40 - 1, *SHAPE)}, }}",
        tensors.tobytes(),
    )
    refused(tmp_path, pack(header, arrays, members={"tensors.npy": member}), "data bytes")
    header, arrays = read_parts(saved["small"])
    deep = npy_raw(
        "{'descr': " + "[" * 1000 + "]" * 1000 + ", 'fortran_order': False, 'shape': (3,), }",
        tensors.tobytes(),
    )
    refused(tmp_path, pack(header, arrays, members={"tensors.npy": deep}), ".npy header")


@pytest.mark.parametrize(
    "text",
    [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (10( 8, 5, 4, 2, 3), }",  # TokenError
        "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 5, 4, 2, 3), 'x': 1}",
        "{'descr': '<f4', 'fortran_order': 0, 'shape': (8, 5, 4, 2, 3), }",
        "{'descr': '<f4 , 'fortran_order': False, 'shape': (8, 5, 4, 2, 3), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 5, 4, 2, 3)\t\x00",
        "\xff\xfe{}",
        "",
        "[" * 3 + "]" * 3,
        "__import__('os')",
    ],
)
def test_malformed_npy_headers_refused(tmp_path, saved, text):
    header, arrays = read_parts(saved["small"])
    member = npy_raw(text, arrays["tensors"].tobytes())
    refused(tmp_path, pack(header, arrays, members={"tensors.npy": member}), "tensors.npy")


def test_deflate_bomb_member_refused_without_inflating(tmp_path, saved):
    data = with_bomb(saved["small"], mib=1400)
    assert len(data) < 2 << 20  # a 1.5 MB file that would inflate to 1.4 GiB
    refused(tmp_path, data, "stored uncompressed", max_peak=8 << 20)
    # the bomb in place of a column, claiming the right size or a huge one
    header, arrays = read_parts(saved["small"])
    stream = deflate_bomb(64)
    for size in (len(npy_bytes(arrays["tensors"])), 64 << 20):
        bomb = pack(header, arrays, members={"tensors.npy": stream})
        bomb = patch_member(bomb, "tensors.npy", method=zipfile.ZIP_DEFLATED, file_size=size)
        refused(tmp_path, bomb, "stored uncompressed", max_peak=8 << 20)
    # a stored member claiming more bytes than the file has
    lie = patch_member(saved["small"], "tensors.npy", file_size=2**31, compress_size=2**31)
    refused(tmp_path, lie, "fit in the file", max_peak=8 << 20)


def test_compressed_files_refused(tmp_path, saved):
    header, arrays = read_parts(saved["small"])
    refused(tmp_path, pack(header, arrays, compression=zipfile.ZIP_DEFLATED), "stored uncompressed")


def test_huge_central_directory_refused(tmp_path, saved):
    header, arrays = read_parts(saved["small"])
    many = {f"x{i}.npy": b"" for i in range(5000)}
    refused(tmp_path, pack(header, arrays, members=many), "zip directory")
    some = {f"x{i}.npy": b"" for i in range(300)}
    refused(tmp_path, pack(header, arrays, members=some), "at most 256 members")
    dup = zip_bytes([("__header__.npy", b"x"), ("ids.npy", b"y"), ("ids.npy", b"z")])
    refused(tmp_path, dup, "unique member names")


def test_inspect_runs_every_check(tmp_path, saved):
    from dreamjit.__main__ import main

    good = tmp_path / "good.npz"
    good.write_bytes(saved["small"])
    assert main(["inspect", str(good)]) == 0
    header, arrays = read_parts(saved["small"])
    arrays["labels"] = np.full_like(arrays["labels"], -5)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(pack(header, arrays))
    assert main(["inspect", str(bad)]) == 1


# --------------------------------------------------------------------------- kill -9
_SAVER = r"""
import os, sys, numpy as np, dreamjit as dj
path, hook = sys.argv[1], sys.argv[2]

def say(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()

def hold():
    say("held")
    sys.stdin.readline()  # the parent kills us here
    raise SystemExit("not killed")

def install(hook):
    import dreamjit.io as dio
    if hook == "write":  # hold after part of the temporary file is written
        real = os.fdopen
        class Slow:
            def __init__(self, f):
                self._f, self._n = f, 0
            def write(self, b):
                n = self._f.write(b)
                self._n += len(b)
                if self._n > 4096:
                    self._f.flush()
                    hold()
                return n
            def __getattr__(self, name):
                return getattr(self._f, name)
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                return self._f.__exit__(*exc)
        os.fdopen = lambda *a, **k: Slow(real(*a, **k))
    elif hook == "replace":  # temporary file complete and fsynced, not yet moved
        os.replace = lambda *a, **k: hold()
    elif hook == "dirsync":  # moved over the target, directory not yet fsynced
        dio._fsync_dir = lambda d: hold()

kill_at = int(sys.argv[3])
pool = dj.DreamPool(dj.PoolConfig(memory_budget_mb=None, max_size=400))
rng = np.random.default_rng(0)
i = 0
while True:
    t = rng.random((20, 8, 8, 2, 3), dtype=np.float32)
    pool.add_batch(t, np.column_stack([np.zeros(20), np.full(20, 0.9), np.zeros(20)]))
    say(f"saving {i} {len(pool)}")
    pool.save(path)
    say(f"saved {i} {len(pool)}")
    if i == kill_at:
        hold()  # never run ahead of the parent's kill
    if i == 0 and hook != "none":
        install(hook)
    i += 1
"""


def _child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _line_reader(proc):
    """A queue of the child's stdout lines (split in words), None at its end. A thread
    reads them: select() on a buffered pipe would miss lines already in the buffer."""
    lines = queue.Queue()

    def pump():
        for raw in proc.stdout:
            lines.put(raw.decode().split())
        lines.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def _next_line(lines, proc, timeout=900.0):
    """The child's next line; fails (never hangs) if none comes within ``timeout``."""
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"no word from the saving child in {timeout} s")
    if not line:
        pytest.fail(f"the saving child exited ({proc.wait()}) early")
    return line


@pytest.mark.jit_only
@pytest.mark.parametrize(
    "hook, kill_at",
    [("none", 1), ("none", 2), ("none", 4), ("write", 1), ("replace", 1), ("dirsync", 1)],
)
def test_kill_minus_nine_mid_save_always_loads(tmp_path, hook, kill_at):
    """A child adds and saves in a loop; the parent waits (no timing) for a first
    complete save, then kills it with SIGKILL during a later save: right as it
    starts (``none``), half-way through writing the temporary file (``write``),
    with the temporary file complete but not yet moved (``replace``), or after the
    move (``dirsync``). The file always loads, with the last complete save's
    entries (or the new ones once moved), and a temporary file left behind is
    ignored. Passes with an empty numba cache (the child just compiles first)."""
    path = tmp_path / "live.npz"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path), hook, str(kill_at)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_child_env(),
    )
    lines, reader = _line_reader(proc)
    try:
        done = pending = None
        while True:
            line = _next_line(lines, proc)
            if line[0] == "saved":
                done = int(line[2])
            elif line[0] == "saving":
                pending = int(line[2])
                if hook == "none" and int(line[1]) == kill_at:
                    break  # kill as the save starts: it lands in it or just after it
            elif line[0] == "held":
                break
        assert done is not None  # a first complete save exists
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        reader.join(timeout=60)  # it ends at the pipe's end, now that the child is gone
        proc.stdout.close()
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    pool = dj.DreamPool.load(path)  # old or new contents, never damaged
    assert_invariants(pool)
    assert len(pool) in (done, pending)
    temps = [f for f in os.listdir(tmp_path) if f.startswith(".dreamjit-") and f.endswith(".tmp")]
    if hook in ("write", "replace"):
        assert len(pool) == done and len(temps) == 1
    if hook == "dirsync":
        assert len(pool) == pending and temps == []
    if hook == "replace":  # the complete temporary file is itself a valid pool
        assert len(dj.DreamPool.load(tmp_path / temps[0])) == pending
    if hook == "write":
        with pytest.raises(IndexCorruptedError):
            dj.DreamPool.load(tmp_path / temps[0])
