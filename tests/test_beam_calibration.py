"""The walk's beam, calibrated once per graph (``ann_min_ef=None``).

:func:`~dreamjit.index.calibrate.calibrate_beam` is compared exactly (beam and
recall) with a slow reference written with Python lists, numpy float64 scores
and the single-query walk; the index calibrates a graph when it is built or
adopted without a calibration, keeps it through graph updates and exports it;
a pool saves it with the graph (format 4) and loads it back without
calibrating again; format 3 files (no calibration) still load and are
calibrated; a damaged calibration is refused like other damage.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_graph_update import Store, adopt_exact_graph, ann_pool, clustered, knn_graph, no_builds

import dreamjit as dj
import dreamjit.index.nndescent as nnd
from dreamjit import IndexCorruptedError, PoolConfig
from dreamjit.index import ExactIndex, NNDescentIndex
from dreamjit.index import calibrate as cb
from dreamjit.index.structure import search_structure
from dreamjit.kernels.graph import ann_search

from invariants import assert_invariants
from standins import rewrite

__all__ = ["no_builds"]  # the fixture, imported for the tests below


def ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def ref_calibrate(
    X,
    indptr,
    indices,
    entries,
    block,
    *,
    epsilon,
    n_seeds,
    seed,
    target,
    k,
    sample,
    ladder,
    hold_share,
):
    """Slow calibration of a graph whose row r is X[r] (all rows live)."""
    n = X.shape[0]
    m = min(sample, n // hold_share)
    chosen = np.sort(np.random.default_rng([seed, 0xBEA]).choice(np.arange(n), m, replace=False))
    held = set(chosen.tolist())
    adj = [[] if r in held else indices[indptr[r] : indptr[r + 1]].tolist() for r in range(n)]
    ptr = np.zeros(n + 1, np.int64)
    ptr[1:] = np.cumsum([len(a) for a in adj])
    flat = np.array([v for a in adj for v in a], dtype=np.int32)
    dead = np.zeros(n, bool)
    dead[chosen] = True
    graph = (ro(np.arange(n)), ro(ptr), ro(flat), dead, ro(entries), ro(block))
    mask = ~dead
    S = X[chosen].astype(np.float64) @ X.astype(np.float64).T
    S[:, chosen] = -np.inf
    truth = [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in S]
    beam, recall = ladder[-1], 0.0
    for beam in ladder:
        ef = max(beam, k)
        hits = 0
        for q, want in zip(chosen, truth):
            got = ann_search(X, graph, mask, np.empty(0, np.int64), X[q], k, ef, epsilon, n_seeds)
            hits += len(set(got[0].tolist()) & want)
        recall = hits / (k * len(chosen))
        if recall >= target:
            break
    return max(beam, k), recall


def graph_of(X, k=6, max_degree=9, seed=0):
    indptr, indices = knn_graph(X, k=k, max_degree=max_degree)
    return search_structure(X, indptr, indices, seed=seed)


# with the JIT off (pure Python walks) one case takes ~15-40 s: the others are jit_only
SLOW_WITHOUT_JIT = pytest.mark.jit_only


@pytest.mark.parametrize(
    ("seed", "target"),
    [
        (0, 0.97),
        pytest.param(1, 0.97, marks=SLOW_WITHOUT_JIT),
        pytest.param(2, 0.995, marks=SLOW_WITHOUT_JIT),
        pytest.param(3, 1.0, marks=SLOW_WITHOUT_JIT),
    ],
)
def test_calibration_matches_reference(seed, target):
    rng = np.random.default_rng(seed)
    X = clustered(rng, 1600, d=16, clusters=40, noise=0.6)
    st = graph_of(X)
    n = X.shape[0]
    kw = dict(epsilon=0.0, n_seeds=2, seed=seed, target=target, k=10, sample=120, hold_share=8)
    ladder = (4, 8, 10, 12, 16, 24, 32, 64, 128)
    walk = (
        ro(np.arange(n)),
        st["indptr"],
        st["indices"],
        np.zeros(n, bool),
        st["entries"],
        st["block"],
    )
    got = cb.calibrate_beam(X, walk, np.ones(n, bool), ladder=ladder, **kw)
    beam, recall = ref_calibrate(
        X, st["indptr"], st["indices"], st["entries"], st["block"], ladder=ladder, **kw
    )
    assert (got["beam"], got["recall"]) == (beam, recall)
    assert got["queries"] == 120 and got["target"] == target and got["epsilon"] == 0.0
    again = cb.calibrate_beam(X, walk, np.ones(n, bool), ladder=ladder, **kw)
    assert again == {**got, "seconds": again["seconds"]}  # deterministic


@SLOW_WITHOUT_JIT
def test_calibration_climbs_the_ladder_and_warns_at_its_top(caplog):
    rng = np.random.default_rng(5)
    X = clustered(rng, 1600, d=16, clusters=50, noise=0.8)
    st = graph_of(X, k=4, max_degree=6)  # a sparse graph: recall 0.58 at 10, 0.81 at 400
    n = X.shape[0]
    walk = (
        ro(np.arange(n)),
        st["indptr"],
        st["indices"],
        np.zeros(n, bool),
        st["entries"],
        st["block"],
    )
    kw = dict(epsilon=0.0, n_seeds=1, seed=0, k=10, sample=100, hold_share=8)
    ladder = (10, 20, 40, 80)
    easy = cb.calibrate_beam(X, walk, np.ones(n, bool), target=0.5, ladder=ladder, **kw)
    mid = cb.calibrate_beam(X, walk, np.ones(n, bool), target=0.7, ladder=ladder, **kw)
    assert easy["beam"] == 10 and easy["recall"] >= 0.5
    assert mid["beam"] == 40 and mid["recall"] >= 0.7
    with caplog.at_level("WARNING", logger="dreamjit"):
        top = cb.calibrate_beam(X, walk, np.ones(n, bool), target=0.99, ladder=ladder, **kw)
    assert top["beam"] == 80 and top["recall"] < 0.99 and "below 0.99" in caplog.text


def test_too_small_a_graph_gets_the_top_beam():
    X = clustered(np.random.default_rng(0), 60, d=8)
    st = graph_of(X, k=4, max_degree=6)
    walk = (
        ro(np.arange(60)),
        st["indptr"],
        st["indices"],
        np.zeros(60, bool),
        st["entries"],
        st["block"],
    )
    mask = np.zeros(60, bool)
    mask[:16] = True  # 16 valid rows: fewer than HOLD_SHARE, no query
    got = cb.calibrate_beam(X, walk, mask, epsilon=0.1, n_seeds=2, seed=0)
    assert got["queries"] == 0 and got["beam"] == cb.BEAM_LADDER[-1]
    got = cb.calibrate_beam(X, walk, mask, epsilon=0.1, n_seeds=2, seed=0, hold_share=4)
    assert got["queries"] == 4  # and 12 others: enough for a top 10
    mask[:] = False
    got = cb.calibrate_beam(X, walk, mask, epsilon=0.1, n_seeds=2, seed=0)
    assert got["queries"] == 0 and got["beam"] == cb.BEAM_LADDER[-1]


def index(store, **kw):
    return NNDescentIndex(store, n_neighbors=10, builder="thread", min_build=64, **kw)


@SLOW_WITHOUT_JIT
def test_index_calibrates_an_adopted_graph_and_new_queries_reach_the_floor():
    rng = np.random.default_rng(11)
    X = clustered(rng, 3000, d=16, clusters=60, noise=0.6)
    store = Store(X, 3200)
    ann = index(store, min_ef=None, epsilon=0.05, n_seeds=2)
    adopt_exact_graph(ann, store)
    info = ann.graph_info
    cal = info["calibration"]
    assert cal["recall"] >= cb.CALIBRATION_RECALL and info["beam"] == cal["beam"]
    assert cal["queries"] == 3000 // cb.HOLD_SHARE and cal["epsilon"] == 0.05
    # new queries from the same clusters: recall@10 at the calibrated beam >= 0.95
    Q = clustered(np.random.default_rng(11), 3300, d=16, clusters=60, noise=0.6)[3000:]
    exact = ExactIndex(store)
    hits = [np.intersect1d(ann.search(q, 10)[0], exact.search(q, 10)[0]).size for q in Q]
    assert np.mean(hits) / 10 >= 0.95
    fixed = index(store, min_ef=12, epsilon=0.05, n_seeds=2)
    adopt_exact_graph(fixed, store)
    assert fixed.graph_info["calibration"] is None and fixed.graph_info["beam"] == 12


def refuse_calibrating(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(nnd, "calibrate_beam", fail)


def test_calibration_exported_kept_by_updates_and_redone_for_another_epsilon(monkeypatch):
    rng = np.random.default_rng(12)
    X = clustered(rng, 1500, d=16, clusters=30)
    store = Store(X[:1200], 1500)
    ann = index(store, min_ef=None)
    adopt_exact_graph(ann, store)
    cal = ann.graph_arrays()["calibration"]
    assert set(cal) == set(cb.CALIBRATION_FIELDS) and cal["beam"] in cb.BEAM_LADDER
    redo = index(store, min_ef=None, epsilon=0.3)
    redo.from_graph_arrays(ann.graph_arrays())  # calibrated for 0.15: done again at 0.3
    assert redo.graph_info["calibration"]["epsilon"] == 0.3
    refuse_calibrating(monkeypatch)
    other = index(store, min_ef=None)
    other.from_graph_arrays({**ann.graph_arrays(), "calibration": {**cal, "beam": 37}})
    assert other.graph_info["beam"] == 37  # the saved beam, not calibrated again
    # churn: removed rows repaired, new rows linked; the beam stays
    gone = np.arange(0, 1200, 10)
    store.alive[gone] = False
    other.remove(gone)
    store.embeddings[1200:1300] = X[1200:1300]
    store.ids[1200:1300] = np.arange(1200, 1300)
    store.alive[1200:1300] = True
    other.add(np.arange(1200, 1300))
    assert other.maintain() and other.linked == 100 and other.repaired == gone.size
    assert other.graph_info["beam"] == 37 and other.graph_arrays()["calibration"]["beam"] == 37


def test_calibration_ignores_the_delta():
    """Live entries outside the graph (the delta) are not part of the calibration's truth:
    the walk it measures cannot return them."""
    X = clustered(np.random.default_rng(15), 1500, d=16, clusters=30)
    store = Store(X, 1500)
    store.alive[1200:] = False
    ann = index(store, min_ef=None)
    adopt_exact_graph(ann, store)  # a graph of the first 1200 rows
    arrays = ann.graph_arrays()
    store.alive[1200:] = True
    other = index(store, min_ef=None)
    other.from_graph_arrays({**arrays, "calibration": None})
    assert other.n_delta == 300
    a, b = ann.graph_info["calibration"], other.graph_info["calibration"]
    assert (a["beam"], a["recall"], a["queries"]) == (b["beam"], b["recall"], b["queries"])


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c.update(beam=0), "beam"),
        (lambda c: c.update(beam=-3), "beam"),
        (lambda c: c.update(beam=True), "beam"),
        (lambda c: c.update(beam=20.0), "beam"),
        (lambda c: c.update(beam="20"), "beam"),
        (lambda c: c.update(beam=2**40), "beam"),
        (lambda c: c.update(recall=1.5), "recall"),
        (lambda c: c.update(recall=float("nan")), "recall"),
        (lambda c: c.update(epsilon=-0.1), "epsilon"),
        (lambda c: c.update(target=None), "target"),
        (lambda c: c.pop("target"), "calibration"),
        (lambda c: c.update(extra=1), "calibration"),
    ],
)
def test_damaged_calibration_refused_by_the_import(edit, field):
    rng = np.random.default_rng(13)
    store = Store(clustered(rng, 400), 512)
    ann = index(store, min_ef=None)
    adopt_exact_graph(ann, store)
    arrays = ann.graph_arrays()
    cal = dict(arrays["calibration"])
    edit(cal)
    other = index(store, min_ef=None)
    with pytest.raises(IndexCorruptedError, match=f"graph calibration.*{field}|{field}"):
        other.from_graph_arrays({**arrays, "calibration": cal})
    assert not other.ready
    with pytest.raises(IndexCorruptedError, match="calibration"):
        other.from_graph_arrays({**arrays, "calibration": [cal]})


# ----------------------------------------------------------------- saved with a pool
def test_pool_saves_and_loads_the_calibrated_beam(tmp_path, no_builds, monkeypatch):
    pool, V = ann_pool()
    cal = pool.indexes.ann.graph_info["calibration"]
    assert pool.config.ann_min_ef is None and cal is not None
    path = pool.save(tmp_path / "p.npz")
    header = dj.io.read_header(path)
    assert header["format_version"] == 4
    assert header["graph"]["calibration"] == {k: cal[k] for k in cb.CALIBRATION_FIELDS}
    refuse_calibrating(monkeypatch)
    loaded = dj.DreamPool.load(path)
    assert not no_builds and loaded.indexes.ann.graph_info["beam"] == cal["beam"]
    assert_invariants(loaded)


def test_format_3_file_loads_and_is_calibrated(tmp_path, no_builds):
    pool, V = ann_pool()
    cal = pool.indexes.ann.graph_info["calibration"]
    path = pool.save(tmp_path / "p.npz")

    def as_v3(h, a):
        h["format_version"] = 3
        del h["graph"]["calibration"]

    loaded = dj.DreamPool.load(rewrite(path, tmp_path / "v3.npz", as_v3))
    got = loaded.indexes.ann.graph_info["calibration"]
    assert not no_builds and loaded.indexes.ann.ready
    # same graph, rows, seed and settings: the same calibration as the build's
    assert {k: got[k] for k in cb.CALIBRATION_FIELDS} == {k: cal[k] for k in cb.CALIBRATION_FIELDS}
    np.testing.assert_array_equal(loaded.ids(), pool.ids())
    assert_invariants(loaded)
    # a fixed beam in the config: adopted as it is, not calibrated
    fixed, _ = ann_pool(ann_min_ef=30)
    assert fixed.indexes.ann.graph_info["calibration"] is None
    fpath = fixed.save(tmp_path / "f.npz")
    assert dj.io.read_header(fpath)["graph"]["calibration"] is None
    again = dj.DreamPool.load(fpath)
    assert again.indexes.ann.graph_info["beam"] == 30 and again.config.ann_min_ef == 30


def test_damaged_calibration_in_a_file_refused(tmp_path, no_builds):
    pool, _ = ann_pool()
    path = pool.save(tmp_path / "p.npz")

    def damage(field, value):
        def edit(h, a):
            h["graph"]["calibration"][field] = value

        return edit

    def dropped(h, a):
        del h["graph"]["calibration"]

    def v3_with_calibration(h, a):
        h["format_version"] = 3

    for edit, match in [
        (damage("beam", 0), "calibration beam"),
        (damage("beam", "62"), "calibration beam"),
        (damage("recall", 7), "calibration recall"),
        (damage("epsilon", -1.0), "calibration epsilon"),
        (damage("extra", 1), "calibration"),
        (dropped, "graph object"),
        (v3_with_calibration, "graph object"),
    ]:
        out = rewrite(path, tmp_path / "bad.npz", edit)
        with pytest.raises(IndexCorruptedError, match=match):
            dj.DreamPool.load(out)
    ok = rewrite(path, tmp_path / "ok.npz", lambda h, a: None)
    assert dj.DreamPool.load(ok).indexes.ann.ready


def test_config_ann_min_ef_none_or_int():
    assert PoolConfig().ann_min_ef is None
    assert PoolConfig(ann_min_ef=20).ann_min_ef == 20
    assert PoolConfig.from_dict(PoolConfig().to_dict()).ann_min_ef is None
    for bad in (0, -1, 1.5, "20", True):
        with pytest.raises(dj.InvalidConfigError, match="ann_min_ef"):
            PoolConfig(ann_min_ef=bad)


# ----------------------------------------------------------------- a real build
@pytest.mark.ann
@pytest.mark.jit_only  # pynndescent does not run with the JIT off
def test_build_calibrates_its_graph():
    X = clustered(np.random.default_rng(14), 2000, d=16, clusters=40)
    store = Store(X, 2000)
    ann = NNDescentIndex(store, n_neighbors=8, min_ef=None, background=False, seed=3)
    assert ann.rebuild(block=True) and ann.ready
    cal = ann.graph_info["calibration"]
    assert cal["recall"] >= cb.CALIBRATION_RECALL and ann.graph_info["beam"] == cal["beam"]
    # the same calibration as one of the installed graph (its rows are the snapshot's)
    g = ann.graph_arrays()
    again = cb.calibrate_beam(
        store.embeddings,
        (
            ro(np.arange(2000)),
            g["indptr"],
            g["indices"],
            np.zeros(2000, bool),
            g["entries"],
            g["block"],
        ),
        store.alive,
        epsilon=ann.epsilon,
        n_seeds=ann.n_seeds,
        seed=3,
    )
    assert (again["beam"], again["recall"]) == (cal["beam"], cal["recall"])
