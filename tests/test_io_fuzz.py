"""A structure-aware fuzzer of saved pool files.

Real saved pools (empty, empty with a fixed shape, small with computed
embeddings, labels, utilities, feedback and certainty, small with user
embeddings, one that has evicted entries) are taken apart and mutated by
structure: every header field (dropped, wrong type, negative, huge, 2**31,
2**63, 2**70, Infinity/NaN, deeply nested, very long), counters, shapes, member
sizes and names, ``.npy`` headers (dtype, shape claiming 2**40 elements,
fortran order, version, length), compression (deflate, bombs), the zip
directory, truncation and byte flips. Each mutated file is put back together
either sealed (column checksums and header_sha256 recomputed, so the change
reaches the loader's deeper checks) or not.

The oracle for every file: the load raises IndexCorruptedError, or it succeeds
and the pool is exactly what the file says (saving it again gives the same
header and columns; for unsealed byte-level damage, the same as the original),
passes the invariants and still accepts an add. Any other exception fails.
The peak memory of every load (tracemalloc, which sees numpy's allocations) is
bounded, and a subprocess measures the peak RSS growth over the hostile files
of a ~2.5 MB pool.

``DREAMJIT_FUZZ_STATS=FILE`` writes the counts (files tried, refused,
accepted, worst peak, untyped errors) as JSON when the module finishes.
"""

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dreamjit as dj
from dreamjit import IndexCorruptedError, PoolConfig

from invariants import assert_invariants
from props import examples
from test_io import (
    REPO,
    RawJSON,
    _child_env,
    deflate_bomb,
    load_traced,
    npy_bytes,
    npy_raw,
    pack,
    patch_member,
    read_parts,
    with_bomb,
    zip_bytes,
)

MAX_PEAK = 64 << 20  # bytes a load may trace at its peak (files here are at most ~2.5 MB)
DROP = object()

pytestmark = pytest.mark.jit_only


class Stats:
    def __init__(self):
        self.tried = self.refused = self.accepted = 0
        self.worst_peak, self.worst, self.worst_refused_peak = 0, "", 0
        self.rss_growth = None
        self.accepted_labels = []
        self.untyped = []
        self.by_group = {}

    def as_dict(self):
        return {
            "files_tried": self.tried,
            "refused": self.refused,
            "accepted_exact": self.accepted,
            "worst_peak_bytes": self.worst_peak,
            "worst_peak_file": self.worst,
            "worst_peak_of_a_refused_file": self.worst_refused_peak,
            "subprocess_peak_rss_growth_bytes": self.rss_growth,
            "untyped_errors": len(self.untyped),
            "accepted_files": self.accepted_labels,
            "by_group (files, accepted)": self.by_group,
        }


STATS = Stats()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    out = os.environ.get("DREAMJIT_FUZZ_STATS")
    if out:
        with open(out, "w") as fh:
            json.dump(STATS.as_dict(), fh, indent=1)


