"""Hyperband early termination with W&B's rule (Li et al. 2018, arXiv 1603.06560).

W&B counts iterations as *reports*: a trial's n-th logged value of the sweep metric is its
iteration n, whatever step it was logged at. Bands are the iteration counts where trials are
compared:

- ``max_iter`` and ``s``: max_iter/eta, max_iter/eta², ... (s of them, integer part, >= 1);
- ``min_iter``: min_iter, min_iter·eta, min_iter·eta², ...

At band b the threshold is the value ranked ``int(n/eta)`` (0-based, best first) among the n
trials that reached b, so about the best 1/eta pass. A running trial that has reached band b
stops when its value at b (``strict``, W&B's default) or its best value so far (not strict) is
worse than that threshold. Same semantics as ``sweeps/hyperband_stopping.py``; a test compares
the two when ``sweeps`` is installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MAX_BANDS = 64  # min_iter·eta^k beyond this many bands exceeds any run length we meet


def bands(early_terminate: dict[str, Any]) -> list[int]:
    """Iteration counts (1-based, ascending) at which trials are compared."""
    eta = float(early_terminate.get("eta", 3))
    if "max_iter" in early_terminate:
        out, band = [], float(early_terminate["max_iter"])
        for _ in range(int(early_terminate["s"])):
            band /= eta
            if band < 1:
                break
            out.append(int(band))
        return sorted(out)
    band = float(early_terminate["min_iter"])
    out = []
    for _ in range(MAX_BANDS):
        out.append(int(band))
        band *= eta
    return out


def thresholds(
    histories: Sequence[Sequence[float]], band_list: Sequence[int], eta: float
) -> list[float]:
    """Per band, the value a trial must not exceed (histories already sign-flipped to minimise)."""
    out = []
    for band in band_list:
        values = sorted(h[band - 1] for h in histories if len(h) >= band)
        out.append(values[int(len(values) / eta)] if values else math.inf)
    return out


def should_stop(
    history: Sequence[float],
    all_histories: Sequence[Sequence[float]],
    early_terminate: dict[str, Any],
    goal: str = "minimize",
) -> bool:
    """Whether a running trial with metric ``history`` should be stopped now.

    Args:
        history: this trial's reported metric values, in order (NaN/inf already dropped).
        all_histories: every trial's history in the sweep, this one included.
        early_terminate: the YAML's hyperband block.
        goal: the sweep metric's goal.
    """
    sign = -1.0 if goal == "maximize" else 1.0
    mine = [sign * v for v in history]
    others = [[sign * v for v in h] for h in all_histories if h]
    band_list = bands(early_terminate)
    limits = thresholds(others, band_list, float(early_terminate.get("eta", 3)))
    reached = [(b, t) for b, t in zip(band_list, limits, strict=True) if b <= len(mine)]
    if not reached:
        return False
    band, limit = reached[-1]
    value = mine[band - 1] if early_terminate.get("strict", True) else min(mine)
    return value > limit
