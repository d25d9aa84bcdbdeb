"""Accuracy benchmark: aggregation, report, and the quick mode end to end (bSVD only)."""

from __future__ import annotations

import functools
import json
import math
import shutil

import numpy as np
import pytest

from experiments.bench import BenchConfig, aif_source, markdown, run_accuracy, summarise
from perfusion.config import load_config
from perfusion.io import load_nifti


def test_summarise_means_per_method_and_noise_ignoring_missing_values():
    rows = [
        {"method": "bsvd", "noise_hu": 5.0, "cbf_r": 0.8, "tmax_mae": 1.0},
        {"method": "bsvd", "noise_hu": 5.0, "cbf_r": 0.6, "tmax_mae": float("nan")},
        {"method": "nlr", "noise_hu": 5.0, "cbf_r": 0.5, "tmax_mae": 2.0},
    ]
    means = {m["method"]: m for m in summarise(rows)}
    assert means["bsvd"]["n"] == 2 and means["bsvd"]["cbf_r"] == pytest.approx(0.7)
    assert means["bsvd"]["tmax_mae"] == pytest.approx(1.0)
    assert means["nlr"]["cbf_r"] == pytest.approx(0.5)


def test_markdown_has_the_command_and_one_row_per_method():
    result = {
        "command": "perfusion bench noise_hu=[5.0]",
        "aif_source": "parametric",
        "config": {"n_patients": 1},
        "means": [{"method": "bsvd", "noise_hu": 5.0, "cbf_r": 0.81234, "tmax_mae": math.nan}],
    }
    text = markdown(result)
    assert "`perfusion bench noise_hu=[5.0]`" in text and "## noise sigma 5 HU" in text
    row = next(line for line in text.splitlines() if line.startswith("| bsvd"))
    assert "| 0.812 |" in row and "n/a" in row


def test_missing_aif_file_falls_back_to_parametric(tmp_path):
    assert aif_source(str(tmp_path / "absent.tsv")) == "parametric"
    present = tmp_path / "curves.tsv"
    present.write_text("case\tt_s\taif_hu\tvof_hu\n")
    assert aif_source(str(present)) == str(present)


def quick_config(tmp_path, *overrides: str) -> BenchConfig:
    """The quick benchmark writing under ``tmp_path``, with ``overrides``."""
    paths = [f"out={tmp_path}/results", f"work_dir={tmp_path}"]
    return load_config(BenchConfig, ["bench.yaml"], ["config=bench/quick", *paths, *overrides])


def test_quick_mode_writes_tables_for_a_baseline(tmp_path):
    cfg = quick_config(tmp_path, "methods=[bsvd]")
    result = run_accuracy(cfg, "perfusion bench config=bench/quick methods=[bsvd]")
    saved = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert saved["means"][0]["method"] == "bsvd" and saved["means"][0]["noise_hu"] == 5.0
    assert saved["means"][0]["aif"] == "supplied"
    row = result["rows"][0]
    assert -1.0 <= row["cbf_r"] <= 1.0 and 0.0 <= row["tmax6_dice"] <= 1.0 and row["n_voxels"] > 0
    assert "| bsvd |" in (tmp_path / "results" / "README.md").read_text()
    # the case's tissue contrast to noise, and the flag only below the threshold
    assert row["tissue_cnr"] > 1.0 and row["low_tissue_contrast"] is False
    assert "low_tissue_contrast" not in (tmp_path / "results" / "README.md").read_text()
    # resumable: the second run reuses the phantom and the fit
    again = run_accuracy(cfg, "again")
    assert again["rows"][0]["cbf_r"] == row["cbf_r"]
    strict = quick_config(tmp_path, "methods=[bsvd]")
    strict.fit_overrides = [*strict.fit_overrides, "preprocess.min_tissue_cnr=1000"]
    flagged = run_accuracy(strict, "strict")["rows"][0]
    assert flagged["low_tissue_contrast"] is True and flagged["cbf_r"] == row["cbf_r"]
    assert "sigma 5 patient-000" in (tmp_path / "results" / "README.md").read_text()


