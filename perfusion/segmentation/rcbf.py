"""Relative CBF: midline, affected hemisphere from CBF asymmetry, healthy-side normalisation.

rCBF = CBF / median CBF of the healthy hemisphere's tissue (paper Section 2.4; RAPID's rCBF,
Straka 2010). The midline is the standard frame's mid-sagittal plane x = 0 (``scan_to_standard``
from preprocessing); without it, the world x of the image centre. The affected side comes from
the maps alone (or a user flag), never from a reference core, which is unknown at inference.
"""

from __future__ import annotations

import numpy as np

from perfusion.errors import PerfusionError

SIDES = ("left", "right")
TMAX_HYPO_S = 6.0  # hypoperfusion: Tmax > 6 s (Olivot, Stroke 2014)


def voxel_to_standard(
    shape: tuple[int, int, int], affine: np.ndarray, scan_to_standard: np.ndarray | None
) -> np.ndarray:
    """(4, 4) map from voxel indices to standard-frame mm.

    World coordinates are RAS+ (+x towards the patient's right). Without ``scan_to_standard``
    the midline falls back to the world x of the image centre, which is right only for a
    centred, unrotated head.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if scan_to_standard is None:
        scan_to_standard = np.eye(4)
        scan_to_standard[:3, 3] = -(affine @ np.r_[(np.array(shape) - 1) / 2.0, 1.0])[:3]
    return np.asarray(scan_to_standard, dtype=np.float64) @ affine


def standard_x_mm(
    shape: tuple[int, int, int], affine: np.ndarray, scan_to_standard: np.ndarray | None
) -> np.ndarray:
    """Standard-frame x (mm, float32 (X, Y, Z)) of every voxel centre; x > 0 is the right side."""
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    row = voxel_to_standard(shape, affine, scan_to_standard)[0]
    return (row[:3] @ ijk + row[3]).reshape(shape).astype(np.float32)


def hemisphere(x_mm: np.ndarray, side: str) -> np.ndarray:
    """Bool mask of one hemisphere: ``right`` is x > 0, ``left`` x < 0 (the plane x = 0 in neither)."""
    if side not in SIDES:
        raise PerfusionError(f"side must be one of {SIDES}, got {side!r}")
    return x_mm > 0 if side == "right" else x_mm < 0


def other_side(side: str) -> str:
    return "left" if side == "right" else "right"


def detect_affected_side(
    cbf: np.ndarray,
    tissue: np.ndarray,
    x_mm: np.ndarray,
    tmax: np.ndarray | None = None,
    threshold: float = 0.3,
) -> str:
    """The affected hemisphere from the maps' asymmetry alone (never from a reference core).

    1. With a Tmax map: the side with the larger Tmax > 6 s tissue volume (the hypoperfused
       region is much larger than the core, so this holds for small cores and noisy CBF).
    2. Else (or on a tie): the side with more tissue whose CBF is below ``threshold`` x the
       median tissue CBF of the other side, i.e. the rCBF rule's core if that side were
       affected. Healthy white matter stays near 60 % of the contralateral median, so the
       count is near zero on the healthy side; hemisphere medians or a global threshold were
       fooled by grey/white asymmetry on the phantom cohort.
    3. Else: the side with the lower median CBF.

    Args:
        cbf: float (X, Y, Z) CBF in ml/100g/min (any positive scale works).
        tissue: bool (X, Y, Z) brain without CSF and vessels.
        x_mm: float (X, Y, Z) standard-frame x from :func:`standard_x_mm`.
        tmax: float (X, Y, Z) Tmax in s, or None.
        threshold: the rCBF core threshold.
    """
    tissue = tissue.astype(bool) & np.isfinite(cbf)
    sides = {s: tissue & hemisphere(x_mm, s) for s in SIDES}
    if not all(mask.any() for mask in sides.values()):
        raise PerfusionError("tissue in only one hemisphere: cannot find the affected side")
    medians = {s: float(np.median(cbf[mask])) for s, mask in sides.items()}
    scores = []
    if tmax is not None:
        scores.append({s: int((tmax[mask] > TMAX_HYPO_S).sum()) for s, mask in sides.items()})
    scores.append(
        {s: int((cbf[sides[s]] < threshold * medians[other_side(s)]).sum()) for s in SIDES}
    )
    for score in scores:
        if score["left"] != score["right"]:
            return max(score, key=score.get)  # type: ignore[arg-type]
    return min(medians, key=medians.get)  # type: ignore[arg-type]


def relative_cbf(
    cbf: np.ndarray, tissue: np.ndarray, x_mm: np.ndarray, affected: str
) -> np.ndarray:
    """rCBF (float32, dimensionless): CBF / median tissue CBF of the healthy hemisphere; 0 outside tissue.

    The ratio makes the input independent of the scanner's and method's CBF scale.
    """
    tissue = tissue.astype(bool) & np.isfinite(cbf)
    healthy = tissue & hemisphere(x_mm, other_side(affected))
    if not healthy.any():
        raise PerfusionError("no tissue in the healthy hemisphere: cannot normalise CBF")
    reference = float(np.median(cbf[healthy]))
    if reference <= 0:
        raise PerfusionError(f"healthy-hemisphere median CBF is {reference:g}: cannot normalise")
    return np.where(tissue, cbf / reference, 0.0).astype(np.float32)


def restrict_to_hemisphere(mask: np.ndarray, x_mm: np.ndarray, side: str) -> np.ndarray:
    """``mask`` with everything outside the ``side`` hemisphere removed (bool)."""
    return mask.astype(bool) & hemisphere(x_mm, side)


def threshold_core(
    rcbf: np.ndarray, tissue: np.ndarray, x_mm: np.ndarray, affected: str, threshold: float = 0.3
) -> np.ndarray:
    """The commercial core rule: tissue with rCBF < ``threshold`` in the affected hemisphere (bool)."""
    core = tissue.astype(bool) & (rcbf < threshold)
    return restrict_to_hemisphere(core, x_mm, affected)
