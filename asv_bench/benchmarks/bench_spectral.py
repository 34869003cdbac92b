"""Spectral features of 32x32x4x3 tensors: one tensor and a batch of 1000, vs numpy/scipy.

The peer is ``common.spectral_batch_numpy``: vectorised numpy with one
``scipy.fft.fft2`` over the whole batch (``scipy.fft`` runs one worker by
default; ``time_numpy_all_workers`` gives it every core, as
``spectral_features_batch`` uses every core).

Target (issue 4): ``SpectralBatch.time_dreamjit`` <= ``SpectralBatch.time_numpy`` / 8.
"""
from __future__ import annotations

import os

import numpy as np

from .common import SPECTRAL_BATCH, TENSOR_SHAPE, smooth_tensors, spectral_batch_numpy


class SpectralSingle:
    """One tensor: the public function, the raw kernel, and the numpy/scipy peer."""

    def setup(self):
        import dreamjit as dj
        from dreamjit.kernels.spectral import spectral_one

        self.dj, self.kernel = dj, spectral_one
        self.t = smooth_tensors(1)[0]
        self.batch1 = self.t[None]
        ours = dj.spectral_features(self.t).as_array()
        theirs = spectral_batch_numpy(self.batch1)[0]
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
        self.kernel(self.t)

    def time_dreamjit(self):
        self.dj.spectral_features(self.t)

    def time_kernel(self):
        self.kernel(self.t)

    def time_numpy(self):
        spectral_batch_numpy(self.batch1)


class SpectralBatch:
    """A batch of 1000 tensors (``spectral_features_batch`` is a parallel kernel)."""

    timeout = 300

    def setup(self):
        import dreamjit as dj

        self.dj = dj
        self.T = smooth_tensors(SPECTRAL_BATCH)
        ours = dj.spectral_features_batch(self.T)
        theirs = spectral_batch_numpy(self.T)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)

    def time_dreamjit(self):
        self.dj.spectral_features_batch(self.T)

    def time_numpy(self):
        spectral_batch_numpy(self.T)

    def time_numpy_all_workers(self):
        import scipy.fft

        with scipy.fft.set_workers(os.cpu_count() or 1):
            spectral_batch_numpy(self.T)
