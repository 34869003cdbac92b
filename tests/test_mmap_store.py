"""Out-of-core tensors: PoolConfig(tensor_store="mmap", path=...) keeps the tensors in a
memory-mapped file; answers equal an in-RAM pool's, the budget counts RAM and disk
apart, and reopening a sealed sidecar gives the saved state or a typed error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import dreamjit as dj
from dreamjit.synthetic import smooth_tensors
from dreamjit.testing import assert_pool_invariants

from standins import rewrite

SHAPE = (8, 8, 3)
ROW = int(np.prod(SHAPE)) * 4


def _cfgs(tmp_path, **kw):
    base = dict(max_size=64, seed=0, memory_budget_mb=None)
    base.update(kw)
    disk = base.pop("disk_budget_mb", None)
    mem = dj.PoolConfig(**base)
    mm = mem.replace(tensor_store="mmap", path=str(tmp_path / "store"), disk_budget_mb=disk)
    return mm, mem


@pytest.fixture
def tensors():
    return smooth_tensors(48, shape=SHAPE, seed=4)


def test_config_validates_the_store_settings(tmp_path):
    cfg = dj.PoolConfig(tensor_store="mmap", path=tmp_path / "x")
    assert cfg.path == os.path.abspath(tmp_path / "x")
    assert dj.PoolConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        dict(tensor_store="disk"),
        dict(tensor_store=1),
        dict(path=str(tmp_path)),  # a path needs tensor_store="mmap"
        dict(disk_budget_mb=5.0),
        dict(tensor_store="mmap"),  # mmap needs a path
        dict(tensor_store="mmap", path=3),
        dict(tensor_store="mmap", path=""),
        dict(tensor_store="mmap", path="a\x00b"),
        dict(tensor_store="mmap", path=str(tmp_path), disk_budget_mb=0),
        dict(tensor_store="mmap", path=str(tmp_path), disk_budget_mb=float("nan")),
        dict(tensor_store="mmap", path=str(tmp_path), disk_budget_mb=2.0**41),
    ]
    for kw in bad:
        with pytest.raises(dj.InvalidConfigError) as err:
            dj.PoolConfig(**kw)
        assert str(err.value).split("=")[0] in ("tensor_store", "path", "disk_budget_mb")


def test_answers_equal_an_in_ram_pool(tmp_path, tensors):
    mm_cfg, mem_cfg = _cfgs(tmp_path)
    mm, mem = dj.DreamPool(mm_cfg), dj.DreamPool(mem_cfg)
    labels = [i % 3 for i in range(48)]
    np.testing.assert_array_equal(
        mm.add_batch(tensors, labels=labels, only_coherent=False),
        mem.add_batch(tensors, labels=labels, only_coherent=False),
    )
    assert mm.table.store.is_mapped("tensors") and not mem.table.store.is_mapped("tensors")
    for q in (tensors[2], dj.Query.from_tensor(tensors[9], label=1)):
        for a, b in (
            (mm.retrieve_soft(q, k=5), mem.retrieve_soft(q, k=5)),
            (mm.retrieve_diverse(q, k=5), mem.retrieve_diverse(q, k=5)),
            (mm.retrieve_similar(q, k=5), mem.retrieve_similar(q, k=5)),
        ):
            assert a.ids.tolist() == b.ids.tolist()
            np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(mm[11].tensor, mem[11].tensor)
    np.testing.assert_array_equal(
        mm.retrieve_soft(tensors[0], k=3).tensors(), mem.retrieve_soft(tensors[0], k=3).tensors()
    )
    # RAM counts everything but the tensor rows; the disk counts those
    assert mem.used_bytes() - mm.used_bytes() == 48 * ROW
    used_mb, _, _, file_mb = mm.budget.disk_stats()
    assert used_mb * 2**20 == 48 * ROW and file_mb * 2**20 >= 48 * ROW
    assert_pool_invariants(mm)


def test_disk_budget_evicts_and_refuses_a_tensor_too_large(tmp_path, tensors):
    mm_cfg, _ = _cfgs(tmp_path, disk_budget_mb=20 * ROW / 2**20)
    pool = dj.DreamPool(mm_cfg)
    pool.add_batch(tensors, only_coherent=False)
    assert len(pool) == int(0.9 * 20)  # eviction_threshold of the disk budget
    assert pool.ids().tolist() == list(range(48 - 18, 48))
    assert pool.budget.disk_used_bytes() <= mm_cfg.disk_budget_bytes
    assert os.path.getsize(pool.table.store.tensor_file) <= mm_cfg.disk_budget_bytes
    assert_pool_invariants(pool)
    tiny = dj.PoolConfig(tensor_store="mmap", path=str(tmp_path / "t"), disk_budget_mb=ROW / 2**21)
    with pytest.raises(dj.MemoryExceededError):
        dj.DreamPool(tiny).add(tensors[0], dj.SolverResult(1.0, 0.9, 0.0))


def _saved(tmp_path, tensors, n=30):
    mm_cfg, _ = _cfgs(tmp_path)
    pool = dj.DreamPool(mm_cfg)
    pool.add_batch(tensors[:n], only_coherent=False)
    side = pool.save(tmp_path / "side.npz")
    return pool, side


def test_reopen_gives_the_saved_state(tmp_path, tensors):
    pool, side = _saved(tmp_path, tensors)
    before = {e.id: e.tensor for e in pool}
    # adds after the save that only append rows leave the sealed rows intact
    pool.add_batch(tensors[30:40], only_coherent=False)
    loaded = dj.DreamPool.load(side)
    assert loaded.ids().tolist() == list(range(30))
    for eid, t in before.items():
        np.testing.assert_array_equal(loaded[eid].tensor, t)
    assert_pool_invariants(loaded)
    assert loaded.table.store.is_mapped("tensors")
    # no tensor copy in the sidecar: it is much smaller than the tensors
    assert os.path.getsize(side) < 30 * ROW


def test_reopen_after_evictions_compacts_into_a_new_file(tmp_path, tensors):
    mm_cfg, _ = _cfgs(tmp_path, max_size=20)
    pool = dj.DreamPool(mm_cfg)
    pool.add_batch(tensors[:20], only_coherent=False)
    pool.add_batch(tensors[20:25], only_coherent=False)  # evicts 0..4, reuses their rows
    pool.record_feedback([21], 0.5)
    side = pool.save(tmp_path / "side.npz")
    loaded = dj.DreamPool.load(side)
    assert loaded.ids().tolist() == pool.ids().tolist()
    for eid in pool.ids().tolist():
        np.testing.assert_array_equal(loaded[eid].tensor, pool[eid].tensor)
    assert loaded.table.store.tensor_file != pool.table.store.tensor_file
    assert loaded[21].util_mean == pool[21].util_mean
    assert_pool_invariants(loaded)
    q = tensors[22]
    assert loaded.retrieve_soft(q, k=4).ids.tolist() == pool.retrieve_soft(q, k=4).ids.tolist()


def test_reopen_with_a_configured_shape(tmp_path, tensors):
    mm_cfg, _ = _cfgs(tmp_path, tensor_shape=SHAPE)
    pool = dj.DreamPool(mm_cfg)
    pool.add_batch(tensors[:10], only_coherent=False)
    loaded = dj.DreamPool.load(pool.save(tmp_path / "side.npz"))
    np.testing.assert_array_equal(loaded[3].tensor, pool[3].tensor)
    assert_pool_invariants(loaded)
    empty = dj.DreamPool(mm_cfg.replace(path=str(tmp_path / "e")))
    assert len(dj.DreamPool.load(empty.save(tmp_path / "empty.npz"))) == 0


def _damage_cases():
    def truncate_file(pool, side):
        f = pool.table.store.tensor_file
        with open(f, "r+b") as fh:
            fh.truncate(ROW * 10 + 7)

    def flip_row(pool, side):
        f = pool.table.store.tensor_file
        with open(f, "r+b") as fh:
            fh.seek(ROW * 12 + 100)
            b = fh.read(1)
            fh.seek(ROW * 12 + 100)
            fh.write(bytes([b[0] ^ 0x01]))

    def delete_file(pool, side):
        os.remove(pool.table.store.tensor_file)

    def overwrite_by_adds(pool, side):  # evictions after the save reuse sealed rows
        pool.add_batch(smooth_tensors(64, shape=SHAPE, seed=9), only_coherent=False)

    def truncate_sidecar(pool, side):
        with open(side, "r+b") as fh:
            fh.truncate(os.path.getsize(side) // 2)

    def flip_sidecar(pool, side):
        raw = bytearray(open(side, "rb").read())
        raw[len(raw) // 2] ^= 0xFF
        open(side, "wb").write(bytes(raw))

    return [truncate_file, flip_row, delete_file, overwrite_by_adds, truncate_sidecar, flip_sidecar]


@pytest.mark.parametrize("damage", _damage_cases(), ids=lambda f: f.__name__)
def test_damage_is_a_typed_error(tmp_path, tensors, damage):
    pool, side = _saved(tmp_path, tensors)
    damage(pool, side)
    with pytest.raises(dj.IndexCorruptedError):
        dj.DreamPool.load(side)


def test_a_killed_process_reopens_to_the_last_save(tmp_path):
    """A child fills, saves, appends more and dies without saving again."""
    code = f"""
