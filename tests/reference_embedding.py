"""Plain numpy references of the embedding's feature groups and thumbnail (slow, obvious)."""

import numpy as np


def thumbnail(t, grid, w=None):
    """Certainty-weighted area means of the layer mean, (grid*grid*C,) float64."""
    t = np.asarray(t, np.float64)
    if t.ndim == 3:
        t = t[:, :, None, :]
    rows, cols, layers, C = t.shape
    if w is None or np.sum(w) <= 0:
        w = np.ones((rows, cols, layers))
    w = np.asarray(w, np.float64).reshape(rows, cols, layers)
    mean = (w[..., None] * t).sum(axis=(0, 1, 2)) / w.sum()
    out = np.empty((grid, grid, C))
    for br in range(grid):
        r0 = br * rows // grid
        r1 = max((br + 1) * rows // grid, r0 + 1)
        for bc in range(grid):
            c0 = bc * cols // grid
            c1 = max((bc + 1) * cols // grid, c0 + 1)
            ws = w[r0:r1, c0:c1]
            if ws.sum() > 0:
                out[br, bc] = (ws[..., None] * t[r0:r1, c0:c1]).sum(axis=(0, 1, 2)) / ws.sum()
            else:
                out[br, bc] = mean
    return out.ravel()


def _unit(v, weight):
    n = np.linalg.norm(v)
    return v * (weight / n) if n > 0 else np.zeros_like(v)


def group_features(chroma, spectral, spatial, label, utility, present, weights, buckets):
    """The concatenated weighted unit group vectors of one entry (float64)."""
    C = len(chroma)
    parts = []
    parts.append(_unit(np.asarray(chroma, np.float64), weights[0]) if present[0] else np.zeros(C))
    s = np.asarray(spectral, np.float64).copy()
    s[5] = max(s[5], 0.0) / (1.0 + max(s[5], 0.0))
    parts.append(_unit(s, weights[1]) if present[1] else np.zeros(6))
    sp = np.asarray(spatial, np.float64).reshape(-1, C)
    g = np.concatenate([(sp - sp.mean(axis=0)).ravel(), [1e-3 * np.abs(sp).mean()]])
    parts.append(_unit(g, weights[2]) if present[2] else np.zeros(g.shape))
    lab = np.zeros(buckets)
    if present[3]:
        if label >= 0:
            lab[label % buckets] = weights[3]
        else:
            lab[:] = weights[3] / np.sqrt(buckets)
    parts.append(lab)
    u = 0.5 if (utility is None or np.isnan(utility)) else min(max(utility, 0.0), 1.0)
    parts.append(
        weights[4] * np.array([np.cos(np.pi * u / 2), np.sin(np.pi * u / 2)])
        if present[4]
        else np.zeros(2)
    )
    return np.concatenate(parts)


def embed(mapper, chroma, spectral, spatial, label=-1, utility=np.nan, present=(True,) * 5):
    f = group_features(
        chroma, spectral, spatial, label, utility, present, mapper.weights, mapper.buckets
    )
    e = np.zeros(mapper.dim)
    b = mapper.bounds
    for g in range(len(b) - 1):
        img = f[b[g] : b[g + 1]] @ mapper.projection[b[g] : b[g + 1]]
        if np.linalg.norm(img) > 0:
            e += img * (np.linalg.norm(f[b[g] : b[g + 1]]) / np.linalg.norm(img))
    n = np.linalg.norm(e)
    return e / n if n > 0 else e