def test_variants_are_extra_labelled_rows(tmp_path):
    """An ablation row per variant: its own overrides and method, labelled by its name."""
    cfg = quick_config(
        tmp_path,
        "methods=[bsvd]",
        "variants={again: [method=bsvd], integral: [loss.variant=integral, ode_prefit_steps=5]}",
    )
    result = run_accuracy(cfg, "variants")
    assert [r["method"] for r in result["rows"]] == ["bsvd", "again", "integral"]
    assert result["rows"][2]["fit_time_ratio"] > 0  # against the bsvd row on the same case
    assert result["rows"][0]["fit_time_ratio"] == 1.0
    assert (tmp_path / "fits-noise5" / "integral" / "patient-000" / "cbf.nii.gz").is_file()
    saved = (tmp_path / "fits-noise5" / "integral" / "patient-000" / "config.yaml").read_text()
    assert "variant: integral" in saved and "ode_prefit_steps: 5" in saved


def test_fit_time_ratios_only_between_fits_of_one_run(tmp_path):
    """A fit reused from an earlier run keeps its ratio to a bSVD fit of that same run, and has
    none to a bSVD fit made again in this one (their times were not taken side by side)."""
    cfg = quick_config(tmp_path, "methods=[bsvd]", "variants={again: [method=bsvd]}")
    first = run_accuracy(cfg, "first")["rows"]
    assert first[1]["fit_time_ratio"] > 0 and first[0]["fit_run"] == first[1]["fit_run"] != ""
    reused = run_accuracy(cfg, "reused")["rows"]
    assert reused[1]["fit_time_ratio"] == first[1]["fit_time_ratio"]
    shutil.rmtree(tmp_path / "fits-noise5" / "bsvd")
    mixed = run_accuracy(cfg, "mixed")["rows"]
    assert mixed[0]["fit_run"] != mixed[1]["fit_run"] and mixed[1]["fit_time_ratio"] is None
    assert "| again |" in (tmp_path / "results" / "README.md").read_text()


def test_sppinn_is_fitted_and_scored_on_the_lesion_slice(tmp_path):
    """SPPINN fits a slice subset: the one holding most true Tmax > 6 s tissue, named in the
    row and in accuracy.md, so its region Dice is not that of two empty regions."""
    cfg = quick_config(tmp_path, "methods=[sppinn]", "sppinn_slices=1")
    row = run_accuracy(cfg, "sppinn")["rows"][0]
    truth = tmp_path / "phantom-noise5" / "patient-000"
    tmax = np.asarray(load_nifti(truth / "truth" / "tmax.nii.gz").dataobj)
    brain = np.asarray(load_nifti(truth / "brainmask.nii.gz").dataobj) > 0
    per_slice = ((tmax > 6.0) & brain).sum(axis=(0, 1))
    assert per_slice.max() > 0, "the quick phantom should hold a lesion"
    (z,) = map(int, row["slices_z"].split(","))
    assert per_slice[z] >= 0.5 * per_slice.max()  # tissue mask, not brain mask, picks it
    assert row["wall_time_extrapolated"]
    assert f"sppinn sigma 5 patient-000: z {z}" in (tmp_path / "results" / "README.md").read_text()


def test_a_prepared_case_is_made_again_when_its_case_changed(tmp_path):
    """A cohort made again with other data (another AIF source, say) must not be fitted from
    the folders prepared from the old one; the same case keeps its prepared folder."""
    import nibabel as nib

    import experiments.bench as bench

    cfg = quick_config(tmp_path, "methods=[bsvd]")
    case = sorted(bench.make_phantoms(cfg, cfg.noise_hu[0]).glob("patient-*"))[0]
    fit_cfg = bench.fit_config(cfg, "bsvd", None)
    folder = bench.prepare_once(cfg, case, tmp_path / "work", fit_cfg)
    made = (folder / "prepared.json").stat().st_mtime_ns
    assert bench.prepare_once(cfg, case, tmp_path / "work", fit_cfg) == folder
    assert (folder / "prepared.json").stat().st_mtime_ns == made
    scan = nib.load(case / "ctp.nii.gz")
    changed = scan.get_fdata(dtype=np.float32) * 1.5
    nib.save(nib.Nifti1Image(changed, scan.affine, scan.header), case / "ctp.nii.gz")
    bench.prepare_once(cfg, case, tmp_path / "work", fit_cfg)
    assert (folder / "prepared.json").stat().st_mtime_ns != made


