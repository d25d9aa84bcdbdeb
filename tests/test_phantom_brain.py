"""Brain phantom: truth consistency, the noiseless scan against a closed form, determinism,
the written folder contract and the generation time of the default case."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy.special import gammainc

from perfusion.cli import main as cli_main
from perfusion.gamma_variate import GammaVariate
from perfusion.io import read_case, read_curves
from perfusion.phantom import PhantomConfig, make_cohort, make_patient
from perfusion.units import cbf_to_flow, cbv_from_cbf_mtt, tmax_box


def tiny(**overrides) -> PhantomConfig:
    """32 x 32 x 8 voxels (7.2 x 7.2 x 20 mm) x 40 frames: the whole head, coarsely."""
    values = {"shape": [32, 32, 8], "n_frames": 40, "noise_hu": 0.0, "lesion_probability": 1.0,
              "lesion_volume_ml": [60.0, 150.0]}  # fmt: skip
    values.update(overrides)
    return PhantomConfig(**values)


@pytest.fixture(scope="module")
def patient():
    return make_patient(tiny(), 0)


def test_truth_maps_are_consistent(patient) -> None:
    t = patient.truth
    perfused = t["cbf"] > 0
    assert perfused.sum() > 1000
    np.testing.assert_allclose(
        t["cbv"][perfused], cbv_from_cbf_mtt(t["cbf"], t["mtt"])[perfused], rtol=1e-4
    )
    np.testing.assert_allclose(t["tmax"], tmax_box(t["delay"], t["mtt"]) * perfused, atol=1e-4)
    core, penumbra = t["core"], t["penumbra"]
    assert core.any() and penumbra.any() and not (core & penumbra).any()
    assert (t["tmax"][core | penumbra] > 6.0).all()
    healthy = perfused & ~core & ~penumbra
    assert (t["tmax"][healthy] < 6.0).all()
    # core: CBF and CBV strongly reduced; penumbra: CBV preserved, CBF reduced (median ratios)
    gm_like = healthy & (t["cbf"] > 40)
    assert np.median(t["cbf"][core]) < 0.35 * np.median(t["cbf"][healthy])
    assert np.median(t["cbv"][penumbra]) > 0.6 * np.median(t["cbv"][healthy])
    assert np.median(t["mtt"][penumbra]) > 1.4 * np.median(t["mtt"][gm_like])
    lesion = patient.meta["lesion"]
    voxel_ml = float(np.prod(patient.meta["spacing_mm"])) / 1000
    assert lesion["core_ml"] == pytest.approx(core.sum() * voxel_ml)


def test_a_heterogeneous_core_varies_its_flow_and_keeps_its_transit_time(patient) -> None:
    """core_cbf_sd scales each core voxel's CBF and CBV by one smooth field (MTT, delay and the
    rest of the brain as without it), so that part of the core lies above rCBF 30 %."""
    varied = make_patient(tiny(core_cbf_sd=0.6), 0).truth
    t, core = patient.truth, patient.truth["core"]
    assert np.array_equal(varied["core"], core)
    for name in ("mtt", "delay", "tmax"):
        np.testing.assert_allclose(varied[name], t[name], rtol=1e-5)
    np.testing.assert_array_equal(varied["cbf"][~core], t["cbf"][~core])
    ratio = varied["cbf"][core] / t["cbf"][core]
    np.testing.assert_allclose(varied["cbv"][core] / t["cbv"][core], ratio, rtol=1e-4)
    assert 0.3 < np.std(np.log(ratio)) < 0.9  # the field's log-SD, 0.6, over a few blobs
    healthy = np.median(t["cbf"][(t["cbf"] > 0) & ~core & ~t["penumbra"]])
    assert (t["cbf"][core] < 0.3 * healthy).mean() > (varied["cbf"][core] < 0.3 * healthy).mean()


def _parametric_cumulative(meta: dict, t: np.ndarray) -> np.ndarray:
    """Closed-form running integral of the parametric AIF (two gamma variates + plateau)."""
    first, recirc = GammaVariate(**meta["first_pass"]), GammaVariate(**meta["recirculation"])
    # plateau * P(3, x) integrates to 4 (x P(3, x) - 3 P(4, x))
    x = np.clip((t - first.t0_s - 4.0) / 4.0, 0.0, None)
    plateau = meta["plateau_hu"] * 4.0 * (x * gammainc(3.0, x) - 3.0 * gammainc(4.0, x))
    return first.cumulative(t) + recirc.cumulative(t) + plateau


def test_noiseless_scan_follows_eq1_in_closed_form(patient) -> None:
    t = patient.truth
    delta = patient.case.ctp_hu - t["baseline_hu"][..., None]
    pick = np.argwhere((t["cbf"] > 5) & (t["vessels"] == 0))[::97][:40]
    cum = lambda s: _parametric_cumulative(patient.meta["inputs"], s)  # noqa: E731
    times = patient.case.frame_times_s
    for i, j, k in pick:
        flow, mtt, delay = cbf_to_flow(t["cbf"][i, j, k]), t["mtt"][i, j, k], t["delay"][i, j, k]
        expected = flow * (cum(times - delay) - cum(times - delay - mtt))
        np.testing.assert_allclose(delta[i, j, k], expected, atol=0.01 + 2e-3 * expected.max())
    meta = patient.meta["inputs"]
    x = np.clip((times - meta["first_pass"]["t0_s"] - 4.0) / 4.0, 0.0, None)
    aif = GammaVariate(**meta["first_pass"])(times) + GammaVariate(**meta["recirculation"])(times)
    np.testing.assert_allclose(
        patient.true_curves.aif_hu, aif + meta["plateau_hu"] * gammainc(3.0, x), atol=1e-6
    )


def test_same_seed_same_patient_other_seed_differs(patient) -> None:
    again = make_patient(tiny(), 0)
    np.testing.assert_array_equal(again.case.ctp_hu, patient.case.ctp_hu)
    other = make_patient(tiny(seed=1), 0)
    assert not np.array_equal(other.truth["baseline_hu"], patient.truth["baseline_hu"])
    assert not np.array_equal(other.truth["core"], patient.truth["core"])
    second = make_patient(tiny(), 1)
    assert second.meta["pose"]["rotation_deg_xyz"] != pytest.approx(
        patient.meta["pose"]["rotation_deg_xyz"]
    )


def test_noise_level_and_measured_aif(patient) -> None:
    noisy = make_patient(tiny(noise_hu=10.0, noise_texture="white"), 0)
    residual = noisy.case.ctp_hu - patient.case.ctp_hu
    assert residual.std() == pytest.approx(10.0, rel=0.02)
    # aif.tsv is the mean ΔHU of the recorded ROI voxels: partial volume (occupancy) times the
    # true AIF plus the rest of the voxel's tissue, which adds at most ~20 HU
    rois = patient.meta["curves"]
    delta = patient.case.ctp_hu - patient.truth["baseline_hu"][..., None]
    roi = np.asarray(rois["aif_voxels"])
    np.testing.assert_allclose(
        patient.case.curves.aif_hu, delta[tuple(roi.T)].mean(axis=0), atol=1e-4
    )
    occupancy = rois["aif_mean_occupancy"]
    assert 0.01 < occupancy < 1.0
    scaled = occupancy * patient.true_curves.aif_hu.max()
    assert scaled - 1.0 < patient.case.curves.aif_hu.max() < scaled + 20.0


def test_measured_curves_of_a_moving_head_are_those_of_a_still_one(patient) -> None:
    """With motion, aif.tsv holds the curves a user measures on perfectly motion-corrected
    frames: the still head's, plus the moved scan's noise at the ROI voxels."""
    moving = make_patient(tiny(motion=True), 0)
    assert not np.allclose(moving.case.ctp_hu, patient.case.ctp_hu)
    for name in ("aif_hu", "vof_hu"):
        still = getattr(patient.case.curves, name)
        np.testing.assert_allclose(getattr(moving.case.curves, name), still, atol=1e-3)
    noisy = make_patient(tiny(motion=True, noise_hu=10.0), 0)
    noise = (noisy.case.curves.aif_hu - patient.case.curves.aif_hu)[1:]
    assert 0.5 < noise.std() < 10.0  # the mean of a 10-voxel ROI's noise


def test_cohort_writes_readable_cases(tmp_path) -> None:
    cfg = tiny(n=2, noise_hu=5.0, lesion_probability=0.5)
    make_cohort(cfg, tmp_path, progress=False)
    case = read_case(tmp_path / "patient-001")
    assert (
        case.ctp_hu.shape == (32, 32, 8, 40) and case.curves is not None and case.core is not None
    )
    truth = tmp_path / "patient-001" / "truth"
    for name in ("cbf", "cbv", "mtt", "delay", "tmax", "core", "penumbra", "vessels"):
        assert (truth / f"{name}.nii.gz").is_file()
    meta = json.loads((truth / "meta.json").read_text())
    assert {"pose", "lesion", "curves", "inputs", "config"} <= set(meta)
    assert len(meta["curves"]["aif_voxels"]) == cfg.curve_roi_voxels
    assert read_curves(truth / "curves.tsv").aif_hu.max() > 100


def test_cli_write_aif_false_and_bad_kind(tmp_path, capsys) -> None:
    args = [f"out={tmp_path}", "n=1", "shape=[32,32,8]", "n_frames=30", "write_aif=false"]
    assert cli_main(["phantom", *args]) == 0
    assert not (tmp_path / "patient-000" / "aif.tsv").exists()
    assert (tmp_path / "phantom.yaml").is_file()
    assert cli_main(["phantom", f"out={tmp_path}", "kind=liver"]) == 2
    assert "kind 'liver' unknown" in capsys.readouterr().err
    assert cli_main(["phantom", f"out={tmp_path}", "shape=[32,32]"]) == 2
    assert "config key 'shape'" in capsys.readouterr().err


def test_default_case_generates_in_seconds() -> None:
    cfg = PhantomConfig()  # 128 x 128 x 32 x 60 frames, correlated noise
    start = time.process_time()
    patient = make_patient(cfg, 0)
    seconds = time.process_time() - start
    assert patient.case.ctp_hu.shape == (128, 128, 32, 60)
    # ~3 CPU-s; CPU time, not wall time, so a busy machine does not fail it
    assert seconds < 30.0, f"default phantom took {seconds:.1f} CPU-s"
