"""Perfusion maps from fitted parameters: units, masking of unphysical values, NIfTI output.

Every method (neural fields or classical baselines) ends here with per-voxel physical values,
so the output contract (cbf, cbv, mtt, tmax, delay .nii.gz: float32 on the scan grid and affine,
zero outside the brain; tissuemask.nii.gz; fitqc.nii.gz; the masks of the summary's core and
Tmax > 6 s) is written in one place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfusion.io import write_nifti_atomic
from perfusion.units import cbv_from_cbf_mtt, flow_to_cbf, tmax_box

MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "delay")
"""The five maps, in ml/100g/min, ml/100g, s, s, s."""

MASK_FILES = {"core": "core_mask.nii.gz", "hypo": "tmax_gt_6s_mask.nii.gz"}
"""uint8 0/1 files of the regions behind ``core_volume_ml`` and ``tmax_gt_6s_volume_ml``
(:func:`perfusion.fitting.defuse.defuse3_masks`); the core's name differs from a case folder's
reference ``core.nii.gz``."""

PHYSICAL_RANGE = {
    "cbf": (0.0, 300.0),
    "cbv": (0.0, 40.0),
    "mtt": (0.0, 40.0),
    "tmax": (-20.0, 60.0),
    "delay": (-20.0, 60.0),
}
"""Values outside these bounds (or non-finite) are unphysical: written as 0 and counted.

Generous bounds: the highest grey-matter CBF in adults is ~100-150; block-circulant SVD may put
Tmax and delay before the AIF (negative), so negative times are allowed down to -20 s.
"""


UNEXPLAINED_NOISE_RATIO = 2.5
"""A tissue voxel whose mean |fit - data| exceeds this many times what noise alone leaves is
unexplained (:func:`unexplained`)."""
MEAN_ABS_PER_RMS = float(np.sqrt(2.0 / np.pi))
"""Mean absolute value of zero-mean Gaussian noise per unit of its RMS."""
HU_STEP = 1.0
"""CT stores whole HU: a mean misfit is never read against less than this (noise-free
synthetic data would otherwise make every small model error unexplained)."""


def unexplained(fitqc_hu: np.ndarray, mask: np.ndarray, residual_rms_hu: float) -> np.ndarray:
    """``mask`` voxels whose curve the fitted model does not explain: a mean |fit - data|
    (``fitqc``, ΔHU) above :data:`UNEXPLAINED_NOISE_RATIO` x the mean |noise| a perfect fit
    leaves (:data:`MEAN_ABS_PER_RMS` x ``residual_rms_hu``, at least :data:`HU_STEP`).

    Such curves carry something besides perfusion and noise, above all residual motion at
    bone edges, whose steps a long delay and MTT fit best; their maps are not perfusion.
    Nothing is unexplained when the noise level is unknown (not finite).
    """
    if not np.isfinite(residual_rms_hu):
        return np.zeros(mask.shape, dtype=bool)
    expected = max(MEAN_ABS_PER_RMS * float(residual_rms_hu), HU_STEP)
    return mask & (np.asarray(fitqc_hu) > UNEXPLAINED_NOISE_RATIO * expected)


def maps_from_params(flow_per_s: np.ndarray, mtt_s: np.ndarray, delay_s: np.ndarray) -> dict:
    """Eq. (1) parameters (F [1/s], MTT [s], t_d [s]) -> the five maps (same shape)."""
    cbf = np.asarray(flow_to_cbf(np.asarray(flow_per_s, dtype=np.float64)))
    mtt = np.asarray(mtt_s, dtype=np.float64)
    delay = np.asarray(delay_s, dtype=np.float64)
    return {
        "cbf": cbf,
        "cbv": np.asarray(cbv_from_cbf_mtt(cbf, mtt)),
        "mtt": mtt,
        "tmax": np.asarray(tmax_box(delay, mtt)),
        "delay": delay,
    }


def scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Values (V,) at ``mask``'s True voxels (C order) -> float64 volume, 0 elsewhere."""
    volume = np.zeros(mask.shape, dtype=np.float64)
    volume[mask] = values
    return volume


def mask_unphysical(maps: dict, brain: np.ndarray) -> tuple[dict, np.ndarray, dict]:
    """Zero every map outside ``brain`` and at voxels with unphysical values.

    Returns:
        (masked maps as float32, valid bool volume (brain voxels with all five maps physical),
        counts: {map: voxels out of range or non-finite inside the brain, "any": voxels masked}).
    """
    valid = brain.copy()
    counts = {}
    for name in MAP_NAMES:
        low, high = PHYSICAL_RANGE[name]
        values = maps[name]
        bad = brain & ~(np.isfinite(values) & (values >= low) & (values <= high))
        counts[name] = int(bad.sum())
        valid &= ~bad
    counts["any"] = int((brain & ~valid).sum())
    masked = {n: np.where(valid, maps[n], 0.0).astype(np.float32) for n in MAP_NAMES}
    return masked, valid, counts


def write_maps(
    folder: Path,
    maps: dict,
    affine: np.ndarray,
    tissue: np.ndarray,
    fitqc: np.ndarray,
) -> list[str]:
    """Write the five maps, ``tissuemask.nii.gz`` (uint8) and ``fitqc.nii.gz``; returns the names."""
    names = []
    for name in MAP_NAMES:
        write_nifti_atomic(folder / f"{name}.nii.gz", maps[name], affine, np.float32)
        names.append(f"{name}.nii.gz")
    write_nifti_atomic(folder / "tissuemask.nii.gz", tissue, affine, np.uint8)
    write_nifti_atomic(folder / "fitqc.nii.gz", fitqc, affine, np.float32)
    return [*names, "tissuemask.nii.gz", "fitqc.nii.gz"]


def write_masks(folder: Path, masks: dict, affine: np.ndarray) -> list[str]:
    """Write :data:`MASK_FILES` from ``masks`` (bool volumes on the scan grid); returns the names."""
    for key, name in MASK_FILES.items():
        write_nifti_atomic(folder / name, masks[key], affine, np.uint8)
    return list(MASK_FILES.values())


def box_model_fitqc(
    maps: dict,
    mask: np.ndarray,
    tissue_hu: np.ndarray,
    frame_times_s: np.ndarray,
    aif_hu: np.ndarray,
) -> np.ndarray:
    """Mean |data - Eq. (1) prediction| (ΔHU) per ``mask`` voxel, for methods without f_TAC.

    The prediction is :func:`perfusion.physics.box_model_tac` on the measured AIF's
    :class:`perfusion.physics.CumulativeAif` (the table the fits use: PCHIP between frames, 0
    before the first frame, the last value held after the last), in float64.
    """
    import torch  # the maps' contract stays importable without torch

    from perfusion.physics import CumulativeAif, box_model_tac

    times = torch.as_tensor(np.asarray(frame_times_s, dtype=np.float64))
    table = CumulativeAif.from_samples(times, torch.as_tensor(np.asarray(aif_hu, np.float64)))
    flow = np.asarray(maps["cbf"], np.float64)[mask] / float(flow_to_cbf(1.0))
    delay = np.asarray(maps["delay"], np.float64)[mask]
    mtt = np.asarray(maps["mtt"], np.float64)[mask]
    data = np.asarray(tissue_hu)[mask]
    values = np.empty(len(flow), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(flow), 20000):
            sl = slice(start, start + 20000)
            column = [torch.as_tensor(v[sl, None]) for v in (flow, mtt, delay)]
            fitted = box_model_tac(table, times[None, :], *column).numpy()
            values[sl] = np.abs(fitted - data[sl]).mean(axis=1)
    return scatter(values, mask).astype(np.float32)
