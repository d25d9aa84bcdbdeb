"""AIF/VOF selection, ROI curves, partial-volume correction and quality flags."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import perfusion.aif as aif_module
from perfusion.aif import (
    arterial_shape_ok,
    correct_partial_volume,
    curve_features,
    quality_flags,
    roi_curve,
    select_aif_vof,
    selection_confident,
    venous_likeness,
    venous_shape_ok,
    vof_scale,
)
from perfusion.clinical import INPUT_FLAGS, input_warnings
from perfusion.errors import PerfusionError
from perfusion.gamma_variate import GammaVariate

RAPID_TSV = Path("/work/shared/data/isles2018_rapid_aif_vof.tsv")
TIME = np.arange(40, dtype=np.float64)
ARTERY = GammaVariate(t0_s=5.0, alpha=3.0, beta_s=1.5, peak_hu=200.0)
VEIN = GammaVariate(t0_s=9.0, alpha=3.0, beta_s=2.2, peak_hu=250.0)
TISSUE = GammaVariate(t0_s=6.0, alpha=3.0, beta_s=3.0, peak_hu=5.0)


def synthetic_volume(
    noise_hu: float = 3.0, times: np.ndarray = TIME, artery: GammaVariate = ARTERY
):
    """A 24x24x4 brain with 6 artery voxels in slice 1 and 8 sinus voxels in slice 2."""
    rng = np.random.default_rng(1)
    vol = np.broadcast_to(TISSUE(times), (24, 24, 4, times.size)).copy()
    arteries = np.array(
        [(10, 10, 1), (10, 11, 1), (11, 10, 1), (11, 11, 1), (12, 10, 1), (12, 11, 1)]
    )
    veins = np.array([(20, 3 + j, 2) for j in range(8)])
    for n, (i, j, k) in enumerate(arteries):
        vol[i, j, k] = artery(times) * (0.6 + 0.08 * n)  # partial volume differs per voxel
    for i, j, k in veins:
        vol[i, j, k] = VEIN(times)
    vol += rng.normal(0.0, noise_hu, vol.shape)
    return vol.astype(np.float32), arteries, veins


def as_set(voxels: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in voxels}


def test_features_of_a_triangle_are_hand_computed():
    t = np.arange(7, dtype=np.float64)
    curve = np.array([0, 0, 10, 20, 10, 0, 0], dtype=np.float64)
    f = curve_features(t, curve[None])
    assert f.peak_hu[0] == 20 and f.ttp_s[0] == 3
    assert f.fwhm_s[0] == pytest.approx(2.0)  # half maximum 10 reached at t = 2 and t = 4
    assert f.arrival_s[0] == pytest.approx(1.2)  # 10 % of 20 = 2 HU on the 0 -> 10 HU rise
    assert f.area_hus[0] == pytest.approx(40.0) and f.m1_s[0] == pytest.approx(3.0)
    assert f.falls_back[0]


def test_selection_finds_known_artery_and_sinus():
    vol, arteries, veins = synthetic_volume()
    brain = np.ones(vol.shape[:3], dtype=bool)
    sel = select_aif_vof(vol, TIME, brain, n_voxels=3)
    assert as_set(sel.aif_voxels) <= as_set(arteries)
    # soft choice of the 3 highest peaks (least partial volume): they hold most of the weight
    top3 = {tuple(v) for v in arteries[3:]}
    held = sum(w for v, w in zip(sel.aif_voxels, sel.aif_weights, strict=True) if tuple(v) in top3)
    assert held > 0.8 and sel.aif_weights.sum() == pytest.approx(1.0)
    assert as_set(sel.vof_voxels) <= as_set(veins)
    assert sel.scores["aif_ttp_s"] == pytest.approx(ARTERY.time_to_peak_s, abs=1.0)
    assert sel.flags == []


def test_selection_leaves_out_steps_and_air_that_motion_makes():
    """After motion correction, voxels at the edge of bone or air "enhance" by hundreds of HU as
    the head moves: a step that rises before the artery and stays up, or a late rise. They have
    the largest areas; the VOF must still be the sinus. Without the venous arrival, trough and
    lag rules the VOF takes them; without the air rule, a bright rise at the edge of air takes
    the AIF."""
    vol, arteries, veins = synthetic_volume()
    edge_step = np.clip((TIME - 2.0) / 6.0, 0.0, 1.0) * 320.0  # rises from t = 2 s, stays up
    late_rise = np.clip((TIME - 28.0) / 4.0, 0.0, 1.0) * 400.0  # a jerk at the end of the scan
    steps = [(3, 3 + j, 3) for j in range(6)]
    late = [(6, 3 + j, 3) for j in range(6)]
    for voxel in steps:
        vol[voxel] = edge_step + vol[voxel]
    for voxel in late:
        vol[voxel] = late_rise + vol[voxel]
    brain = np.ones(vol.shape[:3], dtype=bool)
    assert as_set(select_aif_vof(vol, TIME, brain, n_voxels=3).vof_voxels) <= as_set(veins)
    # air at the head's edge (baseline -400 HU) into which tissue moves: a bolus-like rise
    baseline = np.full(vol.shape[:3], 35.0, dtype=np.float32)
    airy = [(15, 18 + j, 0) for j in range(4)]
    for voxel in airy:
        vol[voxel] = 2.0 * VEIN(TIME) + vol[voxel]
        baseline[voxel] = -400.0
    raw = vol + baseline[..., None]
    fooled = select_aif_vof(raw, TIME, brain, n_voxels=3, baseline_hu=baseline)
    assert (as_set(fooled.aif_voxels) | as_set(fooled.vof_voxels)) & as_set(airy)
    chosen = select_aif_vof(raw, TIME, brain, n_voxels=3, baseline_hu=baseline, min_baseline_hu=-15)
    assert as_set(chosen.aif_voxels) <= as_set(arteries)
    assert as_set(chosen.vof_voxels) <= as_set(veins)


def test_the_vof_is_searched_outside_the_brain_where_the_sinus_runs(monkeypatch) -> None:
    """The sinus lies outside the brain along the skull: inside the brain only partial-volumed
    vein voxels (half the vein), outside it the whole sinus and, with a larger area, a voxel
    that bone moved into twice (two flat-topped bumps, not an outflow of the AIF). Searched in
    the brain alone the VOF is half the vein; with the venous region it is the sinus, and the
    bumps are left out by their shape (without that rule they would be taken)."""
    vol, _, veins = synthetic_volume()
    brain = np.ones(vol.shape[:3], dtype=bool)
    brain[18:, :, :] = False  # the sinus (i = 20) lies outside the brain
    partial = [(8, 16 + j, 3) for j in range(8)]
    for voxel in partial:
        vol[voxel] = 0.5 * VEIN(TIME) + TISSUE(TIME)
    bumps = np.where(((TIME >= 12) & (TIME < 15)) | ((TIME >= 22) & (TIME < 26)), 400.0, 0.0)
    moved = [(22, 12 + j, 1) for j in range(4)]
    for voxel in moved:
        vol[voxel] = bumps + TISSUE(TIME)
    assert venous_likeness(TIME, ARTERY(TIME), bumps[None])[0] < 0.8
    area = VEIN.area()
    inside = select_aif_vof(vol, TIME, brain, n_voxels=3)
    assert as_set(inside.vof_voxels) <= as_set(partial)
    assert np.trapezoid(inside.vof_hu, TIME) == pytest.approx(0.5 * area, rel=0.1)
    region = np.ones_like(brain)
    chosen = select_aif_vof(vol, TIME, brain, n_voxels=3, venous_region=region)
    assert as_set(chosen.vof_voxels) <= as_set(veins)
    assert np.trapezoid(chosen.vof_hu, TIME) == pytest.approx(area, rel=0.05)
    assert as_set(chosen.aif_voxels) == as_set(inside.aif_voxels)  # the AIF's search is the same
    only_moved = np.zeros_like(brain)
    only_moved[tuple(np.array(moved).T)] = True
    assert select_aif_vof(vol, TIME, brain, n_voxels=3, venous_region=only_moved).vof_hu is None
    monkeypatch.setattr(aif_module, "venous_likeness", lambda t, a, c: np.ones(len(c)))
    fooled = select_aif_vof(vol, TIME, brain, n_voxels=3, venous_region=region)
    assert as_set(fooled.vof_voxels) & as_set(moved)


def test_venous_likeness_scores_an_outflow_of_the_aif_and_not_a_motion_step():
    """An AIF delayed and dispersed (what a vein carries) scores near 1 on uniform and
    non-uniform frames; a step that stays up (bone moved in) does not."""
    fine = np.arange(0.0, 60.0, 0.1)
    kernel = np.exp(-np.arange(0.0, 30.0, 0.1) / 4.0)
    outflow = np.convolve(ARTERY(fine - 3.0), kernel / kernel.sum())[: fine.size]
    for times in (
        np.arange(0.0, 60.0, 1.0),
        np.r_[np.arange(0.0, 24.0, 1.0), np.arange(24.0, 60.0, 3.0)],
    ):
        vein = np.interp(times, fine, outflow)
        step = np.clip((times - 10.0) / 4.0, 0.0, 1.0) * 300.0
        r = venous_likeness(times, ARTERY(times), np.stack([vein, step]))
        assert r[0] > 0.99 and r[1] < 0.8, r


def test_selection_finds_the_artery_when_the_scan_ends_before_its_bolus_falls_back():
    """A short scan of a wide bolus: the arterial curves have fallen only to 69 % of their peak
    by the last frame, 5 s after it. They are still the AIF, flagged ``truncated_bolus``."""
    times = np.arange(21, dtype=np.float64)
    wide = GammaVariate(t0_s=5.0, alpha=4.0, beta_s=2.5, peak_hu=200.0)  # FWHM 12 s
    vol, arteries, _ = synthetic_volume(times=times, artery=wide)
    sel = select_aif_vof(vol, times, np.ones(vol.shape[:3], dtype=bool), n_voxels=3)
    assert as_set(sel.aif_voxels) <= as_set(arteries)
    assert "truncated_bolus" in quality_flags(times, sel.aif_hu)


def test_selection_changes_little_when_the_data_change_a_little():
    vol, _, _ = synthetic_volume()
    brain = np.ones(vol.shape[:3], dtype=bool)
    before = select_aif_vof(vol, TIME, brain, n_voxels=3)
    extra = np.random.default_rng(7).normal(0.0, 0.3, vol.shape)  # rounding-sized
    for changed in (np.round(vol), vol + 1e-5, vol + extra):
        after = select_aif_vof(changed.astype(np.float32), TIME, brain, n_voxels=3)
        assert np.abs(after.aif_hu - before.aif_hu).max() < 0.02 * before.aif_hu.max()
        assert np.corrcoef(after.aif_hu, before.aif_hu)[0, 1] > 0.9999


def test_selection_reports_its_confidence():
    vol, _, _ = synthetic_volume()
    sel = select_aif_vof(vol, TIME, np.ones(vol.shape[:3], dtype=bool), n_voxels=3)
    assert 0.0 <= sel.scores["confidence"] <= 1.0 and -1.0 <= sel.scores["runner_up_r"] <= 1.0
    assert selection_confident(sel.scores)
    # a near tie with differently shaped runners-up is not confident; a tie between curves of
    # the AIF's own shape is (swapping them changes nothing)
    assert not selection_confident({"confidence": 0.01, "runner_up_r": 0.9})
    assert selection_confident({"confidence": 0.01, "runner_up_r": 0.995})
    assert selection_confident({"confidence": 0.3, "runner_up_r": 0.5})


def test_selection_handles_non_uniform_frames():
    times = np.r_[np.arange(0, 20, 1.0), np.arange(20, 50, 2.0)]
    vol, arteries, veins = synthetic_volume(times=times)
    sel = select_aif_vof(vol, times, np.ones(vol.shape[:3], dtype=bool), n_voxels=4)
    assert as_set(sel.aif_voxels) <= as_set(arteries)
    assert as_set(sel.vof_voxels) <= as_set(veins)


def test_selection_without_any_bolus_fails_clearly():
    flat = np.random.default_rng(0).normal(0, 1, (6, 6, 2, 30)).astype(np.float32)
    with pytest.raises(PerfusionError, match="arterial"):
        select_aif_vof(flat, np.arange(30.0), np.ones((6, 6, 2), dtype=bool))


def test_roi_curve_is_in_plane_mean_clipped_to_image():
    vol = np.zeros((4, 4, 2, 3))
    vol[..., 0] = np.arange(16).reshape(4, 4)[..., None]
    curve, voxels = roi_curve(vol, (0, 0, 1), radius_vox=1)
    assert as_set(voxels) == {(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)}
    assert curve[0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    with pytest.raises(PerfusionError, match="outside"):
        roi_curve(vol, (4, 0, 0))


def test_partial_volume_scale_recovers_a_known_factor_despite_truncation():
    vein = VEIN(TIME) + 20.0 * (TIME > 25)  # recirculation plateau biases raw areas
    scaled, scale = correct_partial_volume(TIME, 0.25 * ARTERY(TIME), vein)
    assert scale == pytest.approx(4.0 * VEIN.area() / ARTERY.area(), rel=0.05)
    np.testing.assert_allclose(scaled, 0.25 * ARTERY(TIME) * scale)


def test_weaker_vof_is_not_downscaled_and_is_flagged():
    _, scale = correct_partial_volume(TIME, ARTERY(TIME), 0.5 * ARTERY(TIME))
    assert scale == 1.0
    assert "vof_weaker_than_aif" in quality_flags(TIME, ARTERY(TIME), 0.5 * ARTERY(TIME))
    # within what two gamma-variate areas can tell apart: unscaled, and not flagged
    assert correct_partial_volume(TIME, ARTERY(TIME), 0.9 * ARTERY(TIME))[1] == 1.0
    assert quality_flags(TIME, ARTERY(TIME), 0.9 * ARTERY(TIME)) == []


def test_quality_flags_each_fire_on_their_fault():
    assert quality_flags(TIME, ARTERY(TIME)) == []
    truncated = GammaVariate(t0_s=28.0, alpha=3.0, beta_s=2.0, peak_hu=200.0)(TIME)
    assert {"truncated_bolus", "late_arrival"} <= set(quality_flags(TIME, truncated))
    assert "low_peak" in quality_flags(TIME, ARTERY(TIME) / 20.0)
    noisy = ARTERY(TIME) + np.random.default_rng(0).normal(0, 60, TIME.size)
    assert "noisy_baseline" in quality_flags(TIME, noisy)


def test_every_quality_flag_has_a_finding_and_advice():
    """A flag the warnings do not know would reach the user as its bare name."""
    truncated = GammaVariate(t0_s=28.0, alpha=3.0, beta_s=2.0, peak_hu=200.0)(TIME)
    raised = set(quality_flags(TIME, truncated / 20.0, truncated / 40.0))
    assert {"truncated_bolus", "late_arrival", "low_peak", "vof_weaker_than_aif"} <= raised
    assert raised <= set(INPUT_FLAGS)
    ((finding, advice),) = input_warnings(["vof_scale_implausible (3.40 > 3, not applied)"])
    assert finding.endswith("factor (3.40 > 3, not applied)") and "partial volume" in advice
    assert input_warnings(["something_new"]) == [("something new", "check the inputs")]


def _rapid_cases() -> dict[str, np.ndarray]:
    rows = defaultdict(list)
    with RAPID_TSV.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            rows[row["case"]].append([float(row[k]) for k in ("t_s", "aif_hu", "vof_hu")])
    return {case: np.array(values).T for case, values in rows.items()}


@pytest.mark.skipif(not RAPID_TSV.is_file(), reason="shared ISLES 2018 RAPID curves absent")
def test_real_rapid_curves_pass_the_selection_criteria():
    scales = []
    for case, (t, aif, vof) in _rapid_cases().items():
        fa, fv = curve_features(t, aif[None]), curve_features(t, vof[None])
        flags = quality_flags(t, aif, vof)
        assert arterial_shape_ok(fa, t)[0] or "low_peak" in flags, case
        assert venous_shape_ok(fa, fv, min_peak_hu=0.0)[0], case
        assert venous_likeness(t, aif, vof[None])[0] > 0.9, case  # lowest 0.94
        scales.append(vof_scale(t, aif, vof))
    scales = np.array(scales)
    # RAPID's AIFs are raw (partial-volume) curves: the VOF is larger in all but ~1 case
    assert np.all(np.isfinite(scales)) and np.all(scales > 0.8) and np.all(scales < 25.0)
    assert np.mean(scales < 1.0) < 0.05 and 2.0 < np.median(scales) < 8.0
