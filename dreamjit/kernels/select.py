"""The greedy selection step shared by MMR and the hybrid rerank.

Both pick candidates one at a time: first the best ``base`` value, then the best
``a * base[i] - b * maxsim[i]``, where ``maxsim`` is each candidate's running max
similarity to the picks so far. Ties go to the lower position.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel


@kernel
def greedy_pick(base, maxsim, chosen, first, a, b):
    """``(position, value)`` of the best unchosen candidate (-1 when none is left)."""
    best = -1
    best_v = -np.inf
    for i in range(base.shape[0]):
        if chosen[i]:
            continue
        v = base[i] if first else a * base[i] - b * maxsim[i]
        if best < 0 or v > best_v:
            best = i
            best_v = v
    return best, best_v


@kernel
def fold_max(maxsim, sims):
    """``maxsim = max(maxsim, sims)`` elementwise (a select, so it vectorises)."""
    for i in range(maxsim.shape[0]):
        v = sims[i]
        maxsim[i] = v if v > maxsim[i] else maxsim[i]
