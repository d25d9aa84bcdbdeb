"""Maps from parameters, masking of unphysical values, and the DEFUSE-3 summary, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from perfusion.fitting.defuse import defuse3_summary
from perfusion.fitting.maps import (
    HU_STEP,
    box_model_fitqc,
    maps_from_params,
    mask_unphysical,
    unexplained,
)
from perfusion.units import cbf_to_flow


def test_maps_from_params_by_hand() -> None:
    maps = maps_from_params(np.array([cbf_to_flow(60.0)]), np.array([4.0]), np.array([1.0]))
    assert maps["cbf"][0] == pytest.approx(60.0)
    assert maps["cbv"][0] == pytest.approx(4.0)  # 60 * 4 / 60
    assert maps["tmax"][0] == pytest.approx(3.0)  # 1 + 4 / 2
    assert maps["delay"][0] == 1.0 and maps["mtt"][0] == 4.0


def test_unphysical_values_are_zeroed_and_counted() -> None:
    brain = np.array([True, True, True, False])
    maps = maps_from_params(
        np.full(4, cbf_to_flow(50.0)), np.array([4.0, 90.0, 4.0, 4.0]), np.ones(4)
    )
    maps["cbf"][2] = np.nan
    masked, valid, counts = mask_unphysical(maps, brain)
    assert valid.tolist() == [True, False, False, False]
    assert counts["mtt"] == 1 and counts["cbf"] == 1 and counts["any"] == 2
    assert masked["cbf"].tolist() == [pytest.approx(50.0), 0.0, 0.0, 0.0]
    assert masked["cbf"].dtype == np.float32


def test_defuse3_summary_by_hand() -> None:
    # 10 x 1 x 1 row of 1-ml voxels; x < 0 is left. Left: 2 core voxels (CBF 5), 3 penumbra
    # (CBF 40, Tmax 8); right: healthy CBF 50 -> core threshold 15.
    x_mm = np.array([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5], dtype=float).reshape(10, 1, 1)
    cbf = np.array([5, 5, 40, 40, 40, 50, 50, 50, 50, 50], dtype=float).reshape(10, 1, 1)
    tmax = np.array([12, 12, 8, 8, 8, 2, 2, 2, 2, 2], dtype=float).reshape(10, 1, 1)
    usable = np.ones((10, 1, 1), dtype=bool)
    summary = defuse3_summary({"cbf": cbf, "tmax": tmax}, usable, x_mm, voxel_volume_ml=1.0)
    assert summary["affected_side"] == "left"
    assert summary["healthy_median_cbf"] == 50.0
    assert summary["core_volume_ml"] == 2.0
    assert summary["tmax_gt_6s_volume_ml"] == 5.0 and summary["tmax_gt_10s_volume_ml"] == 2.0
    assert summary["mismatch_volume_ml"] == 3.0 and summary["mismatch_ratio"] == 2.5
    assert summary["defuse3_target_mismatch"] is False  # mismatch 3 ml < 15 ml
    usable[0] = False  # an excluded (CSF/vessel) voxel leaves the volumes
    assert defuse3_summary({"cbf": cbf, "tmax": tmax}, usable, x_mm, 1.0)["core_volume_ml"] == 1.0
    assert summary["core_outside_tmax_gt_6s_ml"] == 0.0
    assert summary["core_exceeds_tmax_gt_6s"] is False
    assert summary["tmax_gt_6s_other_side_fraction"] == 0.0
    assert summary["tmax_gt_6s_both_sides"] is False
    # two of the right hemisphere's five voxels delayed too: 40 % of the other side
    tmax[5:7] = 7.0
    both = defuse3_summary({"cbf": cbf, "tmax": tmax}, usable, x_mm, voxel_volume_ml=1.0)
    assert both["tmax_gt_6s_other_side_fraction"] == pytest.approx(0.4)
    assert both["tmax_gt_6s_both_sides"] is True


def test_a_core_larger_than_tmax_gt_6s_is_flagged() -> None:
    # left: 3 core voxels (CBF 5), only 1 of them delayed (Tmax 8); right healthy
    x_mm = np.array([-3, -2, -1, 1, 2, 3], dtype=float).reshape(6, 1, 1)
    cbf = np.array([5, 5, 5, 50, 50, 50], dtype=float).reshape(6, 1, 1)
    tmax = np.array([8, 2, 2, 2, 2, 2], dtype=float).reshape(6, 1, 1)
    usable = np.ones((6, 1, 1), dtype=bool)
    summary = defuse3_summary({"cbf": cbf, "tmax": tmax}, usable, x_mm, voxel_volume_ml=1.0)
    assert summary["core_volume_ml"] == 3.0 and summary["tmax_gt_6s_volume_ml"] == 1.0
    assert summary["core_outside_tmax_gt_6s_ml"] == 2.0
    assert summary["core_exceeds_tmax_gt_6s"] is True
    assert summary["core_mostly_outside_tmax_gt_6s"] is False  # 2 of 3 ml: not above 75 %
    small = defuse3_summary({"cbf": cbf, "tmax": tmax}, usable, x_mm, voxel_volume_ml=0.1)
    assert small["core_exceeds_tmax_gt_6s"] is False  # 0.3 ml: below a lesion's 1 ml
    tmax[0] = 2.0  # no core voxel delayed: low CBF in tissue without delay (noise, old infarct)
    blobs = defuse3_summary({"cbf": cbf, "tmax": tmax}, usable, x_mm, voxel_volume_ml=1.0)
    assert blobs["core_outside_tmax_gt_6s_ml"] == 3.0
    assert blobs["core_mostly_outside_tmax_gt_6s"] is True


def test_box_model_fitqc_is_zero_for_the_generating_parameters() -> None:
    times = np.arange(0.0, 40.0, 1.0)
    aif = np.where(times >= 5, np.exp(-((times - 12.0) ** 2) / 8.0) * 200.0, 0.0)
    maps = {"cbf": np.array([[[60.0]]]), "mtt": np.array([[[4.0]]]), "delay": np.array([[[2.0]]])}
    fine = np.arange(0.0, 40.0, 0.001)  # the same Eq. (1) integral, finely
    cumulative = np.cumsum(np.interp(fine, times, aif)) * 0.001
    flow = cbf_to_flow(60.0)
    tissue = flow * (
        np.interp(times - 2.0, fine, cumulative, left=0)
        - np.interp(times - 6.0, fine, cumulative, left=0)
    )
    mask = np.ones((1, 1, 1), dtype=bool)
    qc = box_model_fitqc(maps, mask, tissue.reshape(1, 1, 1, -1), times, aif)
    assert qc[0, 0, 0] < 0.02 * tissue.max()
    maps["cbf"] = maps["cbf"] * 2
    assert (
        box_model_fitqc(maps, mask, tissue.reshape(1, 1, 1, -1), times, aif)[0, 0, 0]
        > 0.2 * tissue.mean()
    )


def test_unexplained_curves_are_those_noise_cannot_account_for() -> None:
    """Residuals of pure noise (RMS 2 ΔHU, 40 frames) are explained; the same with a 15 ΔHU
    step over half the frames (a bone edge that moved) are not. Unknown noise flags nothing;
    zero noise reads misfits against whole HU."""
    rng = np.random.default_rng(0)
    residuals = rng.normal(0.0, 2.0, (2, 500, 1, 40))
    residuals[1, :, :, 20:] += 15.0
    fitqc = np.abs(residuals).mean(axis=-1)
    mask = np.ones(fitqc.shape, dtype=bool)
    odd = unexplained(fitqc, mask, 2.0)
    assert not odd[0].any() and odd[1].all()
    assert not unexplained(fitqc, mask, float("nan")).any()
    small, large = np.full((1, 1, 1), 2.0 * HU_STEP), np.full((1, 1, 1), 3.0 * HU_STEP)
    ones = np.ones((1, 1, 1), dtype=bool)
    assert not unexplained(small, ones, 0.0).any() and unexplained(large, ones, 0.0).all()