def _make_bases(d):
    rng = np.random.default_rng(5)
    n = 12
    small = dj.DreamPool(
        PoolConfig(max_size=10, memory_budget_mb=None, store_certainty=True, embedding_dim=16)
    )
    small.add_batch(
        rng.random((n, 5, 4, 2, 3), dtype=np.float32),
        np.column_stack([rng.random(n), np.full(n, 0.9), rng.random(n) * 0.1]),
        labels=[i % 3 if i % 4 else None for i in range(n)],
        utilities=[0.5 if i % 2 else None for i in range(n)],
        certainties=rng.random((n, 5, 4, 2), dtype=np.float32),
    )
    small.record_feedback(small.ids()[:3], [1.0, 0.0, 0.25])
    small.retrieve_similar([0.3, 0.3, 0.3], k=3)  # usage counts
    user = dj.DreamPool(PoolConfig(max_size=10, embedding_dim=8, memory_budget_mb=1.0))
    user.add_batch(
        rng.random((6, 4, 4, 3), dtype=np.float32),
        np.column_stack([np.ones(6), np.full(6, 0.9), np.zeros(6)]),
        embeddings=rng.standard_normal((6, 8)),
        labels=[0, 1, None, 2, 0, 1],
        utilities=[1.0] * 6,
    )
    evicted = dj.DreamPool(PoolConfig(max_size=4, eviction="lowest_utility", embedding_dim=4))
    evicted.add_batch(
        rng.random((9, 3, 3, 1), dtype=np.float32),
        np.column_stack([np.ones(9), np.full(9, 0.9), np.zeros(9)]),
        utilities=list(rng.random(9)),
    )
    pools = {
        "empty": dj.DreamPool(PoolConfig(max_size=5)),
        "empty_shaped": dj.DreamPool(
            PoolConfig(max_size=5, tensor_shape=(4, 4, 2, 3), store_certainty=True)
        ),
        "small": small,
        "user": user,
        "evicted": evicted,
    }
    return {name: pathlib.Path(p.save(d / f"{name}.npz")).read_bytes() for name, p in pools.items()}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return _make_bases(tmp_path_factory.mktemp("bases"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------- the oracle
def _same_parts(a, b):
    (ha, aa), (hb, ab) = a, b
    return (
        ha == hb
        and set(aa) == set(ab)
        and all(
            aa[k].dtype == ab[k].dtype
            and aa[k].shape == ab[k].shape
            and aa[k].tobytes() == ab[k].tobytes()
            for k in aa
        )
    )


def _smoke(pool):
    """An accepted pool is not broken: invariants hold, an add and a retrieval work."""
    assert_invariants(pool)
    shape = pool.tensor_shape
    if shape is None:
        return
    emb = np.ones(pool.config.embedding_dim) if pool.table.embedding_mode == "user" else None
    try:
        pool.add(np.full(shape, 0.5, np.float32), (0.0, 0.9, 0.0), embedding=emb)
    except dj.DreamError:
        pass
    pool.retrieve_similar(np.full(shape[-1], 0.5, np.float32), k=2)
    assert_invariants(pool)


def check(work, data, group, base=None):
    """Load ``data``; see the module docstring for what must hold. Returns the outcome."""
    path = work / f"{STATS.tried}.npz"  # a new file each time: rewriting one is slow on ext4
    path.write_bytes(data)
    try:
        pool, exc, peak = load_traced(path)
    finally:
        path.unlink()
    STATS.tried += 1
    g = STATS.by_group.setdefault(":".join(group.split(":")[:2]), [0, 0])
    g[0] += 1
    if peak > STATS.worst_peak:
        STATS.worst_peak, STATS.worst = peak, group
    if exc is not None:
        if not isinstance(exc, IndexCorruptedError):
            STATS.untyped.append((group, repr(exc)))
            raise AssertionError(f"{group}: untyped {exc!r}") from exc
        assert str(exc).startswith("path="), str(exc)
        assert peak < MAX_PEAK, (group, peak)
        STATS.refused += 1
        STATS.worst_refused_peak = max(STATS.worst_refused_peak, peak)
        return "refused"
    assert peak < MAX_PEAK, (group, peak)
    STATS.accepted += 1
    STATS.accepted_labels.append(group)
    g[1] += 1
    again = work / "again.npz"
    pool.save(again)
    assert _same_parts(read_parts(str(again)), read_parts(data)), f"{group}: loaded != file"
    again.unlink()
    if base is not None:
        assert _same_parts(read_parts(data), read_parts(base)), f"{group}: damage loaded"
    _smoke(pool)
    return "accepted"


# --------------------------------------------------------------------------- header mutations
BAD_VALUES = [
    ("drop", DROP),
    ("null", None),
    ("str", "x"),
    ("empty_str", ""),
    ("list", []),
    ("dict", {}),
    ("true", True),
    ("false", False),
    ("zero", 0),
    ("one", 1),
    ("minus1", -1),
    ("minus5", -5),
    ("2**31", 2**31),
    ("2**63", 2**63),
    ("2**70", 2**70),
    ("-2**63", -(2**63)),
    ("half", 1.5),
    ("1e308", 1e308),
    ("neg_zero", -0.0),
    ("tiny", 5e-324),
    ("inf", RawJSON("Infinity")),
    ("-inf", RawJSON("-Infinity")),
    ("nan", RawJSON("NaN")),
    ("1e999", RawJSON("1e999")),
    ("deep", RawJSON("[" * 64 + "]" * 64)),
    ("very_deep", RawJSON("[" * 100_000 + "]" * 100_000)),
    ("long_str", "x" * 100_000),
    ("big_list", [0] * 20_000),
    ("nested", {"a": {"b": {"c": [1]}}}),
    ("unicode", "\u00e9\u4e2d"),
    ("digits", RawJSON("9" * 5000)),
    ("shape_like", [2**20, 2**20, 3]),
]
QUICK_VALUES = [
    "drop",
    "null",
    "str",
    "minus5",
    "2**31",
    "2**70",
    "inf",
    "nan",
    "very_deep",
    "long_str",
    "half",
    "true",
]


def header_paths(header):
    paths = [(k,) for k in header]
    paths += [("config", k) for k in header["config"]]
    if isinstance(header.get("tensor_shape"), list):
        paths += [("tensor_shape", i) for i in range(len(header["tensor_shape"]))]
    paths += [("checksums", k) for k in header["checksums"]]
    return paths


def set_path(header, path, value):
    h = json.loads(json.dumps(header))  # deep copy
    target = h
    for p in path[:-1]:
        target = target[p]
    if value is DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return h


def header_mutation(base, path, value, seal):
    header, arrays = read_parts(base)
    h = set_path(header, path, value)
    # sealing recomputes checksums; a mutated checksum must stay as mutated
    return pack(h, arrays, seal=seal, fix_sums=False if path[0] == "checksums" else None)


def header_grid(base, full):
    """(label, bytes): every header path with every bad value, sealed and not (``full``),
    or with a rotating three of them (each value still used on some paths), one also unsealed."""
    header, _ = read_parts(base)
    for i, path in enumerate(header_paths(header)):
        values = (
            BAD_VALUES if full else [BAD_VALUES[(i * 3 + j) % len(BAD_VALUES)] for j in range(3)]
        )
        for k, (label, value) in enumerate(values):
            for seal in (True, False) if full or k == 0 else (True,):
                yield (
                    f"header:{'.'.join(map(str, path))}={label}:{'sealed' if seal else 'stale'}",
                    header_mutation(base, path, value, seal),
                )


@pytest.mark.parametrize("name", ["empty", "empty_shaped", "small", "user", "evicted"])
def test_every_header_field_mutated(bases, work, name):
    outcomes = {"refused": 0, "accepted": 0}
    for label, data in header_grid(bases[name], full=False):
        outcomes[check(work, data, f"{name}:{label}")] += 1
    assert outcomes["refused"] > 0.9 * sum(outcomes.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empty", "empty_shaped", "small", "user", "evicted"])
def test_every_header_field_mutated_every_value(bases, work, name):
    for label, data in header_grid(bases[name], full=True):
        check(work, data, f"{name}:{label}")


# --------------------------------------------------------------------------- member mutations
DTYPES = ["<f4", "<f8", "<i4", "<i8", "|u1", "|b1", ">f4", ">i8", "<f2"]


def array_mutations(arr):
    """name -> changed copy of ``arr`` (shape, dtype, order, values)."""
    out = {
        "extra_axis": arr[..., None],
        "flatten": arr.reshape(-1),
        "scalar": np.asarray(arr.ravel()[:1].sum()),
    }
    if arr.ndim:
        out["drop_row"] = arr[:-1]
        out["add_row"] = np.concatenate([arr, arr[:1]])
    if arr.ndim > 1:
        out["transpose"] = np.ascontiguousarray(arr.T)
        out["fortran"] = np.asfortranarray(arr)
    with np.errstate(invalid="ignore", over="ignore"):
        for dt in DTYPES:
            if np.dtype(dt) != arr.dtype:
                out[f"dtype{dt}"] = arr.astype(dt)
    if arr.size:
        kinds = {
            "f": [np.nan, np.inf, -np.inf, -1.0, 3e38, 2.0],
            "i": [-1, -5, 2**31 - 1, -(2**31)],
            "u": [255],
            "b": [False],
        }.get(arr.dtype.kind, [])
        for v in kinds:
            changed = arr.copy()
            with np.errstate(over="ignore", invalid="ignore"):
                changed.reshape(-1)[0] = v
            out[f"value{v}"] = changed
        if arr.dtype.kind == "f":
            with np.errstate(over="ignore", invalid="ignore"):
                out["all_scaled"] = arr * 1.5
    return out


def npy_lies(arr):
    """Hand-written .npy members that lie about ``arr`` (raw bytes)."""
    d = arr.dtype.str
    shape = arr.shape
    data = arr.tobytes()
    fmt = "{{'descr': {}, 'fortran_order': {}, 'shape': {}, }}"
    return {
        "shape_2**40": npy_raw(fmt.format(repr(d), False, (2**40,) + shape[1:]), data),
        "shape_2**40_flat": npy_raw(fmt.format(repr(d), False, (2**40,)), data),
        "shape_neg": npy_raw(fmt.format(repr(d), False, (-1,) + shape[1:]), data),
        "shape_str": npy_raw(fmt.format(repr(d), False, "'x'"), data),
        "descr_object": npy_raw(fmt.format("'|O'", False, shape), data),
        "descr_struct": npy_raw(fmt.format("[('a', '<f4')]", False, shape), data),
        "descr_unicode": npy_raw(fmt.format("'<U10'", False, shape), data),
        "descr_nested": npy_raw(fmt.format("[" * 500 + "'<f4'" + "]" * 500, False, shape), data),
        "fortran_true": npy_raw(fmt.format(repr(d), True, shape), data),
        "version_2": npy_raw(fmt.format(repr(d), False, shape), data, version=(2, 0)),
        "version_3": npy_raw(fmt.format(repr(d), False, shape), data, version=(3, 0)),
        "bad_magic": b"\x93NUMPX" + npy_raw(fmt.format(repr(d), False, shape), data)[6:],
        "hlen_huge": b"\x93NUMPY\x02\x00\xff\xff\xff\xff" + data,
        "hlen_64k": b"\x93NUMPY\x01\x00\xff\xff" + b" " * 100 + data,
        "garbage_header": npy_raw("{{{{{{ not python", data),
        "huge_int": npy_raw(fmt.format(repr(d), False, "(" + "9" * 3000 + ",)"), data),
        "short_data": npy_raw(fmt.format(repr(d), False, shape), data[:-1]),
        "long_data": npy_raw(fmt.format(repr(d), False, shape), data + b"\0" * 8),
        "empty": b"",
        "pickle": _pickled_member(),
    }


def _pickled_member():
    bio = io.BytesIO()
    np.lib.format.write_array(bio, np.array([None, 1], dtype=object), allow_pickle=True)
    return bio.getvalue()


def member_mutations(base):
    """(label, bytes) of every member-level mutation of ``base``."""
    header, arrays = read_parts(base)
    for name, arr in arrays.items():
        for label, changed in array_mutations(arr).items():
            for seal in (True, False):
                a = dict(arrays)
                a[name] = changed
                yield (
                    f"array:{name}:{label}:{'sealed' if seal else 'stale'}",
                    pack(header, a, seal=True, fix_sums=seal),
                )
        for label, member in npy_lies(arr).items():
            yield f"npy:{name}:{label}", pack(header, arrays, members={f"{name}.npy": member})
        rest = {k: v for k, v in arrays.items() if k != name}
        yield f"member:{name}:drop", pack(header, rest)
        yield f"member:{name}:drop_keep_sum", pack(header, rest, fix_sums=False)
        yield f"member:{name}:rename", pack(header, {**rest, name + "_x": arr})
        yield (
            f"member:{name}:rename_npy",
            pack(header, arrays, members={f"{name}.npy": None, f"{name}.NPY": npy_bytes(arr)}),
        )
        yield (
            f"member:{name}:subdir",
            pack(header, arrays, members={f"{name}.npy": None, f"x/{name}.npy": npy_bytes(arr)}),
        )
    yield "member:extra", pack(header, {**arrays, "zz_extra": np.zeros(3)})
    yield "member:extra_unsealed", pack(header, arrays, members={"zz.npy": npy_bytes(np.zeros(3))})
    yield "member:extra_text", pack(header, arrays, members={"readme.txt": b"hello"})
    yield "member:header_dropped", pack(header, arrays, members={"__header__.npy": None})
    yield (
        "member:header_f8",
        pack(
            header,
            arrays,
            members={
                "__header__.npy": npy_bytes(
                    np.frombuffer(json.dumps(header).encode(), np.uint8).astype(np.float64)
                )
            },
        ),
    )
    yield (
        "member:header_2d",
        pack(
            header,
            arrays,
            members={
                "__header__.npy": npy_bytes(
                    np.frombuffer(json.dumps(header).encode(), np.uint8)[None]
                )
            },
        ),
    )
    for label, member in npy_lies(np.frombuffer(json.dumps(header).encode(), np.uint8)).items():
        yield f"npy:__header__:{label}", pack(header, arrays, members={"__header__.npy": member})


@pytest.mark.parametrize("name", ["empty_shaped", "small", "user", "evicted"])
def test_member_mutations(bases, work, name):
    """Every fifth mutation (a different fifth per pool); all of them under ``slow``."""
    outcomes = {"refused": 0, "accepted": 0}
    offset = ["empty_shaped", "small", "user", "evicted"].index(name)
    for i, (label, data) in enumerate(member_mutations(bases[name])):
        if i % 5 == offset:
            outcomes[check(work, data, f"{name}:{label}")] += 1
    assert outcomes["refused"] > 0.8 * sum(outcomes.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["empty_shaped", "small", "user", "evicted"])
def test_every_member_mutated(bases, work, name):
    for label, data in member_mutations(bases[name]):
        check(work, data, f"{name}:{label}")


# --------------------------------------------------------------------------- zip-level mutations
def zip_mutations(base):
    header, arrays = read_parts(base)
    zf = zipfile.ZipFile(io.BytesIO(base))
    members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    for method in (zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        yield f"zip:compressed{method}", zip_bytes(members, method)
    yield "zip:repacked_stored", zip_bytes(members)  # a no-op: loads exactly
    yield "zip:bomb_extra", with_bomb(base, mib=64)
    yield "zip:duplicate_member", zip_bytes(members + members[-1:])
    yield "zip:duplicate_header", zip_bytes(members[:1] + members)
    yield "zip:many_members", zip_bytes(members + [(f"x{i}", b"") for i in range(5000)])
    yield "zip:300_members", zip_bytes(members + [(f"x{i}", b"") for i in range(300)])
    yield "zip:reversed_order", zip_bytes(members[::-1])
    yield "zip:prefix_garbage", b"\0" * 64 + base
    yield "zip:suffix_garbage", base + b"\0" * 64
    yield "zip:not_zip", b"\x93NUMPY" + base[6:200]
    yield "zip:empty_file", b""
    yield "zip:empty_zip", zip_bytes([])
    for name, data in members:
        stream = deflate_bomb(8)
        yield (
            f"zip:bomb_as:{name}",
            patch_member(
                zip_bytes([(n, stream if n == name else d) for n, d in members]),
                name,
                method=zipfile.ZIP_DEFLATED,
                file_size=len(data),
            ),
        )
        for field, values in (
            ("file_size", (0, len(data) - 1, len(data) + 1, 2**31, 0xFFFFFFFF)),
            ("compress_size", (0, len(data) - 1, len(data) + 1, 2**31)),
            ("crc", (0,)),
            ("method", (99, zipfile.ZIP_DEFLATED)),
        ):
            for v in values:
                yield f"zip:{name}:{field}={v}", patch_member(base, name, **{field: v})
    eocd = base.rfind(b"PK\x05\x06")
    for off, fmt, value, label in [
        (10, "<H", 0xFFFF, "entries"),
        (12, "<I", 0xFFFFFFFF, "cd_size"),
        (12, "<I", 0, "cd_size0"),
        (16, "<I", 0xFFFFFFFF, "cd_offset"),
        (16, "<I", 1, "cd_offset1"),
        (20, "<H", 10, "comment_len"),
    ]:
        buf = bytearray(base)
        struct.pack_into(fmt, buf, eocd + off, value)
        yield f"zip:eocd_{label}", bytes(buf)
    # a zip64 end record and locator claiming a huge central directory
    z64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 2**40, 2**40, 2**40, 0)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd, 1)
    yield "zip:zip64_lie", base[:eocd] + z64 + loc + base[eocd:]


@pytest.mark.parametrize("name", ["empty", "small", "user"])
def test_zip_structure_mutated(bases, work, name):
    for label, data in zip_mutations(bases[name]):
        out = check(work, data, f"{name}:{label}")
        if label in ("zip:repacked_stored", "zip:reversed_order"):
            assert out == "accepted", label  # no-op mutations load exactly
        if "bomb" in label or "compressed" in label or "many" in label:
            assert out == "refused", label


# --------------------------------------------------------------------------- byte level
def _truncations_and_flips(bases, work, cuts, flips):
    data = bases["small"]
    for cut in range(0, len(data), max(1, len(data) // cuts)):
        assert check(work, data[:cut], "truncate", base=data) == "refused"
    rng = np.random.default_rng(11)
    for name, base in bases.items():
        for _ in range(flips):
            bad = bytearray(base)
            for pos in rng.integers(0, len(bad), int(rng.integers(1, 4))):
                bad[pos] ^= 1 << int(rng.integers(0, 8))
            check(work, bytes(bad), f"flip:{name}", base=base)


def test_truncations_and_byte_flips(bases, work):
    _truncations_and_flips(bases, work, cuts=200, flips=100)


@pytest.mark.slow
def test_every_truncation_and_many_byte_flips(bases, work):
    _truncations_and_flips(bases, work, cuts=10**9, flips=2000)


# --------------------------------------------------------------------------- hypothesis: composed
def _strategy(bases):
    names = sorted(bases)

    @st.composite
    def crafted(draw):
        name = draw(st.sampled_from(names))
        base = bases[name]
        header, arrays = read_parts(base)
        paths = header_paths(header)
        kind = draw(st.sampled_from(["header", "array", "npy", "bytes", "mixed"]))
        seal = draw(st.booleans())
        label = f"hyp:{name}:{kind}"
        members = {}
        for _ in range(draw(st.integers(1, 3))):
            if kind in ("header", "mixed"):
                path = draw(st.sampled_from(paths))
                value = draw(
                    st.one_of(
                        st.sampled_from([v for _, v in BAD_VALUES]),
                        st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=20),
                        st.booleans(),
                        st.none(),
                    )
                )
                try:
                    header = set_path(header, path, value)
                except (KeyError, IndexError, TypeError):
                    pass
            if kind in ("array", "mixed") and arrays:
                col = draw(st.sampled_from(sorted(arrays)))
                muts = array_mutations(arrays[col])
                arrays = {**arrays, col: muts[draw(st.sampled_from(sorted(muts)))]}
            if kind == "npy" and arrays:
                col = draw(st.sampled_from(sorted(arrays)))
                lies = npy_lies(arrays[col])
                members[f"{col}.npy"] = lies[draw(st.sampled_from(sorted(lies)))]
        data = pack(header, arrays, seal=seal, members=members) if kind != "bytes" else base
        if kind in ("bytes", "mixed"):
            buf = bytearray(data)
            for _ in range(draw(st.integers(1, 4))):
                op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]))
                pos = draw(st.integers(0, max(len(buf) - 1, 0)))
                if op == "flip" and buf:
                    buf[pos] ^= 1 << draw(st.integers(0, 7))
                elif op == "cut":
                    del buf[pos:]
                elif op == "insert":
                    buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
                elif op == "delete":
                    del buf[pos : pos + draw(st.integers(1, 64))]
                else:
                    chunk = draw(st.binary(min_size=1, max_size=32))
                    buf[pos : pos + len(chunk)] = chunk
            data = bytes(buf)
        return label, data, (base if kind == "bytes" else None)

    return crafted()


