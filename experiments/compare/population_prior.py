"""An oracle for what an anatomical prior can know about a held-out patient: the cohort's truth.

A meta-learned initialisation is a prior over maps in the standard frame (resppinn-paper.txt
Fig. 5): it can carry what the training patients share at each position, not this patient's
lesion. The *population prior* estimates what such a prior can hold before adaptation, with
the noise of fitting taken away: every training patient's true maps (phantom truth) sampled at the held-out patient's voxel positions in
the standard frame (nearest voxel, inside that patient's brain), and the median over patients at
each position. ``perfusion compare`` scores it like a fit (arm ``population-prior``): where its
map error is above no-init@0 (the patient's own grid start, seconds of work), an initialisation
learned from those patients is not expected to start closer to the truth than a fit from scratch
(it could still adapt better).

Needs truth maps, so only phantom cohorts (or a cohort a user has reference maps for) have it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.compare.heldout import TRUTH_DIR
from perfusion.atomic import atomic_dir, write_json_atomic
from perfusion.evaluation import MAP_NAMES
from perfusion.fitting.maps import write_maps
from perfusion.io import load_nifti
from perfusion.prepared import PreparedCase


@dataclass
class CohortTruth:
    """One training patient: where its voxels lie in the standard frame, its brain and true maps.

    Only these, not the whole PreparedCase: a cohort's 4-D curves would cost gigabytes at the
    paper's scale (30 patients of 128x128x32x60) and the prior never reads them.
    """

    name: str
    voxel_to_standard: np.ndarray
    """(4, 4) scan voxel index -> standard-frame mm (``scan_to_standard @ affine``)."""
    brain: np.ndarray
    truth: dict[str, np.ndarray]

    @classmethod
    def from_prepared(
        cls, name: str, prepared: PreparedCase, truth: dict[str, np.ndarray]
    ) -> CohortTruth:
        voxel_to_standard = np.asarray(prepared.scan_to_standard) @ prepared.affine
        return cls(name, voxel_to_standard, prepared.brain, truth)


def has_truth(case_dir: Path) -> bool:
    """Whether ``case_dir/truth`` holds every map of :data:`MAP_NAMES`."""
    return all((case_dir / TRUTH_DIR / f"{n}.nii.gz").is_file() for n in MAP_NAMES)


def read_truth(case_dir: Path) -> dict[str, np.ndarray]:
    """The true maps of a phantom case (float64 volumes, physical units)."""
    return {
        n: np.asarray(load_nifti(case_dir / TRUTH_DIR / f"{n}.nii.gz").dataobj, np.float64)
        for n in MAP_NAMES
    }


def sample_at(patient: CohortTruth, standard_mm: np.ndarray) -> dict[str, np.ndarray]:
    """``patient``'s true maps at standard-frame positions (N, 3) mm: nearest voxel, NaN where
    the position falls outside the patient's scan or brain."""
    to_voxel = np.linalg.inv(patient.voxel_to_standard)
    homogeneous = np.c_[standard_mm, np.ones(len(standard_mm))]
    index = np.rint(homogeneous @ to_voxel.T)[:, :3].astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(patient.brain.shape)), axis=1)
    inside[inside] = patient.brain[tuple(index[inside].T)]
    out = {}
    for name in MAP_NAMES:
        values = np.full(len(standard_mm), np.nan)
        values[inside] = patient.truth[name][tuple(index[inside].T)]
        out[name] = values
    return out


def population_maps(
    target: PreparedCase, cohort: list[CohortTruth]
) -> tuple[dict[str, np.ndarray], float]:
    """The population prior on ``target``'s scan grid (0 outside its brain), and the share of
    its brain voxels that at least one training patient covers (the rest get the prior's median)."""
    voxels = np.argwhere(target.brain)
    positions = target.standard_mm(voxels)
    stacks = {n: np.full((len(cohort), len(voxels)), np.nan) for n in MAP_NAMES}
    for i, patient in enumerate(cohort):
        for name, values in sample_at(patient, positions).items():
            stacks[name][i] = values
    covered = np.isfinite(stacks["cbf"]).any(axis=0)
    maps = {}
    for name, stack in stacks.items():
        values = np.full(len(voxels), np.nan)
        values[covered] = np.nanmedian(stack[:, covered], axis=0)
        values[~covered] = np.median(values[covered]) if covered.any() else 0.0
        volume = np.zeros(target.shape)
        volume[target.brain] = values
        maps[name] = volume
    return maps, float(covered.mean()) if len(covered) else 0.0


def write_prior_fit(
    target: PreparedCase, cohort: list[CohortTruth], folder: str | Path
) -> dict[str, Any]:
    """Write the population prior as a fit output folder (the five maps, tissue mask, a zero
    fitqc and ``summary.json``), so that perfusion.evaluation scores it like any fit."""
    start = time.perf_counter()
    maps, coverage = population_maps(target, cohort)
    summary = {
        "method": "population-prior",
        "cohort": [p.name for p in cohort],
        "brain_coverage": coverage,
        "scan_to_standard": np.asarray(target.scan_to_standard).tolist(),
        "units": {"cbf": "ml/100g/min", "cbv": "ml/100g", "mtt": "s", "tmax": "s", "delay": "s"},
        "steps": 0,
        "history": [],
        "wall_time_s": time.perf_counter() - start,
    }
    with atomic_dir(folder) as tmp:
        write_maps(tmp, maps, target.affine, target.tissue, np.zeros(target.shape))
        write_json_atomic(tmp / "summary.json", summary)
    return summary
