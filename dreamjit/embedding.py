"""Embedding mapper: entry features -> unit vectors for soft retrieval."""

from __future__ import annotations

import numpy as np

from ._validate import as_float, as_int
from .config import DEFAULT_EMBEDDING_WEIGHTS as DEFAULT_WEIGHTS
from .errors import InvalidParameterError
from .kernels.embed import N_GROUPS, UTILITY_LEN, embed_batch

__all__ = ["EmbeddingMapper", "N_SPECTRAL", "GROUPS", "DEFAULT_WEIGHTS"]

#: length of the spectral feature vector
N_SPECTRAL = 6
#: the feature groups of an embedding, in order
GROUPS = ("chroma", "spectral", "spatial", "label", "utility")


class EmbeddingMapper:
    """Maps entry features to ``dim``-long unit embeddings, deterministically for a seed.

    An entry has five feature groups (see :mod:`dreamjit.kernels.embed`):
    chroma (C), spectral (6), spatial (a ``grid x grid`` thumbnail per channel
    plus a flatness slot), label (one-hot of ``label mod buckets``, uniform
    without a label) and utility (2). Each group is a unit vector times its
    weight; the groups are projected into orthogonal subspaces of the
    embedding and the result is L2-normalised. A query leaves out the groups
    it lacks, so it ranks by the groups it has with no bias from the others.

    When the groups fit (``n_features <= dim``) the projection is an
    isometry (a seeded orthonormal map), so cosines of the group vectors are
    kept exactly. Otherwise each group gets its own block of dimensions
    (small groups whole, the rest shared by size) with a seeded orthonormal
    map per block: the groups still do not mix, and each group's image is
    scaled back to its weight, so no entry gains weight from a group its
    block shrinks.

    Parameters
    ----------
    dim : int
        Embedding length.
    seed : int
        Seed of the projection.
    channels : int
        Number of chroma channels C.
    weights : tuple of 5 floats
        Weights of the chroma, spectral, spatial, label and utility groups.
    buckets : int
        Label buckets of the one-hot group.
    grid : int
        Side of the spatial thumbnail.

    Examples
    --------
    >>> import numpy as np
    >>> from dreamjit import EmbeddingMapper
    >>> m = EmbeddingMapper(dim=8, seed=0, channels=3)
    >>> e = m.embed(np.array([[0.5, 0.2, 0.1]], np.float32), np.zeros((1, 6), np.float32))
    >>> e.shape, round(float(np.linalg.norm(e[0])), 5)
    ((1, 8), 1.0)
    """

    def __init__(
        self,
        dim: int = 64,
        seed: int = 0,
        channels: int = 3,
        weights=DEFAULT_WEIGHTS,
        buckets: int = 16,
        grid: int = 4,
    ):
        self.dim = as_int(dim, "dim", minimum=1)
        self.seed = as_int(seed, "seed", minimum=0)
        self.channels = as_int(channels, "channels", minimum=1)
        self.buckets = as_int(buckets, "buckets", minimum=1)
        self.grid = as_int(grid, "grid", minimum=1)
        if len(weights) != N_GROUPS:
            raise InvalidParameterError(
                "weights", weights, f"{N_GROUPS} weights ({', '.join(GROUPS)})"
            )
        self.weights = np.array(
            [as_float(w, "weights", minimum=0.0) for w in weights], dtype=np.float64
        )
        self.spatial_len = self.grid * self.grid * self.channels
        self.group_lengths = (
            self.channels,
            N_SPECTRAL,
            self.spatial_len + 1,
            self.buckets,
            UTILITY_LEN,
        )
        self.n_features = int(sum(self.group_lengths))
        self.bounds = np.concatenate([[0], np.cumsum(self.group_lengths)]).astype(np.int64)
        self.projection = self._make_projection()
        # identity for caches: two mappers with equal keys embed identically
        self.key = (
            self.dim,
            self.seed,
            self.channels,
            self.buckets,
            self.grid,
            tuple(self.weights.tolist()),
        )

    @staticmethod
    def _orthonormal(rng, rows: int, cols: int) -> np.ndarray:
        """A seeded ``(rows, cols)`` matrix with orthonormal columns (rows >= cols) or rows."""
        tall, wide = max(rows, cols), min(rows, cols)
        q, r = np.linalg.qr(rng.standard_normal((tall, wide)))
        q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # fix QR's sign freedom: same seed, same matrix
        return q if rows >= cols else q.T

    def _block_sizes(self) -> list[int]:
        """Dimensions of each group's block when the groups do not fit whole:
        groups in order of length take ``min(length, fair share)``."""
        sizes = [0] * N_GROUPS
        left, groups_left = self.dim, N_GROUPS
        for g in sorted(range(N_GROUPS), key=lambda g: (self.group_lengths[g], g)):
            sizes[g] = min(self.group_lengths[g], left // groups_left)
            left -= sizes[g]
            groups_left -= 1
        sizes[max(range(N_GROUPS), key=lambda g: self.group_lengths[g])] += left
        return sizes

    def _make_projection(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        F, D = self.n_features, self.dim
        if F <= D or D < N_GROUPS:
            # one orthonormal map: an isometry when F <= D (groups stay orthogonal)
            proj = self._orthonormal(rng, F, D)
            return np.ascontiguousarray(proj, dtype=np.float64)
        proj = np.zeros((F, D))
        row = col = 0
        for length, width in zip(self.group_lengths, self._block_sizes()):
            if width > 0:
                proj[row : row + length, col : col + width] = self._orthonormal(rng, length, width)
            row += length
            col += width
        return np.ascontiguousarray(proj)

    def embed(self, chroma, spectral, labels=None, utility=None, present=None, spatial=None):
        """Embeddings of already-validated feature arrays.

        Parameters
        ----------
        chroma : numpy.ndarray
            ``(n, C)`` chroma signatures.
        spectral : numpy.ndarray
            ``(n, 6)`` spectral features.
        labels : numpy.ndarray, optional
            ``(n,)`` int32, -1 for none (default: none).
        utility : numpy.ndarray, optional
            ``(n,)`` float64, NaN for none (default: none).
        present : sequence of 5 bool, optional
            Switches feature groups off (for queries); by default every group
            given is on.
        spatial : numpy.ndarray, optional
            ``(n, grid*grid*C)`` thumbnails; None turns the spatial group off.

        Returns
        -------
        numpy.ndarray
            float32 ``(n, dim)``, unit rows.
        """
        n = chroma.shape[0]
        labels = (
            np.full(n, -1, np.int32) if labels is None else np.ascontiguousarray(labels, np.int32)
        )
        utility = (
            np.full(n, np.nan) if utility is None else np.ascontiguousarray(utility, np.float64)
        )
        if present is None:
            present = (True, True, spatial is not None, True, True)
        if spatial is None:
            spatial = np.zeros((n, self.spatial_len), np.float32)
            present = tuple(present[:2]) + (False,) + tuple(present[3:])
        return embed_batch(
            np.ascontiguousarray(chroma, np.float32),
            np.ascontiguousarray(spectral, np.float32),
            np.ascontiguousarray(spatial, np.float32),
            labels,
            utility,
            np.asarray(present, dtype=np.bool_),
            self.weights,
            self.buckets,
            self.projection,
            self.bounds,
        )

    def __repr__(self):
        return (
            f"EmbeddingMapper(dim={self.dim}, seed={self.seed}, channels={self.channels}, "
            f"weights={tuple(self.weights.tolist())}, buckets={self.buckets}, grid={self.grid})"
        )
