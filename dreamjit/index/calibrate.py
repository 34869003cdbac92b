"""The walk's beam, calibrated once per graph (``NNDescentIndex(min_ef=None)``).

A graph walk keeps the ``ef`` best rows it has seen (its *beam*); a wider beam
finds more of the true top-k and costs more rows scored. How wide a beam a given
recall needs depends on the data: on a 100-centre mixture or 1000 clusters of
1e5 rows a beam of 15-20 keeps recall@10 above 0.98, while 2e5 rows in 20000
clusters need ~62 (``docs/performance.md``). So the beam is measured on each
graph when it is built (or adopted without a calibration) instead of being one
number for all data:

1. a seeded sample of ``CALIBRATION_SAMPLE`` graph rows is *held out*: their
   out-edges are dropped and they are marked dead (never returned), so each
   one is a query that is not part of the graph, as a new query is not (a row
   left in would find itself and its own neighbour list: far too optimistic);
2. the exact top-``CALIBRATION_K`` of each, among the other rows, is computed
   with the exact batch kernel;
3. the walk runs at each beam of ``BEAM_LADDER`` in turn (with the index's
   ``epsilon`` and seeds) until the sample's recall@k reaches
   ``CALIBRATION_RECALL``; that beam is kept (the largest of the ladder, with
   a warning, if none reaches it).

The held-out sample is a little *harder* than new queries from the same
distribution (its rows' in-neighbours lost an edge each); measured on the
mixture and 1000-cluster sets at 1e5 its recall@10 ran 0.002-0.015 below that
of 1000 new queries at every beam (``scripts/measure_ann_speed.py``), so the
target of 0.97 leaves room above the 0.95 that queries are meant to get.

Everything is deterministic: the sample comes from the index's ``seed``, the
kernels are deterministic and the ladder is walked in order.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from ..errors import IndexCorruptedError
from ..kernels.cosine import topk_dot_batch
from ..kernels.graph import ann_search_batch

__all__ = [
    "BEAM_LADDER",
    "CALIBRATION_K",
    "CALIBRATION_RECALL",
    "CALIBRATION_SAMPLE",
    "DEFAULT_BEAM",
    "calibrate_beam",
    "check_calibration",
]

logger = logging.getLogger("dreamjit")

#: recall@CALIBRATION_K the held-out sample must reach at the calibrated beam
CALIBRATION_RECALL = 0.97
#: the k of the calibration's recall (the recall@10 of the performance targets)
CALIBRATION_K = 10
#: rows held out as calibration queries (at most one row in HOLD_SHARE of the graph's)
CALIBRATION_SAMPLE = 256
#: dropping the held-out rows' edges makes rows that only they linked to harder to
#: reach: kept to one row in 64 (a graph of 3000 exact 10-NN rows reached recall@10
#: 0.967 at most with one in 8 held out), 0.26% of the rows at 1e5
HOLD_SHARE = 64
#: beams tried, smallest first (a beam below ``k`` acts as ``k``)
BEAM_LADDER = (10, 12, 16, 20, 24, 32, 40, 48, 62, 80, 100, 128, 160, 200, 256)
#: the beam of a graph without a calibration (e.g. adopted from a format 3 file
#: by an index that could not calibrate it): the fixed default before calibration
DEFAULT_BEAM = 62
#: the calibration record's fields (saved with the graph)
CALIBRATION_FIELDS = ("beam", "epsilon", "recall", "target")
#: the largest beam a calibration record may hold (config.MAX_ANN_MIN_EF)
MAX_BEAM = 2**16


def _held_out(indptr, indices, dead, hold):
    """The graph with the ``hold`` rows' out-edges dropped and those rows dead
    (read-only like a sealed graph's arrays, so the walk kernel keeps one signature)."""
    deg = np.diff(indptr)
    keep = np.repeat(~hold, deg)
    indices2 = np.ascontiguousarray(indices[keep])
    indptr2 = np.zeros(indptr.shape[0], dtype=np.int64)
    np.cumsum(np.where(hold, 0, deg), out=indptr2[1:])
    for arr in (indptr2, indices2):
        arr.setflags(write=False)
    return indptr2, indices2, dead | hold


def _read_only(arr):
    view = arr.view()
    view.setflags(write=False)
    return view


def calibrate_beam(
    X,
    walk,
    mask,
    *,
    epsilon,
    n_seeds,
    seed,
    target=CALIBRATION_RECALL,
    k=CALIBRATION_K,
    sample=CALIBRATION_SAMPLE,
    ladder=BEAM_LADDER,
    hold_share=HOLD_SHARE,
) -> dict:
    """The smallest beam of ``ladder`` whose held-out recall@k reaches ``target``.

    Parameters
    ----------
    X : (cap, d) float32
        The rows the graph's slots refer to (a store's embeddings or a build's snapshot).
    walk : tuple
        ``(rows, indptr, indices, dead, entries, block)`` as
        :func:`~dreamjit.kernels.graph.ann_search` takes it.
    mask : (cap,) bool
        Slots that may be returned (live entries).
    epsilon : float
        The index's walk slack.
    n_seeds : int
        The index's walk seeds.
    seed : int
        Picks the sample.
    target : float
        Recall@k to reach.
    k : int
        Neighbours per calibration query.
    sample : int
        Rows held out as queries (at most one row in ``HOLD_SHARE`` of the graph's
        valid rows).
    ladder : sequence of int
        Beams tried, in order.
    hold_share : int
        At most one valid row in this many is held out.

    Returns
    -------
    dict
        ``beam`` (int), ``recall`` (the sample's recall@k at it), ``target``,
        ``epsilon``, and ``queries`` and ``seconds`` (not saved).
    """
    t0 = time.perf_counter()
    rows, indptr, indices, dead, entries, block = walk
    valid = np.flatnonzero(~dead & mask[rows])
    m = min(int(sample), valid.shape[0] // max(int(hold_share), 1))
    out = {"beam": int(ladder[-1]), "epsilon": float(epsilon), "recall": 0.0}
    out["target"] = float(target)
    if m < 1 or valid.shape[0] - m < k:
        out.update(queries=0, seconds=time.perf_counter() - t0)
        return out
    rng = np.random.default_rng([int(seed), 0xBEA])
    chosen = np.sort(rng.choice(valid, size=m, replace=False))
    hold = np.zeros(rows.shape[0], dtype=np.bool_)
    hold[chosen] = True
    indptr2, indices2, dead2 = _held_out(indptr, indices, dead, hold)
    graph = (_read_only(rows), indptr2, indices2, dead2, _read_only(entries), _read_only(block))
    slots = rows[chosen]
    queries = np.ascontiguousarray(X[slots])
    others = np.zeros_like(mask)  # the graph's valid rows (not a delta the walk cannot see)
    others[rows[valid]] = True
    others[slots] = False
    truth, _ = topk_dot_batch(X, queries, others, k)
    empty = np.empty(0, dtype=np.int64)
    recall, last = 0.0, None
    for beam in ladder:
        ef = max(int(beam), k)
        if ef == last:  # acts as the previous beam (below k)
            continue
        last = ef
        found, _, _ = ann_search_batch(X, graph, others, empty, queries, k, ef, epsilon, n_seeds)
        hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
        recall = float(np.count_nonzero(hits.any(axis=2))) / float(np.count_nonzero(truth >= 0))
        out.update(beam=int(ef), recall=recall)
        if recall >= target:
            break
    else:
        logger.warning(
            "NN-descent beam calibration: recall@%d %.4f at the largest beam %d, below %.2f",
            k,
            recall,
            out["beam"],
            target,
        )
    out.update(queries=int(m), seconds=time.perf_counter() - t0)
    return out


def check_calibration(cal) -> None:
    """Refuse a calibration record that is not one :func:`calibrate_beam` could have made.

    Parameters
    ----------
    cal : object
        None (no calibration) or a dict with exactly ``CALIBRATION_FIELDS``.

    Returns
    -------
    None
        The record passed every check.

    Raises
    ------
    IndexCorruptedError
        Naming the field and what was expected.
    """
    if cal is None:
        return
    if not isinstance(cal, dict) or set(cal) != set(CALIBRATION_FIELDS):
        raise IndexCorruptedError(
            "graph calibration", cal, f"None or a dict with the fields {list(CALIBRATION_FIELDS)}"
        )
    beam = cal["beam"]
    if type(beam) is not int or not 1 <= beam <= MAX_BEAM:
        raise IndexCorruptedError("graph calibration beam", beam, f"an integer in [1, {MAX_BEAM}]")
    for name, lo, hi in (("epsilon", 0.0, 1000.0), ("recall", 0.0, 1.0), ("target", 0.0, 1.0)):
        value = cal[name]
        ok = type(value) in (int, float) and math.isfinite(value) and lo <= value <= hi
        if not ok:
            raise IndexCorruptedError(
                f"graph calibration {name}", value, f"a finite number in [{lo}, {hi}]"
            )


def saved_calibration(cal):
    """The part of a calibration record saved with the graph (None stays None)."""
    if cal is None:
        return None
    return {name: cal[name] for name in CALIBRATION_FIELDS}
