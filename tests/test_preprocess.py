"""prepare_case and its steps on a tiny synthetic head with known anatomy, bolus and vessels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perfusion.cli import main as cli_main
from perfusion.errors import PerfusionError
from perfusion.gamma_variate import GammaVariate
from perfusion.io import Case, InputCurves, read_case, write_case
from perfusion.masks import venous_search_region
from perfusion.prepared import PreparedCase
from perfusion.preprocess import (
    PreprocessConfig,
    baseline_weights,
    bolus_arrival_s,
    effective_frames,
    prepare_case,
    smooth_in_plane,
    smooth_in_time,
    subtract_baseline,
)

SHAPE = (28, 28, 4)
SPACING = (2.0, 2.0, 5.0)
ARTERY = (14, 6, 1)  # anterior, on the midline
VEIN = (14, 22, 2)  # posterior (sinus)
AIF = GammaVariate(t0_s=6.0, alpha=3.0, beta_s=1.5, peak_hu=300.0)
VOF = GammaVariate(t0_s=9.0, alpha=3.0, beta_s=2.0, peak_hu=400.0)
TISSUE = GammaVariate(t0_s=8.0, alpha=3.0, beta_s=2.0, peak_hu=15.0)


def anatomy() -> dict[str, np.ndarray]:
    """Masks of the synthetic head: in-plane disc of brain (radius 9 voxels) in a 2-voxel skull."""
    x, y = np.meshgrid(np.arange(SHAPE[0]) - 13.5, np.arange(SHAPE[1]) - 13.5, indexing="ij")
    r = np.sqrt(x**2 + y**2)
    brain = np.repeat((r < 9.0)[..., None], SHAPE[2], axis=2)
    skull = np.repeat(((r >= 9.0) & (r < 11.0))[..., None], SHAPE[2], axis=2)
    csf = np.zeros(SHAPE, dtype=bool)
    csf[11:17, 12:16, 1:3] = True  # a ventricle
    vessels = np.zeros(SHAPE, dtype=bool)
    vessels[ARTERY] = vessels[VEIN] = True
    return {"brain": brain, "skull": skull, "csf": csf, "vessels": vessels}


def make_case(times: np.ndarray, noise_hu: float = 0.0, curves: InputCurves | None = None) -> Case:
    """CTP (HU) of the synthetic head: tissue 35 HU + TISSUE bolus, CSF 5 HU, vessels 40 HU +
    AIF/VOF, skull 1000 HU, air -1000 HU."""
    m = anatomy()
    base = np.full(SHAPE, -1000.0)
    base[m["brain"]] = 35.0
    base[m["csf"]] = 5.0
    base[m["skull"]] = 1000.0
    ctp = np.repeat(base[..., None], len(times), axis=3)
    tissue = m["brain"] & ~m["csf"] & ~m["vessels"]
    ctp[tissue] += TISSUE(times)
    ctp[ARTERY] += AIF(times)
    ctp[VEIN] += VOF(times)
    ctp += np.random.default_rng(1).normal(0.0, noise_hu, ctp.shape)
    affine = np.diag([*SPACING, 1.0])
    return Case(
        path=Path("synthetic"),
        ctp_hu=ctp.astype(np.float32),
        affine=affine,
        frame_times_s=times,
        curves=curves,
    )


def fast_config(**changes) -> PreprocessConfig:
    cfg = PreprocessConfig(
        motion_correction=False,
        standard_frame=False,
        aif_voxel=list(ARTERY),
        vof_voxel=list(VEIN),
        roi_radius_vox=0,
    )
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_bolus_arrival_and_baseline_on_a_hand_made_curve() -> None:
    times = np.arange(30.0)
    # 40 HU until 10 s, then a straight rise to 340 HU at 20 s: 10 % of the 300 HU rise is at 11 s
    curve = np.where(times < 10, 40.0, np.minimum(40.0 + 30.0 * (times - 10), 340.0))
    assert bolus_arrival_s(times, curve) == pytest.approx(11.0)
    # frames at 0..9 s fully, none from 10 s on (it may hold contrast)
    assert baseline_weights(times, 11.0) == pytest.approx(np.r_[np.ones(10), np.zeros(20)])
    # arrival between frame times: the frame between one and two intervals before is weighted
    assert baseline_weights(times, 11.25)[9:12] == pytest.approx([1.0, 0.25, 0.0])
    assert effective_frames(baseline_weights(times, 11.25)) == pytest.approx(10.25**2 / 10.0625)
    assert baseline_weights(times, 11.0, requested=4).sum() == 4
    ctp = np.broadcast_to(curve, (2, 2, 1, 30)).astype(np.float32)
    delta, baseline = subtract_baseline(ctp, baseline_weights(times, 11.0))
    assert baseline == pytest.approx(40.0)
    assert delta[0, 0, 0, :11] == pytest.approx(np.zeros(11))
    assert delta[0, 0, 0, 20] == pytest.approx(300.0)


def test_baseline_moves_continuously_with_the_arrival() -> None:
    times = np.arange(30.0)
    ctp = np.random.default_rng(0).normal(40.0, 5.0, (3, 3, 2, 30)).astype(np.float32)
    _, before = subtract_baseline(ctp, baseline_weights(times, 10.999))
    _, after = subtract_baseline(ctp, baseline_weights(times, 11.001))
    assert np.abs(after - before).max() < 0.01  # no jump of a whole frame's noise / n


def test_masks_baseline_and_curves_on_a_synthetic_case() -> None:
    times = np.arange(0.0, 45.0, 1.5)
    case = make_case(times, noise_hu=1.0)
    # one artery and one vein voxel here: average one voxel each
    prepared = prepare_case(case, fast_config(aif_voxel=None, vof_voxel=None, aif_n_voxels=1))
    m = anatomy()
    assert np.array_equal(prepared.brain, m["brain"])  # skull and air out, ventricle filled in
    # CSF: the ventricle's core for sure, its edges mostly (light smoothing against noise)
    assert not (prepared.csf & ~m["csf"]).any()
    assert prepared.csf.sum() >= 0.75 * m["csf"].sum()
    assert np.array_equal(prepared.vessels, m["vessels"])
    # AIF arrival: gamma variate 10 % crossing lies shortly after t0 = 6 s, within one frame
    assert AIF.t0_s <= prepared.bolus_arrival_s <= AIF.t0_s + 1.5
    weights = baseline_weights(times, prepared.bolus_arrival_s)
    assert prepared.meta["baseline_frames"] == pytest.approx(effective_frames(weights), abs=1e-3)
    # baseline subtracted: tissue enhancement follows the known curve (noise 1 HU)
    tissue_curve = prepared.tissue_hu[prepared.tissue].mean(axis=0)
    assert np.abs(tissue_curve - TISSUE(times)).max() < 1.0
    assert prepared.meta["aif"]["source"] == "auto"
    assert prepared.meta["aif"]["aif_voxels"] == [list(ARTERY)]
    assert prepared.meta["aif"]["vof_voxels"] == [list(VEIN)]
    # VOF partial-volume correction scales the AIF to the VOF's first-pass area
    assert prepared.meta["aif"]["vof_scale"] == pytest.approx(VOF.area() / AIF.area(), rel=0.03)
    capped = prepare_case(
        case, fast_config(aif_voxel=None, vof_voxel=None, aif_n_voxels=1, max_vof_scale=1.5)
    )
    assert capped.meta["aif"]["vof_scale"] == 1.0
    assert capped.meta["aif"]["flags"][-1].startswith("vof_scale_implausible")


def test_user_aif_voxel_overrides_the_file_curve() -> None:
    times = np.arange(0.0, 45.0, 1.5)
    wrong = InputCurves(times, 40.0 + 0.5 * AIF(times), None)
    case = make_case(times, curves=wrong)
    from_file = prepare_case(
        case, fast_config(aif_voxel=None, vof_voxel=None, vof_correction=False)
    )
    assert from_file.meta["aif"]["source"] == "file"
    assert from_file.aif_hu.max() == pytest.approx(150.0, rel=0.02)
    file_aif_user_vof = prepare_case(case, fast_config(aif_voxel=None, vof_correction=False))
    assert file_aif_user_vof.vof_hu == pytest.approx(VOF(times), abs=1e-3)
    prepared = prepare_case(case, fast_config(vof_correction=False))
    assert prepared.meta["aif"]["source"] == "roi"
    assert prepared.aif_hu == pytest.approx(AIF(times), abs=1e-3)  # radius 0: the voxel itself
    assert prepared.meta["aif"]["aif_voxels"] == [list(ARTERY)]


def test_file_curves_on_other_times_are_resampled_and_baseline_subtracted() -> None:
    times = np.arange(0.0, 45.0, 1.5)
    fine = np.arange(0.0, 46.0, 0.5)
    case = make_case(times, curves=InputCurves(fine, 20.0 + AIF(fine), 30.0 + VOF(fine)))
    prepared = prepare_case(case, fast_config(aif_voxel=None, vof_voxel=None, vof_correction=False))
    assert prepared.aif_hu == pytest.approx(AIF(times), abs=1e-6)
    assert prepared.vof_hu == pytest.approx(VOF(times), abs=1e-6)


def test_non_uniform_frame_times() -> None:
    times = np.r_[np.arange(0.0, 30.0, 1.0), np.arange(32.0, 60.0, 3.0)]
    prepared = prepare_case(make_case(times), fast_config(temporal_sigma_s=1.0))
    assert prepared.frame_times_s == pytest.approx(times)
    assert AIF.t0_s <= prepared.bolus_arrival_s <= AIF.t0_s + 1.0
    assert prepared.aif_hu.shape == times.shape
    # a CSF voxel stays flat; the tissue curve keeps its shape after 1 s temporal smoothing
    assert np.abs(prepared.tissue_hu[12, 13, 1]).max() < 1e-4
    tissue_curve = prepared.tissue_hu[prepared.tissue].mean(axis=0)
    assert np.argmax(tissue_curve) == np.argmax(TISSUE(times))


def test_smoothing_preserves_a_constant_field_and_uses_real_times() -> None:
    mask = np.zeros((12, 12, 2), dtype=bool)
    mask[2:9, 3:11, :] = True
    mask[5, 5, 0] = False
    field = np.full((12, 12, 2, 3), 7.0, dtype=np.float32)
    field[~mask] = 500.0  # outside the mask: must neither leak in nor change
    smoothed = smooth_in_plane(field, mask, np.array([1.0, 1.0, 5.0]), sigma_mm=2.0)
    assert smoothed[mask] == pytest.approx(np.full((mask.sum(), 3), 7.0), abs=1e-4)
    assert np.array_equal(smoothed[~mask], field[~mask])
    times = np.array([0.0, 1.0, 3.0])
    curve = np.array([[[[0.0, 1.0, 0.0]]]], dtype=np.float32)
    out = smooth_in_time(curve, times, 1.0)
    # row 0 weights exp(0), exp(-1/2), exp(-9/2), normalised; only t = 1 s carries a value
    w = np.exp([0.0, -0.5, -4.5])
    assert out[0, 0, 0, 0] == pytest.approx(w[1] / w.sum(), rel=1e-5)
    assert smooth_in_time(np.full((1, 1, 1, 3), 4.0, np.float32), times, 1.0) == pytest.approx(4.0)


def test_empty_brain_mask_names_the_case() -> None:
    times = np.arange(0.0, 20.0, 2.0)
    case = Case(
        path=Path("cases/air-only"),
        ctp_hu=np.full((8, 8, 2, 10), -1000.0, np.float32),
        affine=np.eye(4),
        frame_times_s=times,
    )
    with pytest.raises(PerfusionError, match="air-only: empty brain mask"):
        prepare_case(case, fast_config(aif_voxel=None, vof_voxel=None))


def test_voxels_that_left_the_field_of_view_are_left_out(monkeypatch) -> None:
    """A voxel that motion correction filled in some frame (it had left the scan's field of view)
    has no curve: it leaves the brain, and the volume is reported."""
    import perfusion.preprocess as preprocess
    from perfusion.registration import MotionResult

    times = np.arange(0.0, 30.0, 1.0)
    case = make_case(times, noise_hu=1.0)
    covered = np.ones(SHAPE, dtype=bool)
    covered[..., 3] = False  # the top slice left the slab in some frame
    still = np.zeros((times.size, 6))

    def corrected(ctp_hu, *args, **kwargs):
        return MotionResult(ctp_hu, still, 0, np.ones(times.size, bool), covered)

    monkeypatch.setattr(preprocess, "motion_correct", corrected)
    prepared = prepare_case(case, fast_config(motion_correction=True))
    brain_ml = anatomy()["brain"][..., 3].sum() * np.prod(SPACING) / 1000.0
    assert not prepared.brain[..., 3].any() and prepared.brain[..., :3].any()
    assert prepared.meta["motion"]["outside_fov_ml"] == pytest.approx(brain_ml)


def test_an_aif_without_a_baseline_is_refused_as_aif_tsv_would_be() -> None:
    """An AIF already rising at the first frame has no baseline: preprocessing refuses it with
    the rule that reads aif.tsv, so a prepared folder it writes can always be read back."""
    times = np.arange(0.0, 30.0, 1.0)
    case = make_case(times, noise_hu=1.0)
    case.ctp_hu[ARTERY] = 40.0 + AIF(times + 9.0)  # the bolus began 3 s before the scan
    with pytest.raises(PerfusionError, match="synthetic: AIF never rises above its baseline "):
        prepare_case(case, fast_config())


def test_a_field_of_view_filled_with_tissue_is_not_registered() -> None:
    """No skull and no air (a block phantom, a zero-filled cropped scan): nothing rigid to
    register, so motion correction is skipped and says why; with a skull it runs."""
    times = np.arange(0.0, 30.0, 1.0)
    case = make_case(times, noise_hu=5.0)
    block = case.ctp_hu - case.ctp_hu[..., :1] + 35.0  # every voxel tissue-like at baseline
    block[anatomy()["skull"]] = 35.0
    filled = Case(case.path, block, case.affine, times)
    cfg = fast_config(motion_correction=True, motion_iterations=5)
    meta = prepare_case(filled, cfg).meta
    assert "no bone" in meta["motion"]["skipped"] and "params" not in meta["motion"]
    meta = prepare_case(case, cfg).meta
    assert "skipped" not in meta["motion"] and len(meta["motion"]["params"]) == times.size
    with pytest.raises(PerfusionError, match=r"synthetic: reference_frame 30 outside 0\.\.29"):
        prepare_case(case, fast_config(motion_correction=True, reference_frame=30))


def test_cli_writes_a_loadable_prepared_case(tmp_path: Path, capsys) -> None:
    times = np.arange(0.0, 24.0, 1.5)
    write_case(tmp_path / "case", make_case(times, noise_hu=1.0))
    out = tmp_path / "prepared"
    code = cli_main(
        [
            "preprocess",
            str(tmp_path / "case"),
            f"out={out}",
            "motion_iterations=10",
            "aif_voxel=[14,6,1]",
            "smooth_sigma_mm=2.0",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().err
    for name in (
        "prepared.json",
        "tissue.nii.gz",
        "aif.tsv",
        "motion.tsv",
        "motion.png",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    loaded = PreparedCase.load(out)
    direct = prepare_case(
        read_case(tmp_path / "case"),
        fast_config(
            motion_correction=True,
            motion_iterations=10,
            standard_frame=True,
            vof_voxel=None,
            roi_radius_vox=1,
            smooth_sigma_mm=2.0,
        ),
    )
    assert loaded.tissue_hu == pytest.approx(direct.tissue_hu, abs=1e-3)
    assert loaded.aif_hu == pytest.approx(direct.aif_hu, abs=1e-3)
    assert np.array_equal(loaded.tissue, direct.tissue)
    assert loaded.scan_to_standard == pytest.approx(direct.scan_to_standard, abs=1e-6)
    assert np.abs(loaded.meta["motion"]["params"]).max() < 0.2  # a still head: no motion found
    assert "aif_voxel" in (out / "config.yaml").read_text()


def test_automatic_curves_survive_rounding_to_whole_hu(tmp_path: Path) -> None:
    """A small phantom with AIF, VOF and brain mask chosen automatically (as for every real
    scan): rounding the scan to whole HU (a DICOM round trip) leaves the input curves and the
    bSVD CBF map nearly unchanged."""
    from dataclasses import replace

    from omegaconf import OmegaConf

    from perfusion.baselines.bsvd import fit_bsvd
    from perfusion.config import load_config
    from perfusion.phantom import make_cohort
    from perfusion.phantom.config import PhantomConfig

    overrides = ["n=3", "shape=[48,48,8]", "n_frames=30"]
    cfg = load_config(PhantomConfig, ["phantom.yaml"], overrides)
    make_cohort(OmegaConf.to_object(cfg), tmp_path, progress=False)
    case = replace(read_case(tmp_path / "patient-002"), brainmask=None, curves=None)
    config = fast_config(aif_voxel=None, vof_voxel=None)
    before = prepare_case(case, config)
    rounded = prepare_case(replace(case, ctp_hu=np.round(case.ctp_hu)), config)
    assert before.meta["aif"]["source"] == "auto" and before.meta["aif"]["confident"]
    assert np.corrcoef(before.aif_hu, rounded.aif_hu)[0, 1] > 0.999
    both = before.tissue & rounded.tissue
    cbf = fit_bsvd(before)["cbf"][both], fit_bsvd(rounded)["cbf"][both]
    assert np.corrcoef(*cbf)[0, 1] > 0.99


def test_low_tissue_contrast_is_flagged_and_reported(tmp_path: Path, capsys) -> None:
    """Preprocessing records the tissue's contrast to noise; below ``min_tissue_cnr`` it flags
    the scan, and a fit of the flagged case says so in one line naming the case."""
    from perfusion.fitting.run import _warn_inputs

    times = np.arange(0.0, 45.0, 1.5)
    case = make_case(times, noise_hu=2.0)
    clear = prepare_case(case, fast_config())
    contrast = clear.meta["contrast"]
    # the synthetic tissue peaks at 15 ΔHU, far above its smoothed noise
    assert contrast["peak_hu"] == pytest.approx(TISSUE(times).max(), rel=0.1)
    assert contrast["cnr"] == pytest.approx(contrast["peak_hu"] / contrast["noise_sd_hu"], rel=1e-3)
    assert contrast["cnr"] > 1.0 and "low_tissue_contrast" not in clear.meta["aif"]["flags"]
    _warn_inputs(clear, tmp_path)
    assert capsys.readouterr().err == ""
    flagged = prepare_case(case, fast_config(min_tissue_cnr=2.0 * contrast["cnr"]))
    assert "low_tissue_contrast" in flagged.meta["aif"]["flags"]
    _warn_inputs(flagged, tmp_path)
    line = capsys.readouterr().err
    assert (
        line.count("\n") == 1 and str(tmp_path.resolve()) in line and "low tissue contrast" in line
    )


def test_a_scan_that_ends_with_the_bolus_is_warned_about(tmp_path: Path, capsys) -> None:
    """The AIF peaks at 10.5 s and the scan ends at 13 s: before fitting, one line names the
    case and says that the bolus is truncated."""
    from perfusion.fitting.run import _warn_inputs

    prepared = prepare_case(make_case(np.arange(0.0, 14.0)), fast_config())
    assert "truncated_bolus" in prepared.meta["aif"]["flags"]
    _warn_inputs(prepared, tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert any(
        e.startswith(f"warning: {tmp_path.resolve()}: truncated bolus (") and "unreliable" in e
        for e in err
    )


def test_the_venous_search_region_reaches_the_sinus_not_bone_air_or_the_scalp() -> None:
    """Brain (radius 9 voxels of 2 mm), a 6 mm skull, the scalp beyond it: within 5 mm of the
    brain the region takes a sinus voxel set into the skull's inner table (blood, 40 HU), never
    bone or air, and not the scalp's soft tissue 6 mm out; reach 0 is the brain alone."""
    x, y = np.meshgrid(np.arange(SHAPE[0]) - 13.5, np.arange(SHAPE[1]) - 13.5, indexing="ij")
    r = np.repeat(np.sqrt(x**2 + y**2)[..., None], SHAPE[2], axis=2)
    brain, skull, scalp = r < 9.0, (r >= 9.0) & (r < 12.0), (r >= 12.0) & (r < 13.5)
    pre = np.select([brain, skull, scalp], [35.0, 1000.0, 40.0], -1000.0)
    sinus = (14, 23, 2)  # the skull's inner voxel row, next to the brain's edge at y = 22
    assert skull[sinus] and brain[14, 22, 2]
    pre[sinus] = 40.0
    region = venous_search_region(brain, pre, np.array(SPACING), 5.0)
    assert region[sinus] and (region & brain).sum() == brain.sum()
    assert not (region & (pre >= 1000.0)).any() and not (region & (pre <= -1000.0)).any()
    assert not (region & scalp).any()
    assert (venous_search_region(brain, pre, np.array(SPACING), 0.0) == brain).all()
