"""Metric functions of perfusion.evaluation on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from perfusion.evaluation import (
    bias,
    dice,
    evaluate_maps,
    mae,
    pearson_r,
    rcbf_region,
    region_metrics,
)


def test_map_errors_by_hand():
    pred, truth = np.array([1.0, 2.0, 6.0, 100.0]), np.array([2.0, 2.0, 3.0, 0.0])
    mask = np.array([True, True, True, False])
    assert mae(pred, truth, mask) == pytest.approx((1 + 0 + 3) / 3)
    assert bias(pred, truth, mask) == pytest.approx((-1 + 0 + 3) / 3)
    assert pearson_r(
        np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0]), np.ones(3, bool)
    ) == pytest.approx(1.0)
    assert pearson_r(
        np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]), np.ones(3, bool)
    ) == pytest.approx(-1.0)
    # [1, 2, 3] vs [1, 3, 2]: centred (-1, 0, 1) . (-1, 1, 0) = 1, norms sqrt(2) each -> 0.5
    assert pearson_r(
        np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]), np.ones(3, bool)
    ) == pytest.approx(0.5)
    assert np.isnan(pearson_r(np.ones(3), np.arange(3.0), np.ones(3, bool)))
    assert np.isnan(mae(pred, truth, np.zeros(4, bool)))


def test_dice_including_empty_regions():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 0], bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    assert dice(a, np.zeros(4, bool)) == 0.0
    m = region_metrics(a, b | np.array([0, 0, 0, 1], bool), voxel_ml=0.5)
    assert m == {"dice": pytest.approx(0.4), "ml": 1.0, "true_ml": 1.5, "volume_error_ml": -0.5}


def test_rcbf_rule_uses_the_healthy_median_and_the_affected_side():
    cbf = np.array([50.0, 60.0, 70.0, 10.0, 20.0, 40.0])  # healthy median 60 -> threshold 18
    tissue = np.ones(6, bool)
    affected = np.array([0, 0, 0, 1, 1, 1], bool)
    np.testing.assert_array_equal(rcbf_region(cbf, tissue, affected, ~affected), [0, 0, 0, 1, 0, 0])
    tissue[3] = False
    assert not rcbf_region(cbf, tissue, affected, ~affected).any()


def test_evaluate_maps_combines_map_and_region_metrics():
    truth = {"cbf": np.array([60.0, 60.0, 10.0, 60.0]), "tmax": np.array([2.0, 3.0, 9.0, 7.0])}
    maps = {"cbf": np.array([60.0, 60.0, 20.0, 10.0]), "tmax": np.array([2.0, 3.0, 8.0, 5.0])}
    affected = np.array([False, False, True, True])
    out = evaluate_maps(maps, truth, np.ones(4, bool), affected, voxel_ml=2.0)
    assert out["cbf_mae"] == pytest.approx((0 + 0 + 10 + 50) / 4)
    assert out["tmax_bias"] == pytest.approx((0 + 0 - 1 - 2) / 4)
    # rule threshold 18: truth core {2}; method core {3} (20 is not < 18) -> Dice 0
    assert out["rcbf30_dice"] == 0.0 and out["rcbf30_volume_error_ml"] == 0.0
    # Tmax > 6: truth {2, 3}, method {2} -> Dice 2/3, volume error -2 ml
    assert out["tmax6_dice"] == pytest.approx(2 / 3) and out["tmax6_volume_error_ml"] == -2.0


def test_voxels_with_any_vessel_content_are_left_out(tmp_path):
    """A voxel of vessel fraction f holds f of blood: its measured CBV is not the tissue truth's,
    so evaluate_fit scores only voxels without vessel content (and without CSF)."""
    from perfusion.evaluation import evaluate_fit  # noqa: PLC0415
    from perfusion.io import write_nifti_atomic  # noqa: PLC0415

    shape = (4, 4, 2)
    rng = np.random.default_rng(0)
    truth = {
        "cbf": rng.uniform(20, 60, shape),
        "mtt": np.full(shape, 4.0),
        "delay": np.full(shape, 1.0),
    }
    truth["cbv"] = truth["cbf"] * truth["mtt"] / 60.0
    truth["tmax"] = truth["delay"] + truth["mtt"] / 2
    vessels = np.zeros(shape)
    vessels[0, 0, 0] = 0.2  # a partial-vessel voxel: a method measures its blood
    fit = {k: v.copy() for k, v in truth.items()}
    fit["cbv"][0, 0, 0] = 30.0
    (tmp_path / "truth").mkdir()
    (tmp_path / "fit").mkdir()
    for name, volume in truth.items():
        write_nifti_atomic(tmp_path / "truth" / f"{name}.nii.gz", volume, np.eye(4))
        write_nifti_atomic(tmp_path / "fit" / f"{name}.nii.gz", fit[name], np.eye(4))
    write_nifti_atomic(tmp_path / "truth" / "csf.nii.gz", np.zeros(shape), np.eye(4))
    write_nifti_atomic(tmp_path / "brainmask.nii.gz", np.ones(shape), np.eye(4), np.uint8)
    write_nifti_atomic(tmp_path / "truth" / "vessels.nii.gz", vessels, np.eye(4))
    out = evaluate_fit(tmp_path / "fit", tmp_path / "truth")
    assert out["n_voxels"] == np.prod(shape) - 1
    assert out["cbv_r"] == pytest.approx(1.0) and out["cbv_mae"] == pytest.approx(0.0)
    write_nifti_atomic(tmp_path / "truth" / "vessels.nii.gz", np.zeros(shape), np.eye(4))
    with_it = evaluate_fit(tmp_path / "fit", tmp_path / "truth")
    assert with_it["n_voxels"] == np.prod(shape) and with_it["cbv_r"] < 0.5