def test_a_failing_case_is_a_row_not_a_crash(tmp_path, monkeypatch):
    """Automatic AIF selection can fail on a case: the bench records it and goes on."""
    import experiments.bench as bench
    from perfusion.errors import PerfusionError

    real = bench.prepare_once

    def failing(cfg, case_dir, work, fit_cfg, auto=False):
        if auto:
            raise PerfusionError("automatic AIF selection: no voxel with an arterial bolus shape")
        return real(cfg, case_dir, work, fit_cfg, auto)

    monkeypatch.setattr(bench, "prepare_once", failing)
    cfg = quick_config(tmp_path, "methods=[bsvd]", "auto_aif=true")
    result = run_accuracy(cfg, "auto")
    assert [r["aif"] for r in result["rows"]] == ["supplied", "auto"]
    assert "error" in result["rows"][1] and len(result["means"]) == 1
    text = (tmp_path / "results" / "README.md").read_text()
    assert "Failed (left out of the means)" in text and "no voxel with an arterial" in text


def test_a_fit_is_reused_when_nothing_that_shapes_its_maps_changed():
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import effective_settings

    def settings(*overrides):
        return effective_settings(load_config(FitConfig, ["fit.yaml"], list(overrides)))

    assert settings("method=bsvd", "stop.target=fit") == settings("method=bsvd", "steps=5")
    assert settings("method=bsvd", "preprocess.smooth_sigma_mm=0") != settings("method=bsvd")
    assert settings("stop.rule=none", "stop.target=fit") == settings("stop.rule=none")
    assert settings("stop.target=fit") != settings("stop.target=sd")  # the noise rule reads it
    assert settings("report=false") == settings("report=true")
    assert settings("threads=2", "preprocess.threads=2", "device=cpu") == settings("threads=1")
    no_prefit = ("ode_prefit_steps=0", "ode_prefit_voxels=10")  # a pre-fit that never runs
    assert settings(*no_prefit) == settings("ode_prefit_steps=0")
    assert settings(*no_prefit, "loss.anchor=1") == settings("ode_prefit_steps=0", "loss.anchor=1")
    assert settings("ode_prefit_steps=0", "ode_prefit_median=[1,1,1]") == settings(
        "ode_prefit_steps=0"
    )
    assert settings("ode_prefit_steps=0", "loss.anchor=1", "ode_prefit_median=[1,1,1]") != settings(
        "ode_prefit_steps=0", "loss.anchor=1"
    )  # the anchor pulls toward the median-filtered grid start
    assert settings("ode_prefit_voxels=10") != settings()
    assert settings("bsvd.taper=0.3") == settings()  # only bSVD reads its section
    assert settings("method=bsvd", "bsvd.taper=0.3") != settings("method=bsvd")
    assert settings("method=bsvd", "bsvd.chunk=10") == settings("method=bsvd")
    assert settings("method=bsvd", "bsvd.taper=0", "bsvd.chunk=10") == settings(
        "method=bsvd", "bsvd.taper=0"
    )  # Wu's hard cut at any chunk size is the fit from before the section


