"""Core segmentation metrics of the paper's Table 1: Dice, MVD, AVD, FNR, false-positive volume.

Per patient: :func:`dice`, :func:`volume_ml`, :func:`detected` and :func:`patient_metrics`; over
patients: :func:`summarise`. Empty masks are defined explicitly (MONAI's ``DiceMetric`` with
``ignore_empty=True`` returns NaN there, which a ``nanmean`` would drop silently).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from perfusion.evaluation import dice


def volume_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume in ml of a bool mask: voxel count x voxel volume (mm^3) / 1000."""
    return float(mask.astype(bool).sum()) * float(np.prod(spacing_mm)) / 1000.0


def detected(pred: np.ndarray, ref: np.ndarray) -> bool | None:
    """Whether some connected component (26-connected) of ``pred`` overlaps ``ref``.

    None when ``ref`` is empty (no core to detect). A single predicted voxel inside the core
    counts as a detection, a stray component elsewhere does not.
    """
    ref = ref.astype(bool)
    if not ref.any():
        return None
    labels, _ = ndimage.label(pred.astype(bool), structure=np.ones((3, 3, 3), dtype=bool))
    return bool(np.unique(labels[ref & (labels > 0)]).size > 0)


def patient_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float]
) -> dict[str, Any]:
    """Per-patient values: dice, predicted/reference/difference volume (ml), detected."""
    pred_ml, ref_ml = volume_ml(pred, spacing_mm), volume_ml(ref, spacing_mm)
    return {
        "dice": dice(pred, ref),
        "pred_ml": pred_ml,
        "ref_ml": ref_ml,
        "diff_ml": pred_ml - ref_ml,
        "detected": detected(pred, ref),
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Table 1 metrics over patients from :func:`patient_metrics` rows.

    - dice: mean Dice over patients with a reference core (NaN if none has one);
    - mvd_ml: mean (predicted - reference) volume over all patients;
    - avd_ml: mean |predicted - reference| volume over all patients;
    - fnr: fraction of patients with a core whose prediction has no component overlapping it;
    - fp_ml: mean predicted volume in patients without a reference core (NaN if none).
    """
    if not rows:
        raise ValueError("no patients to summarise")
    with_core = [r for r in rows if r["detected"] is not None]
    without = [r for r in rows if r["detected"] is None]
    diffs = np.array([r["diff_ml"] for r in rows], dtype=np.float64)
    return {
        "dice": float(np.mean([r["dice"] for r in with_core])) if with_core else float("nan"),
        "mvd_ml": float(diffs.mean()),
        "avd_ml": float(np.abs(diffs).mean()),
        "fnr": float(np.mean([not r["detected"] for r in with_core]))
        if with_core
        else float("nan"),
        "fp_ml": float(np.mean([r["pred_ml"] for r in without])) if without else float("nan"),
        "n": len(rows),
        "n_with_core": len(with_core),
    }
