"""Which axial slices a page shows: those holding the lesion, else slices spread over the brain."""

from __future__ import annotations

import numpy as np


def brain_slices(brain: np.ndarray) -> list[int]:
    """Every axial slice (index along axis 2) that holds brain, inferior to superior."""
    zs = np.nonzero(np.asarray(brain).any(axis=(0, 1)))[0]
    return [int(z) for z in zs] if zs.size else [brain.shape[2] // 2]


def spread_slices(brain: np.ndarray, n: int) -> list[int]:
    """``n`` slices evenly spread over the brain's axial extent (fewer when it has fewer)."""
    zs = brain_slices(brain)
    if len(zs) <= n:
        return zs
    picks = np.linspace(0, len(zs) - 1, n + 2)[1:-1]  # not the brain's first and last slice
    return sorted({zs[int(round(p))] for p in picks})


def lesion_slices(brain: np.ndarray, core: np.ndarray, hypo: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` slices, sorted: the one with the most core, then the most core + Tmax > 6 s.

    The slice with the largest core area always comes first; the rest are ranked by core plus
    Tmax > 6 s voxels. Slices without lesion fill the remaining places, spread over the brain
    (all of them when there is no lesion at all).

    Args:
        brain: bool (X, Y, Z).
        core, hypo: bool (X, Y, Z) predicted core and Tmax > 6 s regions.
        n: number of slices wanted.
    """
    core_area = np.asarray(core).sum(axis=(0, 1))
    score = core_area + np.asarray(hypo).sum(axis=(0, 1))
    chosen: list[int] = []
    if core_area.max() > 0:
        chosen.append(int(np.argmax(core_area)))
    for z in np.argsort(-score, kind="stable"):
        if len(chosen) >= n or score[z] == 0:
            break
        if int(z) not in chosen:
            chosen.append(int(z))
    for z in spread_slices(brain, n) + brain_slices(brain):
        if len(chosen) >= n:
            break
        if z not in chosen:
            chosen.append(z)
    return sorted(chosen)