def test_a_fit_from_a_checkpoint_is_reused_only_for_the_weights_it_started_from(tmp_path):
    import os

    import torch
    from omegaconf import OmegaConf

    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import finished_fit

    ckpt = tmp_path / "init.ckpt"
    torch.save({"state_dict": {}, "sha256": "aaa"}, ckpt)
    cfg = load_config(FitConfig, ["fit.yaml"], [f"init={ckpt}"])
    fit = tmp_path / "fit"
    fit.mkdir()
    OmegaConf.save(cfg, fit / "config.yaml")
    summary = {"method": "resppinn", "init": {"path": str(ckpt), "sha256": "aaa"}}
    (fit / "summary.json").write_text(json.dumps(summary))
    assert finished_fit(fit, cfg) == summary
    torch.save({"state_dict": {}, "sha256": "bbb"}, ckpt)  # retrained at the same path
    os.utime(ckpt, ns=(1, ckpt.stat().st_mtime_ns + 10**9))
    assert finished_fit(fit, cfg) is None
    (fit / "summary.json").write_text(json.dumps({"method": "resppinn"}))  # weights unrecorded
    assert finished_fit(fit, cfg) is None


def test_the_start_priors_block_keys_leave_a_fit_without_a_learnt_prior_alone() -> None:
    """With a flat start prior (``ode_prefit_prior_iterations=0``) the local prior's block and
    share change nothing, so they stay out of the digest: such a fit cached before the keys
    existed is still found after a default sets them."""
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import effective_settings

    def settings(*overrides: str) -> dict:
        return effective_settings(load_config(FitConfig, ["fit.yaml"], list(overrides)))

    local = ["ode_prefit_prior_block_mm=[7.2,7.2,10]", "ode_prefit_prior_share=0.3"]
    flat = "ode_prefit_prior_iterations=0"
    assert settings(flat, *local) == settings(flat, "ode_prefit_prior_block_mm=null")
    learnt = settings("ode_prefit_prior_iterations=10", *local)
    assert learnt["ode_prefit_prior_block_mm"] == [7.2, 7.2, 10.0]
    assert learnt["ode_prefit_prior_share"] == 0.3


def test_centring_leaves_a_fit_without_the_baseline_refit_alone() -> None:
    """``baseline_refit_centred`` only acts on the offsets ``baseline_refit`` removes: a fit
    without them (the recipe rows ranked before it) keeps its cached result whatever the key."""
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import effective_settings

    def settings(*overrides: str) -> dict:
        return effective_settings(load_config(FitConfig, ["fit.yaml"], list(overrides)))

    off = "baseline_refit=false"
    assert settings(off, "baseline_refit_centred=true") == settings(
        off, "baseline_refit_centred=false"
    )
    on = "baseline_refit=true"
    assert settings(on, "baseline_refit_centred=true") != settings(
        on, "baseline_refit_centred=false"
    )


def _cached_fit(tmp_path, overrides: list[str], spacing, without: str | None = None):
    """A finished fit folder of ``fit.yaml`` with ``overrides`` (its config.yaml lacking the key
    ``without``, as one written before it) on voxels of ``spacing``; (folder, its config)."""
    import nibabel as nib
    import numpy as np
    from omegaconf import OmegaConf

    from perfusion.fitting.config import FitConfig

    old = load_config(FitConfig, ["fit.yaml"], overrides)
    fit = tmp_path / "fit"
    fit.mkdir()
    saved = OmegaConf.to_container(old)
    saved.pop(without, None)
    OmegaConf.save(OmegaConf.create(saved), fit / "config.yaml")
    (fit / "summary.json").write_text(json.dumps({"method": old.method}))
    mask = nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.diag([*spacing, 1.0]))
    nib.save(mask, fit / "tissuemask.nii.gz")
    return fit, old


@pytest.mark.parametrize(("spacing", "found"), [((1.8, 1.8, 5.0), True), ((3.6, 3.6, 10.0), False)])
def test_a_start_block_in_voxels_is_the_fit_of_the_same_block_in_mm(tmp_path, spacing, found):
    """A fit cached with the prior's block in voxels ([4, 4, 2]) stands for today's block in mm
    ([7.2, 7.2, 10]) on a grid where that is the same number of voxels, and on no other."""
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import finished_fit

    voxels = ["ode_prefit_prior_block=[4,4,2]", "ode_prefit_prior_block_mm=null"]
    fit, old = _cached_fit(tmp_path, voxels, spacing)
    today = load_config(FitConfig, ["fit.yaml"], [])
    assert today.ode_prefit_prior_block_mm == [7.2, 7.2, 10.0]
    assert (finished_fit(fit, today) is not None) is found
    assert finished_fit(fit, old) is not None