def _run_hypothesis(bases, work, n):
    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_strategy(bases))
    def run(case):
        label, data, base = case
        check(work, data, label, base=base)

    run()


def test_composed_mutations_hypothesis(bases, work):
    _run_hypothesis(bases, work, examples(60))


@pytest.mark.slow
def test_composed_mutations_hypothesis_thorough(bases, work):
    _run_hypothesis(bases, work, 5000)


# --------------------------------------------------------------------------- memory
def _medium(d):
    from dreamjit.synthetic import smooth_tensors

    pool = dj.DreamPool(PoolConfig(max_size=400, memory_budget_mb=None, store_certainty=True))
    t = smooth_tensors(300, shape=(16, 16, 2, 3), seed=2)
    pool.add_batch(
        t,
        np.column_stack([np.ones(300), np.full(300, 0.9), np.zeros(300)]),
        labels=list(np.arange(300) % 5),
    )
    return pathlib.Path(pool.save(d / "medium.npz")).read_bytes()


def hostile_files(base):
    """Named hostile variants of ``base`` (each must be refused)."""
    header, arrays = read_parts(base)
    tensors = arrays["tensors"]
    fmt = "{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}"
    cfg = header["config"]
    big = {**header, "count": 2**40, "next_id": 2**41, "config": {**cfg, "max_size": 2**41}}
    empty = {
        **header,
        "count": 0,
        "tensor_shape": [100000, 100000, 3],
        "config": {**header["config"], "tensor_shape": [100000, 100000, 3]},
    }
    files = {
        "bomb_extra_1400MiB": with_bomb(base, mib=1400),
        "bomb_as_tensors": patch_member(
            pack(header, arrays, members={"tensors.npy": deflate_bomb(512)}),
            "tensors.npy",
            method=zipfile.ZIP_DEFLATED,
            file_size=len(npy_bytes(tensors)),
        ),
        "npy_2**40": pack(
            header,
            arrays,
            members={
                "tensors.npy": npy_raw(fmt.format((2**40, *tensors.shape[1:])), tensors.tobytes())
            },
        ),
        "count_2**40": pack(
            big,
            arrays,
            members={
                "tensors.npy": npy_raw(fmt.format((2**40, *tensors.shape[1:])), tensors.tobytes())
            },
        ),
        "stored_size_lie": patch_member(base, "tensors.npy", file_size=2**31, compress_size=2**31),
        "empty_huge_shape": pack(empty, {}),
        "embedding_dim_2**31": pack({**header, "config": {**cfg, "embedding_dim": 2**31}}, arrays),
        "label_buckets_2**31": pack({**header, "config": {**cfg, "label_buckets": 2**31}}, arrays),
        "deep_header": pack({**header, "config": RawJSON("[" * 100_000 + "]" * 100_000)}, arrays),
        "infinite_counter": pack({**header, "next_id": RawJSON("Infinity")}, arrays),
        "many_members": pack(header, arrays, members={f"x{i}": b"" for i in range(20000)}),
        "truncated_half": base[: len(base) // 2],
        "count_short_by_one": pack({**header, "count": header["count"] - 1}, arrays),
        "labels_minus5": pack(header, {**arrays, "labels": np.full_like(arrays["labels"], -5)}),
        "compressed": pack(header, arrays, compression=zipfile.ZIP_DEFLATED),
    }
    return files


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    return _medium(tmp_path_factory.mktemp("medium"))


def test_hostile_files_bounded_memory_in_process(medium, work):
    base = medium
    assert 2 << 20 < len(base) < 4 << 20
    assert check(work, base, "medium:valid") == "accepted"
    for label, data in hostile_files(base).items():
        assert check(work, data, f"medium:{label}") == "refused", label
    assert STATS.worst_refused_peak < 8 << 20  # refused before reading what they claim


_RSS_CHILD = r"""
import gc, json, sys
import dreamjit as dj, dreamjit.io, dreamjit.pool

def status_kb(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))

files = sys.argv[1:]
gc.collect()
try:  # reset the peak RSS (VmHWM) to the current RSS, so import-time peaks do not count
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
before = status_kb("VmRSS")
typed = 0
for f in files:
    try:
        dj.DreamPool.load(f)
    except dj.IndexCorruptedError:
        typed += 1
peak = status_kb("VmHWM")
print(json.dumps({"rss_before_kb": before, "peak_kb": peak, "peak_reset": reset, "typed": typed,
                  "files": len(files)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_hostile_files_bounded_peak_rss_in_a_subprocess(tmp_path, medium):
    """Peak RSS (VmHWM, reset first where the kernel allows) of a process loading every
    hostile file, minus its RSS before the first one: an upper bound on any one load's growth."""
    base = medium
    paths = []
    for label, data in hostile_files(base).items():
        p = tmp_path / f"{label}.npz"
        p.write_bytes(data)
        paths.append(str(p))
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, *paths],
        cwd=REPO,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["typed"] == res["files"] == len(paths)
    growth = (res["peak_kb"] - res["rss_before_kb"]) * 1024
    STATS.rss_growth = growth
    assert growth < MAX_PEAK, res