import os, dreamjit as dj
from dreamjit.synthetic import smooth_tensors
cfg = dj.PoolConfig(max_size=64, seed=0, memory_budget_mb=None, tensor_store="mmap",
                    path={str(tmp_path / "store")!r})
pool = dj.DreamPool(cfg)
t = smooth_tensors(40, shape={SHAPE!r}, seed=4)
pool.add_batch(t[:25], only_coherent=False)
pool.save({str(tmp_path / "side.npz")!r})
pool.add_batch(t[25:], only_coherent=False)
os._exit(9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=600)
    assert out.returncode == 9, out.stderr.decode()[-2000:]
    loaded = dj.DreamPool.load(tmp_path / "side.npz")
    assert loaded.ids().tolist() == list(range(25))
    t = smooth_tensors(40, shape=SHAPE, seed=4)
    for i in range(25):
        np.testing.assert_array_equal(loaded[i].tensor, np.asarray(t[i], np.float32))
    assert_pool_invariants(loaded)


def test_files_from_before_the_store_settings_still_load(tmp_path, tensors, monkeypatch):
    from dreamjit.config import LATER_FIELDS, PoolConfig

    pool = dj.DreamPool(max_size=10, seed=0)
    pool.add_batch(tensors[:4], only_coherent=False)
    full = PoolConfig.to_dict

    def old_to_dict(self):  # what a file written before these settings holds
        return {k: v for k, v in full(self).items() if k not in LATER_FIELDS}

    monkeypatch.setattr(PoolConfig, "to_dict", old_to_dict)
    new = pool.save(tmp_path / "new.npz")
    monkeypatch.setattr(PoolConfig, "to_dict", full)

    def as_format_2(header, arrays):  # those files were format 2: no graph, no removed counter
        header["format_version"] = 2
        del header["graph"], header["removed"]

    path = rewrite(new, tmp_path / "old.npz", as_format_2)
    loaded = dj.DreamPool.load(path)
    assert loaded.config == pool.config and loaded.ids().tolist() == [0, 1, 2, 3]
