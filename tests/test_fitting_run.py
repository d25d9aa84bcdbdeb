"""``fit_case`` end to end on a tiny analytic case: the output contract, recovery of known
parameters, and bad input (init path, architecture, divergence) leaving no maps behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import TISSUES, make_prepared, tissue_labels  # noqa: E402

from perfusion.config import load_config  # noqa: E402
from perfusion.errors import PerfusionError  # noqa: E402
from perfusion.fields import build_fields  # noqa: E402
from perfusion.fitting import module as module_mod  # noqa: E402
from perfusion.fitting.config import FitConfig  # noqa: E402
from perfusion.fitting.init import init_overrides  # noqa: E402
from perfusion.fitting.maps import MAP_NAMES, MASK_FILES  # noqa: E402
from perfusion.fitting.run import fit_case, read_history  # noqa: E402

SMALL = [
    "sampling.batch_size=512",
    "sampling.voxels=128",
    "ode_prefit_voxels=512",
    "fields.encoding.n_levels=4",
    "fields.encoding.log2_hashmap_size=12",
    "fields.encoding.finest_resolution=64",
    "progress_bar=false",
    "tracking.enabled=false",
    "report=false",
]


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fitcase") / "prepared"
    prepared = make_prepared()
    prepared.meta["aif"] = {"source": "auto", "confidence": 0.4, "flags": []}
    prepared.save(folder)
    return folder


def small_cfg(*extra: str):
    return load_config(FitConfig, ["fit.yaml"], [*SMALL, *extra])


def test_output_contract(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fit"
    summary = fit_case(case_dir, small_cfg("steps=30", "report=true", "stop.rule=none"), out)
    prepared = make_prepared()
    for name in (*MAP_NAMES, "tissuemask", "fitqc"):
        image = nib.load(out / f"{name}.nii.gz")
        assert image.shape == prepared.shape
        np.testing.assert_allclose(image.affine, prepared.affine)
        data = np.asarray(image.dataobj)
        assert data.dtype == (np.uint8 if name == "tissuemask" else np.float32)
        assert not data[~prepared.brain].any()  # zero outside the brain
    assert (np.asarray(nib.load(out / "cbf.nii.gz").dataobj)[prepared.brain] > 0).all()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["method"] == "resppinn" and saved["steps"] == 30 == summary["steps"]
    assert saved["tmax_convention"].startswith("tmax = delay + mtt/2")
    assert {"core_volume_ml", "tmax_gt_6s_volume_ml", "mismatch_ratio"} <= set(saved["defuse3"])
    # where the input curves came from, as preprocessing recorded it
    assert saved["preprocess"]["aif"] == {"source": "auto", "confidence": 0.4, "flags": []}
    # the lesion (Tmax 7 s, ~50 ml) lies at standard x < 0: the patient's left (RAS)
    assert saved["defuse3"]["lesion_found"] is True
    assert saved["affected_side"] == saved["defuse3"]["affected_side"] == "left"
    # the masks behind the summary's volumes, on the scan's grid, inside the counted tissue
    tissue = np.asarray(nib.load(out / "tissuemask.nii.gz").dataobj) > 0
    voxel_ml = prepared.voxel_volume_ml
    for key, name in MASK_FILES.items():
        image = nib.load(out / name)
        mask = np.asarray(image.dataobj)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        np.testing.assert_allclose(image.affine, prepared.affine)
        assert not mask[~tissue].any()
        volume = "core_volume_ml" if key == "core" else "tmax_gt_6s_volume_ml"
        assert mask.sum() > 0
        assert mask.sum() * voxel_ml == pytest.approx(saved["defuse3"][volume])
    tmax = np.asarray(nib.load(out / "tmax.nii.gz").dataobj)
    hypo = np.asarray(nib.load(out / MASK_FILES["hypo"]).dataobj) > 0
    np.testing.assert_array_equal(hypo, tissue & (tmax > 6.0))
    assert OmegaConf.load(out / "config.yaml").steps == 30
    assert (out / "report.png").stat().st_size > 10_000
    assert saved["history"] == "history.csv" and saved["stop"]["reason"].startswith(
        "stop.rule=none"
    )
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 31 and rows[-1].startswith("30,")
    assert {"sd_hu", "method", "expected_residual_rms_hu"} <= set(saved["noise"])


def test_lesion_free_case_names_no_side(tmp_path: Path) -> None:
    """The lesion's voxels given grey-matter curves: no core, no Tmax > 6 s, so no side."""
    prepared = make_prepared()
    labels = tissue_labels(prepared.shape)
    prepared.tissue_hu[labels == 3] = prepared.tissue_hu[labels == 1][0]
    prepared.save(tmp_path / "healthy")
    summary = fit_case(tmp_path / "healthy", small_cfg("steps=0"), tmp_path / "fit")
    assert summary["defuse3"]["lesion_found"] is False
    assert summary["affected_side"] is None and summary["defuse3"]["affected_side"] is None
    # it still says where it looked: the side perfusion segment finds in the same maps
    from perfusion.clinical import affected_side, standard_x_mm
    from perfusion.io import load_nifti

    cbf, tmax, tissue = (
        np.asarray(load_nifti(tmp_path / "fit" / f"{name}.nii.gz").dataobj)
        for name in ("cbf", "tmax", "tissuemask")
    )
    x = standard_x_mm(cbf.shape, prepared.affine, prepared.scan_to_standard)
    usable = tissue.astype(bool) & (cbf > 0)
    assert summary["defuse3"]["measured_side"] == affected_side(
        cbf, usable, x, tmax, require_both=True
    )


