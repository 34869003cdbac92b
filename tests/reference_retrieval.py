"""Slow, obviously correct references for the retrieval kernels.

Plain numpy / Python, importing nothing from dreamjit. Dot products are summed
in float64 in sequential order (``s = s + x[j] * q[j]`` for ``j = 0 .. d-1``,
multiply and add rounded separately): the order the kernels use, so scores are
bit-identical to theirs. BLAS (``X @ q``) would differ in the last bits, and
turn exact ties into near-ties. Ranking: score descending, ties to the lower
index (``np.lexsort`` on ``(index, -score)``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "seq_dots",
    "seq_norms",
    "normalize_rows_ref",
    "topk_from_scores",
    "topk_dot_ref",
    "topk_cosine_ref",
    "topk_dot_batch_ref",
    "cosine_ref",
    "mmr_ref",
    "mmr_fast_ref",
    "hybrid_base_ref",
    "hybrid_rerank_ref",
    "dispersion_ref",
]


# ----------------------------------------------------------------------------- dots


def seq_dots(X, q):
    """float64 ``dot(X[i], q)`` for every row, summed over ``j`` in order."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    q = np.asarray(q, dtype=np.float64)
    s = np.zeros(X.shape[0])
    for j in range(X.shape[1]):
        s = s + X[:, j] * q[j]
    return s


def seq_norms(X):
    """float64 Euclidean norm of every row, squares summed in order."""
    return np.sqrt(_seq_sq(X))


def _seq_sq(X):
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    s = np.zeros(X.shape[0])
    for j in range(X.shape[1]):
        s = s + X[:, j] * X[:, j]
    return s


def normalize_rows_ref(X):
    """float32 unit rows; a zero row stays zero."""
    X64 = np.asarray(X, dtype=np.float64)
    norms = seq_norms(X64)
    out = np.zeros_like(X64)
    nz = norms > 0
    out[nz] = X64[nz] / norms[nz, None]
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- top-k


def topk_from_scores(scores, mask, k):
    """Best ``min(k, mask.sum())`` selected rows: ``(indices int64, scores float64)``."""
    scores = np.asarray(scores, dtype=np.float64)
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    order = np.lexsort((idx, -scores[idx]))[: max(k, 0)]
    return idx[order].astype(np.int64), scores[idx][order]


def topk_dot_ref(X, q, mask, k):
    return topk_from_scores(seq_dots(X, q), mask, k)


def topk_cosine_ref(X, q, mask, k):
    dots = seq_dots(X, q)
    den = seq_norms(X) * math.sqrt(float(_seq_sq(np.asarray(q)[None, :])[0]))
    scores = np.zeros_like(dots)
    nz = den > 0
    scores[nz] = dots[nz] / den[nz]
    return topk_from_scores(scores, mask, k)


def topk_dot_batch_ref(X, Q, mask, k):
    """Per-query :func:`topk_dot_ref`, padded to ``(m, k)`` with -1 / -inf."""
    m = len(Q)
    out_i = np.full((m, k), -1, dtype=np.int64)
    out_s = np.full((m, k), -np.inf)
    for t in range(m):
        i, s = topk_dot_ref(X, Q[t], mask, k)
        out_i[t, : len(i)] = i
        out_s[t, : len(s)] = s
    return out_i, out_s


# ----------------------------------------------------------------------------- MMR


def _vec(v):
    return [float(x) for x in np.asarray(v).ravel()]


def cosine_ref(a, b):
    """Cosine of two plain lists; 0 if either is a zero vector."""
    dot = 0.0
    na = 0.0
    nb = 0.0
    for x, y in zip(a, b):
        dot += x * y
    for x in a:
        na += x * x
    for y in b:
        nb += y * y
    den = math.sqrt(na) * math.sqrt(nb)
    return dot / den if den > 0.0 else 0.0


def mmr_ref(query, cands, k, lambda_):
    """Greedy MMR with lists and loops; max similarity recomputed against every pick."""
    return mmr_fast_ref(query, cands, k, lambda_, -math.inf, 0)


def mmr_fast_ref(query, cands, k, lambda_, min_similarity, sample_size):
    """MMR with early termination and redundancy against a sample of the picks.

    Stop when no unpicked candidate has relevance >= ``min_similarity``. The
    sample is the first pick plus the latest ``sample_size - 1`` picks; with
    ``sample_size <= 0`` or ``>= k`` it is every pick.
    """
    q = _vec(query)
    rows = [_vec(c) for c in cands]
    n = len(rows)
    k = min(k, n)
    rel = [cosine_ref(r, q) for r in rows]
    sampled = 0 < sample_size < k
    picks, scores = [], []
    while len(picks) < k:
        left = [i for i in range(n) if i not in picks]
        if max(rel[i] for i in left) < min_similarity:
            break
        if not picks:
            best = max(left, key=lambda i: (rel[i], -i))
            picks.append(best)
            scores.append(rel[best])
            continue
        sample = picks
        if sampled:  # the first pick plus the latest sample_size - 1 picks
            recent = picks[1:][-(sample_size - 1) :] if sample_size > 1 else []
            sample = [picks[0]] + recent
        best, best_v = None, -math.inf
        for i in left:
            red = max(cosine_ref(rows[i], rows[p]) for p in sample)
            v = lambda_ * rel[i] - (1.0 - lambda_) * red
            if best is None or v > best_v:
                best, best_v = i, v
        picks.append(best)
        scores.append(best_v)
    return np.array(picks, dtype=np.int64), np.array(scores, dtype=np.float64)


# ----------------------------------------------------------------------------- hybrid


def hybrid_base_ref(sim, util_mean, labels, query_label, alpha, beta, gamma):
    sim = [float(s) for s in sim]
    lo, hi = min(sim), max(sim)
    base = []
    for s, u, lab in zip(sim, util_mean, labels):
        s_norm = (s - lo) / (hi - lo) if hi > lo else 1.0
        util = min(max(float(u), 0.0), 1.0)
        if lab < 0 or query_label < 0:
            cls = 0.5
        else:
            cls = 1.0 if lab == query_label else 0.0
        base.append(alpha * s_norm + beta * util + gamma * cls)
    return base


def hybrid_rerank_ref(
    sim, util_mean, labels, query_label, emb, alpha, beta, gamma, delta, lambda_, k
):
    """Greedy hybrid rerank with lists and loops; redundancy recomputed against every pick."""
    m = len(sim)
    if m == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    base = hybrid_base_ref(sim, util_mean, labels, query_label, alpha, beta, gamma)
    rows = [_vec(e) for e in emb]

    def dot(a, b):
        s = 0.0
        for x, y in zip(a, b):
            s += x * y
        return s

    order, scores = [], []
    while len(order) < min(k, m):
        best, best_v = None, -math.inf
        for i in range(m):
            if i in order:
                continue
            if not order:
                v = base[i]
            else:
                v = lambda_ * base[i] - delta * max(dot(rows[i], rows[p]) for p in order)
            if best is None or v > best_v:
                best, best_v = i, v
        order.append(best)
        scores.append(best_v)
    return np.array(order, dtype=np.int64), np.array(scores)


# ----------------------------------------------------------------------------- dispersion


def dispersion_ref(X):
    """Mean over pairs i < j of ``1 - cosine``; 0.0 for fewer than two rows."""
    rows = [_vec(x) for x in X]
    n = len(rows)
    if n < 2:
        return 0.0
    total = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += 1.0 - cosine_ref(rows[i], rows[j])
    return total / (n * (n - 1) / 2)
