"""Tissue masks of a CTP scan: brain (when none is given), CSF/ventricles and large vessels.

CSF and large vessels are excluded from every volume and threshold (PreparedCase.tissue). All
functions take plain arrays and values (thresholds from :class:`perfusion.preprocess.
PreprocessConfig`) and return bool (X, Y, Z) masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from perfusion.errors import PerfusionError

MIN_BRAIN_ML = 1.0
"""A computed brain mask below this volume means there is no head in the field of view."""


def _in_plane_structure() -> np.ndarray:
    structure = ndimage.generate_binary_structure(3, 1)
    structure[:, :, [0, 2]] = False
    return structure


def _smooth_within(image: np.ndarray, mask: np.ndarray, sigma_vox: float) -> np.ndarray:
    """In-plane Gaussian of ``image`` (X, Y, Z) using only ``mask`` voxels (normalised)."""
    sigma = (sigma_vox, sigma_vox, 0.0)
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    total = ndimage.gaussian_filter(np.where(mask, image, 0.0).astype(np.float32), sigma)
    return total / np.maximum(weight, 1e-6)


def brain_mask(
    pre_hu: np.ndarray,
    spacing_mm: np.ndarray,
    brain_hu: tuple[float, float] = (-15.0, 100.0),
    bone_min_hu: float = 150.0,
    where: str | Path | None = None,
) -> np.ndarray:
    """Intracranial soft tissue of a pre-contrast image (X, Y, Z) in HU.

    Soft tissue in ``brain_hu``, cut away from bone widened by one in-plane voxel (so the
    scalp cannot connect through partial-volume bridges); its largest 3-D component, grown back
    by that voxel within soft tissue, holes filled per slice and in 3-D (ventricles, vessels),
    bone removed again.

    Raises:
        PerfusionError: naming ``where`` when the mask is empty (under 1 ml).
    """
    low, high = brain_hu
    bone = pre_hu >= bone_min_hu
    in_plane = _in_plane_structure()
    soft = (pre_hu > low) & (pre_hu < high)
    labels, n = ndimage.label(soft & ~ndimage.binary_dilation(bone, in_plane))
    mask = np.zeros(pre_hu.shape, dtype=bool)
    if n > 0:
        mask = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        mask = ndimage.binary_dilation(mask, in_plane, mask=soft)  # the rim next to bone
        for k in range(mask.shape[2]):
            mask[..., k] = ndimage.binary_fill_holes(mask[..., k])
        mask = ndimage.binary_fill_holes(mask) & ~bone
    if mask.sum() * np.prod(spacing_mm) / 1000.0 < MIN_BRAIN_ML:
        raise PerfusionError(
            f"empty brain mask: {int(mask.sum())} voxels of soft tissue ({low:g} to {high:g} HU)"
            " inside the skull",
            where,
        )
    return mask


def venous_search_region(
    brain: np.ndarray,
    baseline_hu: np.ndarray,
    spacing_mm: np.ndarray,
    reach_mm: float,
    soft_hu: tuple[float, float] = (-15.0, 100.0),
) -> np.ndarray:
    """Where the venous output function is searched: ``brain`` and the voxels within
    ``reach_mm`` of it whose pre-contrast HU is soft tissue or blood (in ``soft_hu``).

    The dural sinuses lie outside the brain, along the inner table of the skull, so a brain
    mask (given, or computed and cut back from bone) holds few voxels wholly inside one. Bone
    and air are left out by their HU; the distance is measured in mm on the voxel grid.
    """
    if reach_mm <= 0 or not brain.any():
        return brain
    near = ndimage.distance_transform_edt(~brain, sampling=spacing_mm) <= reach_mm
    low, high = soft_hu
    return brain | (near & (baseline_hu > low) & (baseline_hu < high))


def csf_mask(
    baseline_hu: np.ndarray,
    mean_enhancement_hu: np.ndarray,
    brain: np.ndarray,
    max_hu: float = 15.0,
    enhancement_fraction: float = 0.35,
) -> np.ndarray:
    """CSF/ventricles: low pre-contrast HU and no enhancement, inside ``brain``.

    Args:
        baseline_hu: (X, Y, Z) pre-contrast image (HU).
        mean_enhancement_hu: (X, Y, Z) mean ΔHU after bolus arrival.
        brain: bool (X, Y, Z).
        max_hu: CSF is below this baseline (water 0, CSF ~5, white matter ~30 HU).
        enhancement_fraction: and enhances less than this fraction of the brain's median.

    Both inputs are lightly in-plane smoothed within the brain (sigma 0.7 voxel, normalised so
    that skull and air do not leak in: noise down ~2.5x while a voxel at a straight CSF edge
    keeps ~70 % of its own value), because single-voxel CTP noise (~10-20 HU) is as large as
    the grey/white/CSF contrast.
    """
    low_hu = _smooth_within(baseline_hu, brain, 0.7) < max_hu
    enhancement = _smooth_within(mean_enhancement_hu, brain, 0.7)
    reference = max(float(np.median(enhancement[brain])), 1e-6)
    return brain & low_hu & (enhancement < enhancement_fraction * reference)


def vessel_mask(
    peak_hu: np.ndarray,
    brain: np.ndarray,
    aif_peak_hu: float,
    min_hu: float = 60.0,
    aif_fraction: float = 0.2,
) -> np.ndarray:
    """Large vessels: peak enhancement far above tissue's, inside ``brain``.

    Args:
        peak_hu: (X, Y, Z) peak ΔHU of lightly time-smoothed curves (a 15 HU noise SD alone
            peaks near 35 HU over 40 raw frames; tissue peaks at 10-20 HU).
        aif_peak_hu: peak of the (partial-volume corrected) AIF.
        min_hu, aif_fraction: the threshold is max(min_hu, aif_fraction * aif_peak_hu).
    """
    return brain & (peak_hu >= max(min_hu, aif_fraction * aif_peak_hu))