def test_curves_the_model_cannot_explain_are_left_out(tmp_path: Path) -> None:
    """Voxels whose curve jumps by 40 ΔHU halfway through (a moving bone edge) are counted in
    summary.json and left out of tissuemask.nii.gz and so of the volumes; the rest stay."""
    prepared = make_prepared()
    rng = np.random.default_rng(0)
    prepared.tissue_hu += rng.normal(0.0, 1.0, prepared.tissue_hu.shape).astype(np.float32)
    moved = np.zeros(prepared.shape, dtype=bool)
    moved[4:6, 4:6, 1] = True
    prepared.tissue_hu[moved, 10:] += 40.0
    prepared.save(tmp_path / "moved")
    summary = fit_case(tmp_path / "moved", small_cfg("method=bsvd"), tmp_path / "fit")
    kept = np.asarray(nib.load(tmp_path / "fit" / "tissuemask.nii.gz").dataobj) > 0
    assert summary["unexplained_voxels"] == int(moved.sum()) == int((prepared.tissue & ~kept).sum())
    assert not (kept & moved).any()


def test_recovers_known_parameters(case_dir: Path, tmp_path: Path) -> None:
    """Noiseless three-tissue case; 400 steps at lr 3e-3. Tolerances: grey and white CBF within
    10 %, Tmax within 0.5 s everywhere, and the lesion clearly below 30 % of grey-matter CBF."""
    fit_case(case_dir, small_cfg("steps=400", "optim.lr=0.003", "stop.rule=none"), tmp_path)
    labels = tissue_labels(make_prepared().shape)
    maps = {n: np.asarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) for n in ("cbf", "tmax")}
    median = {
        (name, tissue): float(np.median(maps[name][labels == i]))
        for name in maps
        for i, tissue in enumerate(TISSUES, start=1)
    }
    for tissue, (cbf, mtt, delay) in TISSUES.items():
        assert abs(median[("tmax", tissue)] - (delay + mtt / 2)) < 0.5, tissue
        if tissue != "lesion":
            assert median[("cbf", tissue)] == pytest.approx(cbf, rel=0.10), tissue
    assert median[("cbf", "lesion")] < 0.3 * median[("cbf", "grey")]


