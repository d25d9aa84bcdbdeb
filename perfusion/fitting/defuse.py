"""DEFUSE-3 style summary of a set of maps: core, hypoperfusion, mismatch, affected side.

Rules: core = rCBF < 30 % (Straka 2010; CBF relative to the healthy hemisphere's median) without
connected parts under 0.5 ml, hypoperfusion = Tmax > 6 s (Olivot 2014), DEFUSE-3 target = core <
70 ml, mismatch ratio >= 1.8 and mismatch volume >= 15 ml (Albers 2018); hypoperfusion intensity
ratio HIR = volume Tmax > 10 s / volume Tmax > 6 s. An acute core lies inside the hypoperfused
tissue: a core of 1 ml or more larger than the Tmax > 6 s region (``core_exceeds_tmax_gt_6s``),
or lying mostly outside it (``core_mostly_outside_tmax_gt_6s``), means the mismatch is not to be
read as it stands (noise blobs of low CBF, Tmax underestimated, or low flow without delay, such
as an old infarct, counted as core); the report says so. CSF and large
vessels are excluded (``tissue`` mask). Thresholds, hemispheres and the affected side are
:mod:`perfusion.clinical`'s (the same rule as ``perfusion segment``); the core is measured in
that hemisphere, which is reported as the affected side only when a lesion was found (core
>= 1 ml or Tmax > 6 s >= 5 ml): below both, the maps name no side.
"""

from __future__ import annotations

import numpy as np

from perfusion.clinical import (
    CORE_MIN_COMPONENT_ML,
    RCBF_CORE,
    TMAX_PENUMBRA_S,
    TMAX_SEVERE_S,
    affected_side,
    below_threshold,
    healthy_median,
    threshold_core,
    without_small_components,
)

DEFUSE3_MAX_CORE_ML = 70.0
DEFUSE3_MIN_RATIO = 1.8
DEFUSE3_MIN_MISMATCH_ML = 15.0
OTHER_SIDE_MAX_HYPO_FRACTION = 0.25
"""Above this fraction of the other hemisphere's tissue with Tmax > 6 s, the hypoperfusion is
flagged as on both sides (``tmax_gt_6s_both_sides``): noise, or an AIF whose timing is wrong,
rather than one territory; a unilateral stroke leaves the other side near 0."""
CORE_OUTSIDE_MAX_FRACTION = 0.75
"""Above this fraction of the core outside Tmax > 6 s, the core is flagged as mostly outside
the hypoperfused tissue (``core_mostly_outside_tmax_gt_6s``): noise blobs of low CBF in tissue
without delay, or an old infarct, rather than an acute core. A fit that underestimates the
core's Tmax puts part of a true core outside; bench/results/core-outside has the fraction over
the cached benchmark fits."""
LESION_MIN_CORE_ML = 1.0
LESION_MIN_TMAX_ML = 5.0
"""Below both volumes no perfusion lesion is reported (and no side is named): a few voxels of
noise cross the thresholds in every healthy brain."""


def lesion_found(core_ml: float, hypo_ml: float) -> bool:
    """Whether the volumes make a perfusion lesion: core >= 1 ml or Tmax > 6 s >= 5 ml."""
    return core_ml >= LESION_MIN_CORE_ML or hypo_ml >= LESION_MIN_TMAX_ML