@pytest.mark.parametrize(("spacing", "found"), [((1.8, 1.8, 5.0), True), ((0.9, 0.9, 5.0), False)])
def test_a_fit_before_start_mm_stands_where_it_merges_no_voxel(tmp_path, spacing, found):
    """A fit cached before ``ode_prefit_start_mm`` (every voxel its own start) is today's
    default fit on the 1.8 x 1.8 x 5 mm grid, where [1.8, 1.8, 5] merges no voxel, and not on
    a 0.9 mm grid, where it merges 2 x 2."""
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import finished_fit

    start = "ode_prefit_start_mm"
    fit, _ = _cached_fit(tmp_path, [f"{start}=null"], spacing, without=start)
    today = load_config(FitConfig, ["fit.yaml"], [])
    assert today.ode_prefit_start_mm == [1.8, 1.8, 5.0]
    assert (finished_fit(fit, today) is not None) is found


@pytest.mark.parametrize(
    ("key", "before", "after", "method"),
    [  # after: the new behaviour (None: fit.yaml's value)
        ("ode_prefit_schedule", "ode_prefit_schedule=constant", None, "resppinn"),
        ("ode_prefit_eps", "ode_prefit_eps=1e-15", None, "resppinn"),
        ("bsvd", "bsvd.taper=0", None, "bsvd"),
        ("stop.average", "stop.average=0", "stop.average=0.995", "resppinn"),
        (
            "ode_prefit_median_times",
            "ode_prefit_median_times=null",
            "ode_prefit_median_times=[7,7,3]",
            "resppinn",
        ),
        (
            "ode_prefit_prior_iterations",
            "ode_prefit_prior_iterations=0",
            "ode_prefit_prior_iterations=10",
            "resppinn",
        ),
        ("ode_prefit_tmax", "ode_prefit_tmax=posterior", "ode_prefit_tmax=likelihood", "resppinn"),
        (
            "ode_prefit_prior_block",
            "ode_prefit_prior_block=null",
            "ode_prefit_prior_block=[4,4,2]",
            "resppinn",
        ),
        ("stop.min_steps", "stop.min_steps=0", "stop.min_steps=100", "resppinn"),
        ("ode_prefit_prior_block_mm", "ode_prefit_prior_block_mm=null", None, "resppinn"),
        ("ode_prefit_start_mm", "ode_prefit_start_mm=null", None, "resppinn"),
    ],
)
def test_an_added_key_at_its_former_behaviour_keeps_cached_fits(
    tmp_path, key, before, after, method
):
    from omegaconf import OmegaConf

    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.reuse import ADDED_KEYS, effective_settings, finished_fit

    old = load_config(FitConfig, ["fit.yaml"], [f"method={method}", before])
    fit = tmp_path / "fit"
    fit.mkdir()
    saved = OmegaConf.to_container(old)
    *sections, name = key.split(".")
    holder = saved
    for section in sections:
        holder = holder[section]
    del holder[name]  # written before the key existed
    OmegaConf.save(OmegaConf.create(saved), fit / "config.yaml")
    (fit / "summary.json").write_text(json.dumps({"method": method}))
    assert key in ADDED_KEYS
    assert name not in functools.reduce(dict.get, sections, effective_settings(old))
    assert finished_fit(fit, old) is not None  # the same fit as before the key
    new = load_config(FitConfig, ["fit.yaml"], [f"method={method}", *([after] if after else [])])
    assert finished_fit(fit, new) is None  # the new behaviour is another fit
    saved["stop"]["averaging"] = 0.5  # a key this version does not know: another version's fit
    OmegaConf.save(OmegaConf.create(saved), fit / "config.yaml")
    assert finished_fit(fit, old) is None
