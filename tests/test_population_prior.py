"""The population prior: truth sampled through each patient's standard frame, median, scoring."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.compare.population_prior import CohortTruth, population_maps, write_prior_fit
from perfusion.evaluation import MAP_NAMES, evaluate_fit
from perfusion.io import write_nifti_atomic
from perfusion.units import cbv_from_cbf_mtt, tmax_box

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import SPACING_MM, make_prepared, tissue_labels, truth_volumes  # noqa: E402

SHAPE = (20, 16, 4)  # two non-brain voxels at each x edge: shifts up to 2 stay covered


def true_maps() -> dict[str, np.ndarray]:
    truth = truth_volumes(tissue_labels(SHAPE))
    truth["cbv"] = cbv_from_cbf_mtt(truth["cbf"], truth["mtt"])
    truth["tmax"] = tmax_box(truth["delay"], truth["mtt"])
    return truth


def shifted_patient(name: str, shift: int, scale: float = 1.0) -> CohortTruth:
    """The same anatomy scanned ``shift`` voxels further along x: voxel v holds what the
    target holds at v - shift, and its scan_to_standard says so. Truth times ``scale``."""
    prepared = make_prepared(shape=SHAPE)
    to_standard = prepared.scan_to_standard.copy()
    to_standard[0, 3] -= shift * SPACING_MM[0]
    moved = dataclasses.replace(
        prepared, brain=np.roll(prepared.brain, shift, axis=0), scan_to_standard=to_standard
    )
    truth = {n: scale * np.roll(v, shift, axis=0) for n, v in true_maps().items()}
    return CohortTruth.from_prepared(name, moved, truth)


def test_prior_of_shifted_scans_is_the_truth_and_takes_the_median():
    target = make_prepared(shape=SHAPE)
    cohort = [shifted_patient("a", 1), shifted_patient("b", -2), shifted_patient("c", 2, 3.0)]
    maps, coverage = population_maps(target, cohort)
    truth = true_maps()
    assert coverage == 1.0
    for name in MAP_NAMES:  # two of three patients hold the truth: the median is the truth
        np.testing.assert_allclose(maps[name][target.brain], truth[name][target.brain])
        assert not maps[name][~target.brain].any()
    wrong_frame = target.scan_to_standard @ target.affine  # the shift forgotten
    maps, _ = population_maps(
        target, [dataclasses.replace(cohort[0], voxel_to_standard=wrong_frame)]
    )
    assert not np.allclose(maps["cbf"][target.brain], truth["cbf"][target.brain])


def test_uncovered_voxels_take_the_prior_median_and_coverage_says_so():
    target = make_prepared(shape=SHAPE)
    far = shifted_patient("far", 0)
    to_standard = far.voxel_to_standard.copy()
    to_standard[0, 3] += 8 * SPACING_MM[0]  # half the brain leaves this patient's scan
    far = dataclasses.replace(far, voxel_to_standard=to_standard)
    maps, coverage = population_maps(target, [far])
    assert 0.2 < coverage < 0.8
    assert np.isfinite(maps["cbf"]).all() and (maps["cbf"][target.brain] > 0).all()


def test_written_prior_scores_like_a_fit(tmp_path):
    target = make_prepared(shape=SHAPE)
    case = tmp_path / "case"
    (case / "truth").mkdir(parents=True)
    for name, volume in true_maps().items():
        write_nifti_atomic(case / "truth" / f"{name}.nii.gz", volume, target.affine)
    write_nifti_atomic(case / "brainmask.nii.gz", target.brain, target.affine, np.uint8)
    summary = write_prior_fit(target, [shifted_patient("a", 1)], tmp_path / "fit")
    assert summary["cohort"] == ["a"] and summary["steps"] == 0
    metrics = evaluate_fit(tmp_path / "fit", case / "truth")
    assert metrics["cbf_r"] == pytest.approx(1.0)
    assert metrics["tmax6_dice"] == pytest.approx(1.0)
    halved = shifted_patient("h", 1, 0.5)
    write_prior_fit(target, [halved], tmp_path / "fit-h")
    assert evaluate_fit(tmp_path / "fit-h", case / "truth")["cbf_mae"] > 1.0
