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

from .common import SPECTRAL_BATCH, BusyNeighbour, memo, smooth_tensors, spectral_batch_numpy


class SpectralSingle:
    """One tensor: the public function, the raw kernel, and the numpy/scipy peer."""

    def setup(self):
        import dreamjit as dj
        from dreamjit.kernels.spectral import spectral_one

        self.dj, self.kernel = dj, spectral_one
        self.t = memo(("SpectralSingle",), self._checked)
        self.batch1 = self.t[None]
        self.kernel(self.t)

    @staticmethod
    def _checked():
        import dreamjit as dj

        t = smooth_tensors(1)[0]
        ours = dj.spectral_features(t).as_array()
        np.testing.assert_allclose(ours, spectral_batch_numpy(t[None])[0], rtol=1e-4, atol=1e-5)
        return t

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
        self.T = memo(("SpectralBatch",), self._checked)

    @staticmethod
    def _checked():
        import dreamjit as dj

        T = smooth_tensors(SPECTRAL_BATCH)
        ours = dj.spectral_features_batch(T)
        np.testing.assert_allclose(ours, spectral_batch_numpy(T), rtol=1e-4, atol=1e-5)
        return T

    def time_dreamjit(self):
        self.dj.spectral_features_batch(self.T)

    def time_numpy(self):
        spectral_batch_numpy(self.T)

    def time_numpy_all_workers(self):
        import scipy.fft

        with scipy.fft.set_workers(os.cpu_count() or 1):
            spectral_batch_numpy(self.T)


class SpectralBatchBusyNeighbour(SpectralBatch):
    """:class:`SpectralBatch` while another process keeps one core busy (issue 12, item 6).

    Target: ``time_dreamjit`` <= ``time_numpy`` / 8 here too. ``python
    scripts/measure_busy_neighbour.py`` runs both classes' measurements interleaved.
    """

    def setup(self):
        super().setup()
        self.neighbour = BusyNeighbour().start()

    def teardown(self):
        self.neighbour.stop()
