"""Accuracy of perfusion maps against phantom truth: map errors and clinical-region overlap.

Used by the accuracy benchmark, the sweeps' objective and the method comparison. Every metric is
computed inside one evaluation mask (brain tissue: brain without CSF and large vessels, from the
truth), the same for every method, so methods are compared on the same voxels.

Regions: ``rcbf30`` = CBF below 30 % of the healthy hemisphere's median CBF,
on the affected side (Straka 2010); the same rule is applied to the method's CBF and to the true
CBF, with the same hemispheres and affected side (the truth's lesion side), voxel by voxel (a
score of the CBF map: the summary's core also drops parts under 0.5 ml). ``tmax6`` = Tmax > 6 s
(Olivot 2014). Dice of two empty regions is 1 (nothing to find, nothing found); of one empty
region and a non-empty one, 0.

The scores are NumPy on the masked voxels rather than torchmetrics or MONAI metrics: scoring
reads NIfTI maps and runs without importing torch, each formula is one line, and the
empty-mask conventions above are ours
(for two empty masks torchmetrics' ``binary_f1_score`` returns 0, its ``dice_score`` and
MONAI's ``DiceMetric`` NaN).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from perfusion.clinical import RCBF_CORE, TMAX_PENUMBRA_S, standard_x_mm
from perfusion.errors import PerfusionError
from perfusion.io import load_nifti, voxel_volume_ml

MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "delay")
VESSEL_OCCUPANCY_MAX = 0.0
"""Voxels with more than this vessel fraction (truth/vessels) are left out. A phantom voxel of
vessel fraction f holds f of arterial or venous blood beside (1 - f) of tissue, while its true
maps are the tissue's: on a noiseless phantom, 5 % of arterial blood doubles the CBV that any
method must measure there (docs/phantoms.md, "How the phantoms are scored")."""


def mae(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error inside ``mask`` (NaN when the mask is empty)."""
    diff = np.asarray(pred, np.float64)[mask] - np.asarray(truth, np.float64)[mask]
    return float(np.abs(diff).mean()) if diff.size else float("nan")


