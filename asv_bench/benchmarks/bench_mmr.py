"""Greedy MMR: standard vs fast kernels at k = 10, 20, 50 of 1000 candidates, vs LangChain.

Candidates are 1000 unit rows (64-d mixture), lambda = 0.5. ``mmr_fast`` runs
with the pool's defaults (``min_similarity=0.0``, ``sample_size=8``).

Target (issue 4): ``MMR.time_public`` at k=50 <= ``MMRLangChain.time_langchain`` / 200,
with identical picks (checked in ``MMRLangChain.setup``: a mismatch fails the benchmark).
"""

from __future__ import annotations

import numpy as np

from .common import MMR_CANDIDATES, MMR_KS, MMR_LAMBDA, memo, require, unit_mixture, unit_queries

FAST_MIN_SIMILARITY = 0.0  # the pool's retrieve_diverse(fast=True) defaults
FAST_SAMPLE_SIZE = 8


def _data():
    return unit_queries(1)[0], unit_mixture(MMR_CANDIDATES)


class MMR:
    """dreamjit's MMR: the raw kernels and the public ``dj.maximal_marginal_relevance``."""

    params = [MMR_KS]
    param_names = ["k"]

    def setup(self, k):
        import dreamjit as dj
        from dreamjit.kernels.mmr import mmr_fast, mmr_standard

        self.dj, self.standard, self.fast = dj, mmr_standard, mmr_fast
        self.q, self.C = _data()
        for _ in range(2):
            self.time_standard(k)
            self.time_fast(k)
            self.time_public(k)

    def time_standard(self, k):
        self.standard(self.q, self.C, k, MMR_LAMBDA)

    def time_fast(self, k):
        self.fast(self.q, self.C, k, MMR_LAMBDA, FAST_MIN_SIMILARITY, FAST_SAMPLE_SIZE)

    def time_public(self, k):
        """Validation + the standard kernel (what a user calls)."""
        self.dj.maximal_marginal_relevance(self.q, self.C, k=k, lambda_=MMR_LAMBDA)

    def track_fast_overlap(self, k):
        """Share of the standard picks that the fast kernel also picks."""
        std = set(self.standard(self.q, self.C, k, MMR_LAMBDA)[0].tolist())
        fast = self.fast(self.q, self.C, k, MMR_LAMBDA, FAST_MIN_SIMILARITY, FAST_SAMPLE_SIZE)[0]
        return len(std & set(fast.tolist())) / max(len(std), 1)

    track_fast_overlap.unit = "fraction"

    def track_fast_picks(self, k):
        """Picks the fast kernel returns (fewer than k when it terminates early)."""
        return int(
            self.fast(self.q, self.C, k, MMR_LAMBDA, FAST_MIN_SIMILARITY, FAST_SAMPLE_SIZE)[
                0
            ].shape[0]
        )

    track_fast_picks.unit = "picks"


class MMRLangChain:
    """LangChain's ``maximal_marginal_relevance`` on the same data (float64 copies).

    ``setup`` checks that its picks equal dreamjit's (same order); a mismatch
    raises, so the benchmark fails.
    """

    params = [MMR_KS]
    param_names = ["k"]
    timeout = 300

    def setup(self, k):
        import dreamjit as dj

        utils = require("langchain_core.vectorstores.utils")
        self.mmr = utils.maximal_marginal_relevance
        self.q, self.C = memo(("MMRLangChain", k), lambda: self._checked(dj, k))

    def _checked(self, dj, k):
        q, C = _data()
        q64, C64 = q.astype(np.float64), C.astype(np.float64)  # same values, float64 math
        theirs = list(self.mmr(q64, C64, lambda_mult=MMR_LAMBDA, k=k))
        ours = dj.maximal_marginal_relevance(q, C, k=k, lambda_=MMR_LAMBDA)[0].tolist()
        if theirs != ours:
            raise AssertionError(
                f"MMR picks differ at k={k}: dreamjit {ours} vs LangChain {theirs}"
            )
        return q64, C64

    def time_langchain(self, k):
        self.mmr(self.q, self.C, lambda_mult=MMR_LAMBDA, k=k)

    def track_identical_picks(self, k):
        """1.0: the picks matched in setup (setup raises otherwise)."""
        return 1.0

    track_identical_picks.unit = "bool"