def test_missing_init_fails_before_writing(case_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PerfusionError, match="not found"):
        fit_case(case_dir, small_cfg("init=/nonexistent/init.ckpt"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_init_of_another_architecture_is_refused(case_dir: Path, tmp_path: Path) -> None:
    other = build_fields(small_cfg("fields.tac.hidden_features=8").fields, 3)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict(), "architecture": other.architecture()}, path)
    with pytest.raises(PerfusionError, match="architecture differs"):
        fit_case(case_dir, small_cfg(f"init={path}"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_init_with_steps_defaults_to_500_and_loads(case_dir: Path, tmp_path: Path) -> None:
    cfg = small_cfg()
    fields = build_fields(cfg.fields, 3)
    path = tmp_path / "same.ckpt"
    torch.save({"state_dict": fields.state_dict(), "architecture": fields.architecture()}, path)
    summary = fit_case(case_dir, small_cfg(f"init={path}", "steps=5"), tmp_path / "out")
    assert summary["init"]["path"] == str(path)
    from perfusion.fitting.config import resolve_steps

    assert resolve_steps(FitConfig(init=str(path))) == 500
    assert resolve_steps(FitConfig()) == 5000
    assert resolve_steps(load_config(FitConfig, ["fit.yaml"], [f"init={path}"])) == 1000


def test_diverging_fit_names_the_step_and_writes_nothing(
    case_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = module_mod.compute_losses

    def poisoned(fields, features, samples, batch, variant, anchor=0.0):
        losses = real(fields, features, samples, batch, variant, anchor)
        if fields.training and calls.append(1) is None and len(calls) == 4:
            losses.total = losses.total * float("nan")
        return losses

    calls: list[int] = []
    monkeypatch.setattr(module_mod, "compute_losses", poisoned)
    with pytest.raises(PerfusionError, match="step 3"):
        fit_case(case_dir, small_cfg("steps=10"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_method_and_key_fail_clearly(case_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PerfusionError, match="method"):
        fit_case(case_dir, small_cfg("method=magic"), tmp_path / "out")
    with pytest.raises(PerfusionError, match="stepz"):
        small_cfg("stepz=3")


def test_init_settings_are_repeated_and_overrides_warned(tmp_path: Path) -> None:
    path = tmp_path / "init.ckpt"
    fit = {"steps": 100, "sampling.batch_size": 2048, "preprocess.aif_voxel": None}
    torch.save({"state_dict": {}, "fit": fit}, path)
    applied, warnings = init_overrides(path, ["steps=300", "sampling.batch_size=2048"])
    recorded = ["steps=100", "sampling.batch_size=2048", "preprocess.aif_voxel=null"]
    assert applied[-3:] == recorded
    assert len(warnings) == 1 and warnings[0].startswith("steps=300 overrides")
    cfg = load_config(FitConfig, ["fit.yaml"], [*applied, "steps=300"])  # the user's word wins
    assert cfg.steps == 300 and cfg.sampling.batch_size == 2048 and cfg.preprocess.aif_voxel is None
    # settings this checkpoint predates take the value they had then, not today's defaults
    assert (cfg.loss.norm, cfg.ode_prefit_steps, cfg.fields.mtt_levels) == ("l1", 0, None)
    torch.save({"state_dict": {}, "fit": {**fit, "loss.norm": "l2"}}, path)
    cfg = load_config(FitConfig, ["fit.yaml"], init_overrides(path, [])[0])
    assert cfg.loss.norm == "l2" and cfg.fields.mtt_levels is None


def test_init_leaves_the_scans_motion_correction_to_the_fit(tmp_path: Path) -> None:
    """Meta-training phantoms do not move, so checkpoints record motion correction off; a fit
    from one keeps fit.yaml's (on), while the preprocessing that shapes the data is repeated."""
    path = tmp_path / "init.ckpt"
    recorded = {"steps": 100, "preprocess.motion_correction": False,
                "preprocess.motion_iterations": 7, "preprocess.smooth_sigma_mm": 1.5}  # fmt: skip
    torch.save({"state_dict": {}, "fit": recorded}, path)
    shipped = load_config(FitConfig, ["fit.yaml"], [])
    cfg = load_config(FitConfig, ["fit.yaml"], init_overrides(path, [])[0])
    assert shipped.preprocess.motion_correction and cfg.preprocess.motion_correction
    assert cfg.preprocess.motion_iterations == shipped.preprocess.motion_iterations != 7
    assert cfg.preprocess.smooth_sigma_mm == 1.5 and cfg.steps == 100


@pytest.mark.parametrize("preset", [["config=model/sppinn"], ["method=bsvd"]])
def test_other_methods_write_the_same_contract(case_dir: Path, tmp_path: Path, preset) -> None:
    summary = fit_case(case_dir, small_cfg(*preset, "steps=5"), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    written = {f"{n}.nii.gz" for n in (*MAP_NAMES, "tissuemask", "fitqc")} | set(
        MASK_FILES.values()
    )
    assert written | {"summary.json"} <= names
    assert summary["method"] == ("sppinn" if "sppinn" in preset[0] else "bsvd")
    if summary["method"] == "sppinn":
        assert summary["fits"] == make_prepared().shape[2]  # one 2-D fit per slice
    fitqc = np.asarray(nib.load(tmp_path / "fitqc.nii.gz").dataobj)
    assert np.isfinite(fitqc).all() and fitqc[make_prepared().tissue].max() > 0


def test_zero_steps_gives_the_prefits_maps(case_dir: Path, tmp_path: Path) -> None:
    """steps=0: no joint fit, the maps of f_ODE fitted to the smoothed grid start (noiseless case:
    Tmax within 1 s in every tissue, the lesion's CBF below half of grey matter's)."""
    summary = fit_case(case_dir, small_cfg("steps=0", "report=true"), tmp_path)
    assert summary["steps"] == 0 and (tmp_path / summary["history"]).read_text() == "step\n"
    assert (tmp_path / "report.png").is_file()
    labels = tissue_labels(make_prepared().shape)
    maps = {n: np.asarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) for n in ("cbf", "tmax")}
    for i, (tissue, (_, mtt, delay)) in enumerate(TISSUES.items(), start=1):
        assert abs(float(np.median(maps["tmax"][labels == i])) - (delay + mtt / 2)) < 1.0, tissue
    grey, lesion = (list(TISSUES).index(t) + 1 for t in ("grey", "lesion"))
    cbf = maps["cbf"]
    assert np.median(cbf[labels == lesion]) < 0.5 * np.median(cbf[labels == grey])
    with pytest.raises(PerfusionError, match="steps: -1"):
        fit_case(case_dir, small_cfg("steps=-1"), tmp_path / "bad")


@pytest.fixture(scope="module")
def noisy_dir(tmp_path_factory) -> Path:
    """The tiny case at 1 s frames (four pre-bolus frames) with white noise of SD 1 HU."""
    prepared = make_prepared(n_frames=40, interval_s=1.0)
    rng = np.random.default_rng(0)
    prepared.tissue_hu = prepared.tissue_hu + rng.normal(0, 1.0, prepared.tissue_hu.shape).astype(
        np.float32
    )
    folder = tmp_path_factory.mktemp("noisy") / "prepared"
    prepared.save(folder)
    return folder


def test_noise_rule_stops_at_the_noise_level(noisy_dir: Path, tmp_path: Path) -> None:
    summary = fit_case(noisy_dir, small_cfg("steps=1000", "stop.average=0"), tmp_path)
    noise, stop = summary["noise"], summary["stop"]
    assert noise["sd_hu"] == pytest.approx(1.0, rel=0.1)
    assert noise["method"] == "pre-bolus frame differences"
    assert stop["reason"].startswith("noise level: training residual RMS reached")
    assert 0 < summary["steps"] == stop["step"] < 1000
    # the maps stand for where the residual crossed the target, between the last two checks
    assert stop["step"] - 10 <= stop["maps_from_step"] <= stop["step"]
    history = read_history(tmp_path)
    last = np.mean([row["rms_hu"] for row in history[-5:]])
    assert last <= 1.15 * stop["target_rms_hu"]  # stopped where it reached the noise


def test_min_steps_holds_the_noise_rule_back(noisy_dir: Path, tmp_path: Path) -> None:
    free = fit_case(noisy_dir, small_cfg("steps=1000"), tmp_path / "free")
    assert free["steps"] < 300
    held = fit_case(noisy_dir, small_cfg("steps=1000", "stop.min_steps=300"), tmp_path / "held")
    assert 300 <= held["steps"] < 1000
    assert held["stop"]["reason"].startswith("noise level")
    capped = fit_case(noisy_dir, small_cfg("steps=40", "stop.min_steps=150"), tmp_path / "cap")
    assert capped["steps"] == 40


def test_maps_from_the_average_of_the_weights(noisy_dir: Path, tmp_path: Path) -> None:
    """stop.average: the maps come from the moving average, not from the last step."""
    summaries, cbf = {}, {}
    for average in ("0", "0.9"):
        summaries[average] = fit_case(
            noisy_dir, small_cfg("steps=40", "stop.rule=none", f"stop.average={average}"),
            tmp_path / average,
        )  # fmt: skip
        cbf[average] = np.asarray(nib.load(tmp_path / average / "cbf.nii.gz").dataobj)
    assert "maps_from" not in summaries["0"]["stop"]
    assert summaries["0.9"]["stop"]["maps_from"] == "average of the weights (decay 0.9)"
    assert summaries["0"]["steps"] == summaries["0.9"]["steps"] == 40  # the same steps ran
    assert not np.array_equal(cbf["0"], cbf["0.9"])


def test_averaged_weights_follow_torch_ema_rule() -> None:
    from types import SimpleNamespace

    from perfusion.fitting.stopping import AveragedWeights

    module = SimpleNamespace(fields=torch.nn.Linear(2, 1))
    callback = AveragedWeights(0.9)
    callback.on_train_start(None, module)
    start = module.fields.weight.detach().clone()
    expected = start.clone()
    for step in range(3):
        with torch.no_grad():
            module.fields.weight.add_(1.0)
        expected = 0.9 * expected + 0.1 * module.fields.weight.detach()
        callback.on_train_batch_end(None, module, None, None, step)
    callback.on_train_end(None, module)
    torch.testing.assert_close(module.fields.weight.detach(), expected)
    assert not torch.allclose(module.fields.weight, start + 3.0)  # not the last step's


def test_noiseless_case_stops_on_the_plateau_or_the_cap(case_dir: Path, tmp_path: Path) -> None:
    summary = fit_case(case_dir, small_cfg("steps=150", "stop.patience=3"), tmp_path)
    assert summary["stop"]["target_rms_hu"] is None or summary["noise"]["warnings"]
    reason = summary["stop"]["reason"]
    assert reason.startswith(("noise level: no relative improvement", "cap: steps=150", "noise"))


def test_heldout_rule_keeps_its_best_step(noisy_dir: Path, tmp_path: Path) -> None:
    summary = fit_case(noisy_dir, small_cfg("steps=60", "stop.rule=heldout"), tmp_path)
    stop = summary["stop"]
    assert stop["rule"] == "heldout" and stop["maps_from_step"] == summary["best_val_step"]
    checks = [r for r in read_history(tmp_path) if "val_rms_hu" in r]
    best = min(checks, key=lambda r: r["val_rms_hu"])
    assert int(best["step"]) == stop["maps_from_step"]


def test_same_seed_same_maps(noisy_dir: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        fit_case(noisy_dir, small_cfg("steps=40"), tmp_path / name)
    for name in MAP_NAMES:
        a = np.asarray(nib.load(tmp_path / "a" / f"{name}.nii.gz").dataobj)
        b = np.asarray(nib.load(tmp_path / "b" / f"{name}.nii.gz").dataobj)
        np.testing.assert_array_equal(a, b)


def test_one_fit_config_builder() -> None:
    """fit.yaml + init settings + overrides in one function; no command builds a FitConfig
    from the YAML itself (perfusion fit, bench, compare, segment, sweeps)."""
    from perfusion.config import load_config
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.init import build_fit_config

    built = build_fit_config(["steps=7", "config=model/sppinn"])
    assert built == load_config(FitConfig, ["fit.yaml", "model/sppinn.yaml"], ["steps=7"])
    root = Path(__file__).resolve().parents[1]
    builders = [
        path.relative_to(root).as_posix()
        for folder in ("perfusion", "experiments")
        for path in (root / folder).rglob("*.py")
        if "load_config(FitConfig" in path.read_text() or "with_init_settings(" in path.read_text()
    ]
    assert builders == ["perfusion/fitting/init.py"]


def test_low_tissue_contrast_withholds_the_defuse3_verdict(tmp_path: Path) -> None:
    """A scan flagged low_tissue_contrast keeps its volumes but gets no DEFUSE-3 verdict
    (None in summary.json, a dash in the report); the unflagged case gets True or False."""
    prepared = make_prepared()
    prepared.meta["aif"] = {"source": "auto", "flags": ["low_tissue_contrast"]}
    prepared.meta["contrast"] = {"peak_hu": 0.5, "noise_sd_hu": 2.0, "cnr": 0.25}
    prepared.save(tmp_path / "prepared")
    cfg = small_cfg("method=bsvd", "report=true")
    summary = fit_case(tmp_path / "prepared", cfg, tmp_path / "fit")
    assert summary["defuse3"]["defuse3_target_mismatch"] is None
    assert summary["defuse3"]["verdict_withheld"] == "low tissue contrast"
    assert summary["defuse3"]["tmax_gt_6s_volume_ml"] > 0
    assert summary["preprocess"]["contrast"]["cnr"] == 0.25
    assert (tmp_path / "fit" / "report.png").is_file()
    prepared.meta["aif"]["flags"] = []
    prepared.save(tmp_path / "clear")
    clear = fit_case(tmp_path / "clear", cfg, tmp_path / "fit-clear")
    assert clear["defuse3"]["defuse3_target_mismatch"] in (True, False)
    assert clear["defuse3"]["verdict_withheld"] is None


def test_a_cut_off_bolus_or_a_failed_fit_withholds_the_verdict() -> None:
    """A truncated bolus, or more than 5 % of the brain unphysical or of the tissue
    unexplained, leaves the maps no say on eligibility; a clean summary keeps it."""
    from perfusion.clinical import withheld_verdict

    clean = {
        "preprocess": {"aif": {"flags": ["late_arrival"]}},
        "brain_voxels": 100,
        "tissue_voxels": 80,
        "unphysical_voxels": {"any": 5},
        "unexplained_voxels": 4,
    }
    assert withheld_verdict(clean) is None
    cut = {**clean, "preprocess": {"aif": {"flags": ["truncated_bolus"]}}}
    assert withheld_verdict(cut) == "truncated bolus"
    failed = {**clean, "unphysical_voxels": {"any": 89}}
    assert withheld_verdict(failed) == "unphysical values in 89% of the brain (written as 0)"
    moved = {**clean, "unexplained_voxels": 8}
    assert withheld_verdict(moved).startswith("curves the model does not explain in 10%")
