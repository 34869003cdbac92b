"""Data builders, peer implementations and the interleaved timer behind ``dreamjit.bench``."""

from __future__ import annotations

import math
import time

import numpy as np

SEED = 0
DIM = 64
K = 10


# ----------------------------------------------------------------------------- data and peers
def _mixture(n, d=DIM, seed=SEED, stream=1, chunk=100_000):
    """Unit float32 rows of a 100-centre Gaussian mixture (as in the asv suite)."""
    centres = np.random.default_rng(seed).normal(size=(100, d))
    out = np.empty((n, d), dtype=np.float32)
    for c, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        rng = np.random.default_rng([seed, stream, c])
        x = centres[rng.integers(0, 100, stop - start)]
        x += rng.normal(size=x.shape)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:stop] = x
    return out


def _results(n):
    res = np.zeros((n, 3))
    res[:, :2] = 1.0
    return res


def _embedding_pool(X, use_ann=False):
    from dreamjit.config import PoolConfig
    from dreamjit.pool import DreamPool

    n = X.shape[0]
    pool = DreamPool(
        PoolConfig(
            max_size=n,
            memory_budget_mb=None,
            use_ann=use_ann,
            ann_threshold=n + 1,
            embedding_dim=X.shape[1],
            tensor_shape=(1, 1, 3),
            seed=SEED,
            query_cache_size=0,
        )
    )
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        pool.add_batch(
            np.full((m, 1, 1, 3), 0.5, np.float32),
            _results(m),
            embeddings=X[s : s + m],
            only_coherent=False,
        )
    if use_ann:
        pool.config = pool.config.replace(ann_threshold=1)
        pool.rebuild_index(block=True)
    return pool


def _numpy_topk(X, q, k=K):
    s = X @ q
    part = np.argpartition(-s, k - 1)[:k]
    return part[np.argsort(-s[part], kind="stable")]


def _numpy_topk_batch(X, Q, k=K):
    S = Q @ X.T
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(S, part, axis=1)
    return np.take_along_axis(part, np.argsort(-top, axis=1, kind="stable"), axis=1)


def _truth(X, Q, k=K):
    out = np.empty((Q.shape[0], k), dtype=np.int64)
    for s in range(0, Q.shape[0], 256):
        S = Q[s : s + 256].astype(np.float64) @ X.astype(np.float64).T
        out[s : s + 256] = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return out


def _recall(found, truth):
    return float(
        np.mean(
            [
                len(set(np.asarray(f).tolist()) & set(t.tolist())) / len(t)
                for f, t in zip(found, truth)
            ]
        )
    )


def _spectral_numpy(tensors):
    """Vectorised numpy/scipy spectral features (the peer of ``spectral_features_batch``)."""
    import scipy.fft
    import scipy.special

    a = np.asarray(tensors, dtype=np.float32)
    n, rows, cols, layers, C = a.shape
    N = rows * cols
    moved = np.moveaxis(a, 4, 1)
    x = np.ascontiguousarray(moved[..., 0], dtype=np.float64)
    for k in range(1, layers):
        x += moved[..., k]
    x /= layers
    x -= x.reshape(n, C, N).mean(axis=2)[:, :, None, None]
    hann = lambda m: 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(m) / m)  # noqa: E731
    x *= hann(rows)[:, None] * hann(cols)[None, :]
    F = scipy.fft.fft2(x)
    P = F.real**2
    P += F.imag**2
    P /= N
    P = P.reshape(n, C, N)
    total = P.sum(axis=2)
    flat = total < 1e-12
    safe = np.where(flat, 1.0, total)
    entropy = (scipy.special.entr(P).sum(axis=2) / safe + np.log(safe)) / math.log(N)
    fy, fx = np.fft.fftfreq(rows), np.fft.fftfreq(cols)
    r = (np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / 0.5).ravel()
    bands = np.stack([r < 1 / 3, (r >= 1 / 3) & (r < 2 / 3), r >= 2 / 3], axis=1)
    band = (P @ bands.astype(np.float64)) / safe[:, :, None]
    dominant = r[np.argmax(P, axis=2)]
    feats = np.concatenate(
        [entropy[:, :, None], band, dominant[:, :, None], (total / N)[:, :, None]], axis=2
    )
    feats[:, :, :5] = np.where(flat[:, :, None], 0.0, feats[:, :, :5])
    return feats.mean(axis=1).astype(np.float32)


def _optional(module):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_STREAM = {}


def _stream_kernels():
    """njit float32 sums that only load every element once: the bandwidth bound."""
    if not _STREAM:
        from numba import njit, prange

        def serial(flat):
            s = np.float32(0.0)
            for i in range(flat.shape[0]):
                s += flat[i]
            return s

        serial_jit = njit(nogil=True, fastmath=True)(serial)

        def parallel(flat):
            n = flat.shape[0]
            part = np.zeros(64, dtype=np.float32)
            for c in prange(64):  # 64 chunks over the threads; each chunk vectorises
                part[c] = serial_jit(flat[c * n // 64 : (c + 1) * n // 64])
            return part.sum()

        _STREAM["serial"] = serial_jit
        _STREAM["parallel"] = njit(nogil=True, fastmath=True, parallel=True)(parallel)
    return _STREAM["serial"], _STREAM["parallel"]


# ----------------------------------------------------------------------------- timing
def _per_call(fn, number):
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def race(fns: dict, rounds: int = 7, min_time: float = 0.02) -> dict:
    """Median seconds per call of each function, timed interleaved.

    Each function is warmed, then given a call count so one turn takes about
    ``min_time``; the functions then take turns for ``rounds`` rounds (the
    order rotating), and each reports the median of its turns.
    """
    number = {}
    for name, fn in fns.items():
        fn()
        t = _per_call(fn, 1)
        number[name] = max(1, min(100_000, int(min_time / max(t, 1e-7))))
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_per_call(fns[name], number[name]))
    return {name: float(np.median(t)) for name, t in times.items()}
