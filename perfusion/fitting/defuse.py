"""DEFUSE-3 style summary of a set of maps: core, hypoperfusion, mismatch, affected side.

Rules (field.md section 3): core = rCBF < 30 % (Straka 2010; CBF relative to the healthy
hemisphere's median), hypoperfusion = Tmax > 6 s (Olivot 2014), DEFUSE-3 target = core < 70 ml,
mismatch ratio >= 1.8 and mismatch volume >= 15 ml (Albers 2018). CSF and large vessels are
excluded (``tissue`` mask). Hemispheres are split at the standard frame's mid-sagittal plane
(x = 0 mm); the affected side is the one with the larger Tmax > 6 s volume, or, when neither has
any, the one with the lower median CBF.
"""

from __future__ import annotations

import numpy as np

CORE_RCBF = 0.30
HYPO_TMAX_S = 6.0
SEVERE_TMAX_S = 10.0
DEFUSE3_MAX_CORE_ML = 70.0
DEFUSE3_MIN_RATIO = 1.8
DEFUSE3_MIN_MISMATCH_ML = 15.0


def hemispheres(standard_x_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Left (x < 0) and right (x > 0) masks from each voxel's standard-frame x (RAS mm)."""
    return {"left": standard_x_mm < 0.0, "right": standard_x_mm > 0.0}


def affected_side(cbf: np.ndarray, tmax: np.ndarray, usable: np.ndarray, sides: dict) -> str:
    """``left`` or ``right``: larger Tmax > 6 s volume, else lower median CBF (see module doc)."""
    hypo = {s: int((usable & m & (tmax > HYPO_TMAX_S)).sum()) for s, m in sides.items()}
    if hypo["left"] != hypo["right"]:
        return max(hypo, key=hypo.get)
    medians = {s: _median(cbf[usable & m]) for s, m in sides.items()}
    return "left" if medians["left"] <= medians["right"] else "right"


def defuse3_summary(
    maps: dict, usable: np.ndarray, standard_x_mm: np.ndarray, voxel_volume_ml: float
) -> dict:
    """The summary dict for ``summary.json``.

    Args:
        maps: ``cbf`` and ``tmax`` volumes (ml/100g/min, s).
        usable: bool volume, tissue voxels (no CSF or vessels) whose maps are physical.
        standard_x_mm: the standard-frame x (mm) of every voxel, same shape.
        voxel_volume_ml: volume of one voxel (ml).
    """
    cbf, tmax = maps["cbf"], maps["tmax"]
    sides = hemispheres(standard_x_mm)
    side = affected_side(cbf, tmax, usable, sides)
    healthy = "right" if side == "left" else "left"
    reference = _median(cbf[usable & sides[healthy]])
    rcbf = cbf / reference if reference > 0 else np.zeros_like(cbf)
    core_mask = usable & sides[side] & (rcbf < CORE_RCBF)
    hypo_mask = usable & (tmax > HYPO_TMAX_S)
    core = float(core_mask.sum()) * voxel_volume_ml
    hypo = float(hypo_mask.sum()) * voxel_volume_ml
    severe = float((usable & (tmax > SEVERE_TMAX_S)).sum()) * voxel_volume_ml
    ratio = hypo / core if core > 0 else None
    mismatch = hypo - core
    eligible = core < DEFUSE3_MAX_CORE_ML and mismatch >= DEFUSE3_MIN_MISMATCH_ML
    eligible = bool(eligible and (ratio is None or ratio >= DEFUSE3_MIN_RATIO))
    return {
        "affected_side": side,
        "healthy_median_cbf": reference,
        "core_rule": f"rCBF < {CORE_RCBF:.0%} of the healthy hemisphere's median, affected side",
        "core_volume_ml": core,
        "core_volume_both_sides_ml": float((usable & (rcbf < CORE_RCBF)).sum()) * voxel_volume_ml,
        "tmax_gt_6s_volume_ml": hypo,
        "tmax_gt_10s_volume_ml": severe,
        "hypoperfusion_intensity_ratio": severe / hypo if hypo > 0 else None,
        "mismatch_volume_ml": mismatch,
        "mismatch_ratio": ratio,
        "defuse3_target_mismatch": eligible,
        "excluded": "CSF, large vessels and voxels with unphysical values",
    }


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else float("nan")
