"""Relative CBF: midline, side detection from the maps alone, normalisation, hemisphere restriction."""

from __future__ import annotations

import numpy as np
import pytest
from test_segmentation_cases import AFFINE, synthetic_maps

from perfusion.clinical import affected_side, standard_x_mm
from perfusion.errors import PerfusionError
from perfusion.segmentation.rcbf import (
    relative_cbf,
    restrict_to_hemisphere,
    threshold_core,
)


def test_standard_x_fallback_and_scan_to_standard() -> None:
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 100.0  # world x = 100 + 2 i
    x = standard_x_mm((4, 1, 1), affine, None)[:, 0, 0]
    np.testing.assert_allclose(x, [-3.0, -1.0, 1.0, 3.0])  # image centre at 0
    shift = np.eye(4)
    shift[0, 3] = -102.0  # standard frame puts the midline at world x = 102
    x = standard_x_mm((4, 1, 1), affine, shift)[:, 0, 0]
    np.testing.assert_allclose(x, [-2.0, 0.0, 2.0, 4.0])


def test_relative_cbf_uses_healthy_median() -> None:
    x = np.array([-2.0, -1.0, -0.5, 1.0, 2.0, 3.0]).reshape(6, 1, 1)
    cbf = np.array([5.0, 1.0, 9.0, 10.0, 20.0, 30.0]).reshape(6, 1, 1)
    tissue = np.ones((6, 1, 1), bool)
    tissue[5] = False  # excluded (e.g. a vessel): must not enter the median
    r = relative_cbf(cbf, tissue, x, affected="left")
    # healthy (right) tissue: 10, 20 -> median 15
    np.testing.assert_allclose(
        r[:, 0, 0], [5 / 15, 1 / 15, 9 / 15, 10 / 15, 20 / 15, 0.0], rtol=1e-6
    )


@pytest.mark.parametrize("side", ["left", "right"])
def test_side_detected_from_cbf_without_labels(side: str) -> None:
    cbf, brain, _core = synthetic_maps(side)
    tissue = brain & (cbf > 0)
    x = standard_x_mm(cbf.shape, AFFINE, None)
    assert affected_side(cbf, tissue, x, require_both=True) == side
    with pytest.raises(PerfusionError, match="tissue in only one hemisphere"):
        affected_side(cbf, tissue & (x > 0), x, require_both=True)


def test_side_follows_scan_to_standard_not_the_grid() -> None:
    cbf, brain, _ = synthetic_maps("right")  # lesion at high i (world +x)
    centre = np.eye(4)
    centre[0, 3] = -4.0 * 15.5  # world x of the image centre
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])  # a standard frame whose +x is world -x
    x = standard_x_mm(cbf.shape, AFFINE, mirror @ centre)
    assert affected_side(cbf, brain & (cbf > 0), x) == "left"


def test_hemisphere_restriction_and_threshold_rule() -> None:
    x = np.array([-1.5, -0.5, 0.5, 1.5]).reshape(4, 1, 1)
    everything = np.ones((4, 1, 1), bool)
    np.testing.assert_array_equal(
        restrict_to_hemisphere(everything, x, "right")[:, 0, 0], [0, 0, 1, 1]
    )
    rcbf = np.array([0.1, 0.2, 0.25, 0.9]).reshape(4, 1, 1)
    tissue = np.array([True, True, True, False]).reshape(4, 1, 1)
    core = threshold_core(rcbf, tissue, x, "right", 1.0, 0.3)
    np.testing.assert_array_equal(core[:, 0, 0], [0, 0, 1, 0])  # low CBF on the left is ignored


def test_side_from_tmax_when_cbf_is_symmetric() -> None:
    cbf, brain, _ = synthetic_maps(None)  # no CBF lesion at all
    x = standard_x_mm(cbf.shape, AFFINE, None)
    tmax = np.where(x > 0, 3.0, 2.0).astype(np.float32)
    tmax[(x < -20) & brain] = 9.0  # a Tmax > 6 s region on the left only
    assert affected_side(cbf, brain & (cbf > 0), x, tmax) == "left"
    # without Tmax, symmetric CBF ties every count: the lower median decides, left on a tie
    assert affected_side(cbf, brain & (cbf > 0), x, None) == "left"
    lower_right = np.where(x > 0, cbf * 0.98, cbf)
    assert affected_side(lower_right, brain & (cbf > 0), x, None) == "right"


def test_summary_and_segment_name_the_same_side_where_the_old_rules_differed() -> None:
    """No Tmax > 6 s anywhere; the left holds a small core (CBF 10 < 30 % of the right's 50)
    but the higher median (60). summary.json used to name the lower median (right), segment
    the side with the core (left); both now use perfusion.clinical.affected_side."""
    from perfusion.fitting.defuse import defuse3_masks, defuse3_summary

    x = np.r_[-np.arange(1.0, 8.0), np.arange(1.0, 8.0)].reshape(14, 1, 1)
    cbf = np.r_[10.0, 10.0, 60.0, 60.0, 60.0, 60.0, 60.0, [50.0] * 7].reshape(14, 1, 1)
    tmax = np.full_like(cbf, 3.0)
    usable = np.ones(cbf.shape, dtype=bool)
    maps = {"cbf": cbf, "tmax": tmax}
    assert affected_side(cbf, usable, x, tmax) == "left"
    assert defuse3_masks(maps, usable, x, 1.0)["side"] == "left"
    assert defuse3_summary(maps, usable, x, voxel_volume_ml=1.0)["core_volume_ml"] == 2.0
    tmax[10] = 8.0  # a Tmax > 6 s voxel on the right decides before any CBF rule
    assert affected_side(cbf, usable, x, tmax) == "right"
    assert defuse3_masks(maps, usable, x, 1.0)["side"] == "right"