def bias(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean signed error ``pred - truth`` inside ``mask`` (NaN when empty)."""
    diff = np.asarray(pred, np.float64)[mask] - np.asarray(truth, np.float64)[mask]
    return float(diff.mean()) if diff.size else float("nan")


def pearson_r(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation inside ``mask``; NaN with fewer than 2 voxels or a constant input."""
    a = np.asarray(pred, np.float64)[mask]
    b = np.asarray(truth, np.float64)[mask]
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice 2|A∩B| / (|A| + |B|) of two bool masks; 1 when both are empty (module docstring)."""
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * int((a & b).sum()) / total)


MAP_ERROR_KEYS = ("cbf_r", "rcbf30_dice", "tmax6_dice")
"""The :func:`evaluate_fit` metrics folded into the map error (1 is perfect for each)."""


def map_error(metrics: dict[str, Any], prefix: str = "") -> float:
    """mean(1 - r_CBF, 1 - Dice_rCBF<30%, 1 - Dice_Tmax>6s) over ``prefix + key`` for
    :data:`MAP_ERROR_KEYS` (0 is perfect); NaN when one is missing or not finite."""
    values = [metrics.get(prefix + key) for key in MAP_ERROR_KEYS]
    if not all(isinstance(v, int | float) and np.isfinite(v) for v in values):
        return float("nan")
    return float(np.mean([1.0 - float(v) for v in values]))


def rcbf_region(
    cbf: np.ndarray, tissue: np.ndarray, affected: np.ndarray, healthy: np.ndarray
) -> np.ndarray:
    """Bool mask: tissue on the affected side with CBF < 30 % of the healthy side's median CBF.

    An empty healthy side (or a median of 0) gives an empty region.
    """
    reference = cbf[tissue & healthy]
    median = float(np.median(reference)) if reference.size else 0.0
    if median <= 0:
        return np.zeros_like(tissue, dtype=bool)
    return tissue & affected & (cbf < RCBF_CORE * median)


def region_metrics(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Dice, volumes (ml) and volume error (pred - truth, ml) of two bool regions."""
    pred_ml, true_ml = float(pred.sum()) * voxel_ml, float(truth.sum()) * voxel_ml
    return {
        "dice": dice(pred, truth),
        "ml": pred_ml,
        "true_ml": true_ml,
        "volume_error_ml": pred_ml - true_ml,
    }


def evaluate_maps(
    maps: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    tissue: np.ndarray,
    affected: np.ndarray,
    voxel_ml: float,
    core: np.ndarray | None = None,
) -> dict[str, float]:
    """Flat metrics of method ``maps`` against ``truth`` maps (same shapes, physical units).

    Args:
        maps, truth: (X, Y, Z) arrays keyed by map name (cbf, cbv, mtt, tmax, delay).
        tissue: bool evaluation mask; affected: bool mask of the affected hemisphere.
        voxel_ml: voxel volume (ml).
        core: optional true core mask: adds ``rcbf30_core_dice`` (the rule against the lesion).

    Returns:
        ``{map}_mae``, ``{map}_bias``, ``{map}_r`` for each map present in both; ``rcbf30_*`` and
        ``tmax6_*`` region metrics (dice, ml, true_ml, volume_error_ml); ``n_voxels``.
    """
    out: dict[str, float] = {"n_voxels": float(tissue.sum())}
    for name in MAP_NAMES:
        if name in maps and name in truth:
            out[f"{name}_mae"] = mae(maps[name], truth[name], tissue)
            out[f"{name}_bias"] = bias(maps[name], truth[name], tissue)
            out[f"{name}_r"] = pearson_r(maps[name], truth[name], tissue)
    healthy = ~affected
    pred_core = rcbf_region(maps["cbf"], tissue, affected, healthy)
    true_core = rcbf_region(truth["cbf"], tissue, affected, healthy)
    out.update(
        {f"rcbf30_{k}": v for k, v in region_metrics(pred_core, true_core, voxel_ml).items()}
    )
    if core is not None:
        out["rcbf30_core_dice"] = dice(pred_core, core & tissue)
    pred_hypo = tissue & (maps["tmax"] > TMAX_PENUMBRA_S)
    true_hypo = tissue & (truth["tmax"] > TMAX_PENUMBRA_S)
    out.update({f"tmax6_{k}": v for k, v in region_metrics(pred_hypo, true_hypo, voxel_ml).items()})
    return out


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise PerfusionError("missing file", path)
    image = load_nifti(path)
    return np.asarray(image.dataobj, dtype=np.float64), image.affine


def fit_standard_x(fit_dir: Path, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-frame x (mm) of every voxel from the fit's ``scan_to_standard``; scanner x when
    absent."""
    summary_path = fit_dir / "summary.json"
    to_standard = np.eye(4)
    if summary_path.is_file():
        to_standard = json.loads(summary_path.read_text()).get("scan_to_standard", to_standard)
    return standard_x_mm(shape, affine, np.asarray(to_standard))


def evaluate_fit(fit_dir: str | Path, truth_dir: str | Path) -> dict[str, Any]:
    """Metrics of a fit output folder against a phantom's ``truth/`` folder.

    The evaluation mask is the case's brain mask (``truth_dir/../brainmask.nii.gz``, else true
    CBF > 0) without true CSF and voxels with any vessel content. Hemispheres split at x = 0 of
    the fit's standard frame (``summary.json``); the affected side is the truth's lesion side,
    else the hemisphere with the lower true median CBF.
    """
    fit_dir, truth_dir = Path(fit_dir), Path(truth_dir)
    maps = {n: _read(fit_dir / f"{n}.nii.gz")[0] for n in MAP_NAMES}
    truth = {n: _read(truth_dir / f"{n}.nii.gz")[0] for n in MAP_NAMES}
    cbf_true, affine = _read(truth_dir / "cbf.nii.gz")
    brain_path = truth_dir.parent / "brainmask.nii.gz"
    brain = _read(brain_path)[0] > 0 if brain_path.is_file() else cbf_true > 0
    tissue = brain.copy()
    if (truth_dir / "csf.nii.gz").is_file():
        tissue &= _read(truth_dir / "csf.nii.gz")[0] == 0
    if (truth_dir / "vessels.nii.gz").is_file():
        tissue &= _read(truth_dir / "vessels.nii.gz")[0] <= VESSEL_OCCUPANCY_MAX
    if maps["cbf"].shape != tissue.shape:
        raise PerfusionError(
            f"map shape {maps['cbf'].shape} differs from truth {tissue.shape}", fit_dir
        )
    x = fit_standard_x(fit_dir, affine, tissue.shape)
    side = _lesion_side(truth_dir)
    if side is None:
        left, right = np.median(cbf_true[tissue & (x < 0)]), np.median(cbf_true[tissue & (x > 0)])
        side = "left" if left <= right else "right"
    affected = x < 0 if side == "left" else x > 0
    core = (
        _read(truth_dir / "core.nii.gz")[0] > 0 if (truth_dir / "core.nii.gz").is_file() else None
    )
    voxel_ml = voxel_volume_ml(affine)
    out: dict[str, Any] = evaluate_maps(maps, truth, tissue, affected, voxel_ml, core)
    out["affected_side"] = side
    return out


def _lesion_side(truth_dir: Path) -> str | None:
    meta_path = truth_dir / "meta.json"
    if not meta_path.is_file():
        return None
    side = (json.loads(meta_path.read_text()).get("lesion") or {}).get("side")
    return side if side in ("left", "right") else None