def defuse3_masks(
    maps: dict, usable: np.ndarray, standard_x_mm: np.ndarray, voxel_volume_ml: float
) -> dict:
    """The regions behind the summary, as bool volumes (the report draws these).

    Args:
        maps: ``cbf`` and ``tmax`` volumes (ml/100g/min, s).
        usable: bool volume, tissue voxels (no CSF or vessels) whose maps are physical.
        standard_x_mm: the standard-frame x (mm) of every voxel, same shape.
        voxel_volume_ml: volume of one voxel (ml), for the core's minimum component.

    Returns:
        ``core`` (rCBF < 30 % on the measured side, parts under
        :data:`~perfusion.clinical.CORE_MIN_COMPONENT_ML` left out), ``core_both_sides``,
        ``hypo`` (Tmax > 6 s), ``severe`` (Tmax > 10 s), ``healthy`` (tissue of the other
        hemisphere), bool volumes;
        ``side`` (the hemisphere the core is measured in) and ``healthy_median_cbf`` (the rCBF
        reference, ml/100g/min).
    """
    cbf, tmax = maps["cbf"], maps["tmax"]
    side = affected_side(cbf, usable, standard_x_mm, tmax)
    healthy, reference = healthy_median(cbf, usable, standard_x_mm, side)
    # no healthy reference: no rCBF, so no core (zeros would call all tissue core)
    rcbf = cbf / reference if reference > 0 else np.full(cbf.shape, np.nan)
    return {
        "core": threshold_core(rcbf, usable, standard_x_mm, side, voxel_volume_ml),
        "core_both_sides": without_small_components(below_threshold(rcbf, usable), voxel_volume_ml),
        "hypo": usable & (tmax > TMAX_PENUMBRA_S),
        "severe": usable & (tmax > TMAX_SEVERE_S),
        "healthy": healthy,
        "side": side,
        "healthy_median_cbf": reference,
    }


def defuse3_summary(
    maps: dict, usable: np.ndarray, standard_x_mm: np.ndarray, voxel_volume_ml: float
) -> dict:
    """The summary dict for ``summary.json`` (arguments as :func:`defuse3_masks`): the numbers
    of :func:`mask_summary` on :func:`defuse3_masks`' regions."""
    return mask_summary(
        defuse3_masks(maps, usable, standard_x_mm, voxel_volume_ml), voxel_volume_ml
    )


def mask_summary(masks: dict, voxel_volume_ml: float) -> dict:
    """The DEFUSE-3 numbers of the regions of :func:`defuse3_masks` (volumes in ml).

    ``affected_side`` is ``left``/``right`` when a lesion was found (:func:`lesion_found`), else
    None; ``measured_side`` always names the hemisphere the core was measured in.
    """

    def volume_ml(mask: np.ndarray) -> float:
        return float(mask.sum()) * voxel_volume_ml

    core, hypo, severe = (volume_ml(masks[k]) for k in ("core", "hypo", "severe"))
    outside = volume_ml(masks["core"] & ~masks["hypo"])
    healthy = masks["healthy"]
    other_side = float((masks["hypo"] & healthy).sum() / healthy.sum()) if healthy.any() else 0.0
    ratio = hypo / core if core > 0 else None
    mismatch = hypo - core
    eligible = core < DEFUSE3_MAX_CORE_ML and mismatch >= DEFUSE3_MIN_MISMATCH_ML
    eligible = bool(eligible and (ratio is None or ratio >= DEFUSE3_MIN_RATIO))
    found = lesion_found(core, hypo)
    return {
        "lesion_found": found,
        "affected_side": masks["side"] if found else None,
        "measured_side": masks["side"],
        "healthy_median_cbf": masks["healthy_median_cbf"],
        "core_rule": (
            f"rCBF < {RCBF_CORE:.0%} of the healthy hemisphere's median, affected side, "
            f"connected parts >= {CORE_MIN_COMPONENT_ML:g} ml"
        ),
        "core_volume_ml": core,
        "core_volume_both_sides_ml": volume_ml(masks["core_both_sides"]),
        "tmax_gt_6s_volume_ml": hypo,
        "tmax_gt_10s_volume_ml": severe,
        "hypoperfusion_intensity_ratio": severe / hypo if hypo > 0 else None,
        "mismatch_volume_ml": mismatch,
        "mismatch_ratio": ratio,
        "core_outside_tmax_gt_6s_ml": outside,
        "core_exceeds_tmax_gt_6s": bool(core >= LESION_MIN_CORE_ML and core > hypo),
        "core_mostly_outside_tmax_gt_6s": bool(
            core >= LESION_MIN_CORE_ML and outside > CORE_OUTSIDE_MAX_FRACTION * core
        ),
        "tmax_gt_6s_other_side_fraction": other_side,
        "tmax_gt_6s_both_sides": bool(other_side > OTHER_SIDE_MAX_HYPO_FRACTION),
        "defuse3_target_mismatch": eligible,
        "excluded": "CSF, large vessels and voxels with unphysical values",
    }