def test_core_parts_under_half_a_millilitre_are_left_out() -> None:
    """26-connected parts: two diagonal voxels are one part; at 0.3 ml per voxel a lone voxel
    (0.3 ml) goes, a pair (0.6 ml) stays; the rule and the summary drop the same voxels."""
    from perfusion.clinical import without_small_components
    from perfusion.fitting.defuse import defuse3_summary

    mask = np.zeros((8, 8, 3), dtype=bool)
    mask[5, 1, 0] = mask[6, 2, 1] = True  # diagonal neighbours: one part of 2 voxels
    mask[7, 6, 2] = True  # alone
    kept = without_small_components(mask, voxel_ml=0.3)
    assert kept[5, 1, 0] and kept[6, 2, 1] and not kept[7, 6, 2]
    assert without_small_components(mask, voxel_ml=0.5).sum() == 3  # 0.5 ml is enough
    assert not without_small_components(mask, voxel_ml=0.2).any()

    x = np.broadcast_to(np.arange(8.0).reshape(8, 1, 1) - 3.5, mask.shape).copy()
    rcbf = np.where(mask, 0.1, 1.0).astype(np.float32)
    tissue = np.ones(mask.shape, dtype=bool)
    np.testing.assert_array_equal(threshold_core(rcbf, tissue, x, "right", voxel_ml=0.3), kept)
    maps = {"cbf": 50.0 * rcbf, "tmax": np.where(x > 0, 8.0, 3.0)}
    summary = defuse3_summary(maps, tissue, x, voxel_volume_ml=0.3)
    assert summary["core_volume_ml"] == 0.6


def test_summary_core_is_segments_rule_on_the_same_maps() -> None:
    """On random maps the summary's core (defuse3_masks) and the rule `perfusion segment` falls
    back to (rCBF from relative_cbf, then threshold_core) are the same voxels."""
    from perfusion.fitting.defuse import defuse3_masks

    rng = np.random.default_rng(3)
    shape = (16, 12, 4)
    x = np.broadcast_to((np.arange(16.0) - 7.5).reshape(16, 1, 1), shape).copy()
    cbf = rng.gamma(4.0, 10.0, shape)
    cbf[2:7, 3:9] *= 0.15  # a low-flow region on the left
    tmax = np.where(x < 0, 7.0, 3.0) + rng.normal(0.0, 0.5, shape)
    usable = rng.random(shape) > 0.1
    masks = defuse3_masks({"cbf": cbf, "tmax": tmax}, usable, x, 0.2)
    side = masks["side"]
    assert side == "left" and masks["core"].sum() > 10
    rule = threshold_core(relative_cbf(cbf, usable, x, side), usable, x, side, voxel_ml=0.2)
    np.testing.assert_array_equal(masks["core"], rule)


def test_one_healthy_reference_and_what_each_caller_does_without_one() -> None:
    """clinical.healthy_median is the reference of the summary's rCBF and of `perfusion
    segment`'s: non-finite values and the affected side are left out, NaN when nothing is left.
    The summary then has no core; segment refuses."""
    from perfusion.clinical import (
        NO_HEALTHY_REFERENCE,
        healthy_median,
        summary_warnings,
        withheld_verdict,
    )
    from perfusion.fitting.defuse import defuse3_masks, defuse3_summary

    x = np.array([-2.0, -1.0, 1.0, 2.0, 3.0]).reshape(5, 1, 1)
    cbf = np.array([4.0, 6.0, 30.0, np.nan, 50.0]).reshape(5, 1, 1)
    tissue = np.ones((5, 1, 1), bool)
    maps = {"cbf": cbf, "tmax": np.where(x < 0, 7.0, 3.0)}  # the left side's core in Tmax > 6 s
    healthy, reference = healthy_median(cbf, tissue, x, "left")
    assert reference == 40.0 and healthy[:, 0, 0].tolist() == [False, False, True, False, True]
    left_only = tissue & (x < 0)
    masks = defuse3_masks(maps, left_only, x, 1.0)
    assert np.isnan(masks["healthy_median_cbf"]) and not masks["core"].any()
    summary = defuse3_summary(maps, left_only, x, 1.0)
    assert summary_warnings(summary) == [NO_HEALTHY_REFERENCE]
    assert withheld_verdict({"defuse3": summary}) == NO_HEALTHY_REFERENCE[0]
    assert not summary_warnings(defuse3_summary(maps, tissue, x, 1.0))
    with pytest.raises(PerfusionError, match="no tissue in the healthy hemisphere"):
        relative_cbf(cbf, left_only, x, "left")
