"""Helpers of the retrieval paths, importable from here as before.

The retrieval methods are :class:`~dreamjit.DreamPool`'s; the paths behind
them live in :mod:`dreamjit._retriever` and the indexes in
:mod:`dreamjit._indexes`. This module keeps the helpers' old import path.
"""

from __future__ import annotations

from ._indexes import candidate_count, ranked_by_id
from ._retriever import RRF_K, reciprocal_rank_fusion

__all__ = ["RRF_K", "candidate_count", "ranked_by_id", "reciprocal_rank_fusion"]
