"""The comparison: verdicts and aggregation on hand-made numbers, arms, slice views, history."""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from experiments.compare.config import (
    CompareConfig,
    HeldoutConfig,
    PriorArmConfig,
    ProbeConfig,
    SppinnArmConfig,
)
from experiments.compare.heldout import lesion_slices, spread_slices
from experiments.compare.report import prior_line, table_lines, write_summary
from experiments.compare.run import (
    _fit_folder_name,
    base_fit_config,
    build_arms,
    run_compare,
    thin_history,
)
from experiments.compare.verdicts import VerdictConfig, clearly_lower, judge, map_error, summarize
from perfusion.domain import Domain
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.fields.config import EncodingConfig, FieldsConfig
from perfusion.fitting.config import FitConfig
from perfusion.fitting.init import load_init, read_init
from perfusion.io import load_nifti, write_nifti_atomic
from perfusion.meta import MetaConfig, export_init
from perfusion.units import cbv_from_cbf_mtt, tmax_box

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import make_prepared, tissue_labels, truth_volumes  # noqa: E402

# (cbf_r, rcbf30_dice, tmax6_dice) per patient; map error = mean of (1 - each), by hand:
TABLE = {  # arm: (kind, steps, wall_s, [patient 0 metrics, patient 1 metrics][, budget, grid])
    "meta-init@100": ("meta", 100, 10.0, [(0.9, 0.8, 0.7), (0.9, 0.9, 0.9)]),  # 0.2, 0.1 -> 0.15
    "meta-init@default": ("meta", 1000, 4.0, [(0.9, 0.9, 0.8), (0.9, 0.9, 0.9)], "default", True),
    "meta-init@100-no-grid": (
        "meta",
        100,
        10.0,
        [(0.5, 0.5, 0.5), (0.6, 0.6, 0.6)],
        "steps",
        False,
    ),
    "random-init@100": ("random", 100, 10.0, [(0.5, 0.6, 0.7), (0.8, 0.7, 0.6)]),  # 0.4, 0.3
    "no-init@100": ("noinit", 100, 10.0, [(0.6, 0.6, 0.6), (0.7, 0.7, 0.7)]),  # 0.4, 0.3 -> 0.35
    "no-init@default": ("noinit", 1000, 4.0, [(0.7, 0.7, 0.7), (0.8, 0.8, 0.8)], "default", True),
    "no-init@500": ("noinit", 500, 50.0, [(0.9, 0.85, 0.8), (0.9, 0.9, 0.85)]),  # 0.15, 0.11667
}  # meta-init@default 0.133, 0.1 vs no-init@default 0.3, 0.2; no-grid 0.45 vs no-init@100 0.35


def records(table=TABLE) -> list[dict]:
    out = []
    for arm, (kind, steps, wall, patients, *how) in table.items():
        budget, grid = how or ("steps", True)
        for index, (r, d30, d6) in enumerate(patients):
            metrics = {
                "cbf_r": r,
                "rcbf30_dice": d30,
                "tmax6_dice": d6,
                "tmax_mae": 1.0,
                "cbf_mae": 5.0,
            }
            out.append(
                {"arm": arm, "kind": kind, "steps": steps, "patient": f"p{index}", "wall_s": wall,
                 "wall_full_s": wall, "extrapolated": False, "metrics": metrics,
                 "budget": budget, "grid_start": grid, "steps_run": 40 + index}
            )  # fmt: skip
    return out


def test_map_error_by_hand_and_missing_metric_is_nan():
    assert map_error({"cbf_r": 0.9, "rcbf30_dice": 0.8, "tmax6_dice": 0.7}) == pytest.approx(0.2)
    assert np.isnan(map_error({"cbf_r": 0.9, "rcbf30_dice": 0.8}))
    assert np.isnan(map_error({"cbf_r": float("nan"), "rcbf30_dice": 0.8, "tmax6_dice": 0.7}))


def test_summarize_averages_patients():
    rows = summarize(records())
    assert list(rows) == list(TABLE)
    assert rows["meta-init@100"]["errors"] == pytest.approx([0.2, 0.1])
    assert rows["meta-init@100"]["map_error"] == pytest.approx(0.15)
    assert rows["no-init@500"]["map_error"] == pytest.approx((0.15 + 0.35 / 3) / 2)
    assert rows["no-init@500"]["metrics"]["cbf_r"] == pytest.approx(0.9)
    assert rows["no-init@500"]["wall_s"] == pytest.approx(50.0)


def test_clearly_lower_needs_margin_and_every_patient():
    assert clearly_lower([0.2, 0.1], [0.4, 0.3], 0.1)
    assert not clearly_lower([0.1, 0.35], [0.4, 0.3], 0.1)  # mean lower, patient 1 worse
    assert not clearly_lower([0.38, 0.28], [0.4, 0.3], 0.1)  # lower everywhere, not by 10 %
    assert not clearly_lower([], [], 0.1)
    assert not clearly_lower([0.1], [0.4, 0.3], 0.1)
    assert not clearly_lower([float("nan"), 0.1], [0.4, 0.3], 0.1)


def test_targets_on_the_hand_table():
    rows = summarize(records())
    assert rows["no-init@default"]["steps_run"] == pytest.approx(40.5)
    verdicts = judge(rows, VerdictConfig())
    assert [v["passed"] for v in verdicts] == [True, True, True, True, False]
    assert (
        "meta-init@default" in verdicts[0]["target"] and "0.117 vs 0.250" in verdicts[0]["detail"]
    )
    assert "no-init@500" in verdicts[2]["detail"]  # the best no-init arm
    assert "0.20x" in verdicts[2]["detail"]  # 10 s / 50 s
    assert "0.450 without the grid start vs 0.350" in verdicts[4]["detail"]
    rescued = copy.deepcopy(TABLE)  # the prior alone does as well as the grid start with steps
    rescued["meta-init@100-no-grid"] = ("meta", 100, 10.0, TABLE["no-init@100"][3], "steps", False)
    assert judge(summarize(records(rescued)), VerdictConfig())[4]["passed"] is True


def test_too_slow_or_too_inaccurate_fails_target_two():
    slow = copy.deepcopy(TABLE)
    slow["no-init@500"] = ("noinit", 500, 30.0, TABLE["no-init@500"][3])  # 10/30 > 1/4
    passed = [v["passed"] for v in judge(summarize(records(slow)), VerdictConfig())]
    assert passed == [True, True, False, True, False]
    sharp = copy.deepcopy(TABLE)  # best no-init accuracy 0.99: 0.85 < 0.95 * 0.99
    sharp["no-init@500"] = ("noinit", 500, 50.0, [(0.99, 0.99, 0.99), (0.99, 0.99, 0.99)])
    assert judge(summarize(records(sharp)), VerdictConfig())[2]["passed"] is False


def test_control_that_helps_fails_target_three():
    lucky = copy.deepcopy(TABLE)
    lucky["random-init@100"] = ("random", 100, 10.0, TABLE["meta-init@100"][3])
    verdicts = judge(summarize(records(lucky)), VerdictConfig())
    assert verdicts[3]["passed"] is False
    assert "suspicious" in verdicts[3]["detail"]


def test_missing_arms_are_not_run_not_passed():
    only_meta = {"meta-init@100": TABLE["meta-init@100"]}
    verdicts = judge(summarize(records(only_meta)), VerdictConfig())
    assert [v["passed"] for v in verdicts] == [None] * 5
    assert judge({}, VerdictConfig())[0]["passed"] is None


def test_table_lines_mark_extrapolated_rows():
    rows = summarize(records())
    rows["no-init@500"]["extrapolated"] = True
    lines = table_lines(rows)
    assert len(lines) == 2 + len(TABLE)
    assert "(extrapolated)" in lines[-1] and "(extrapolated)" not in lines[2]


def test_thin_history_takes_chunk_means_at_chunk_ends():
    history = [{"step": float(i + 1), "tac": float(i), "ode": 2.0 * i} for i in range(10)]
    thinned = thin_history(history, points=5)
    assert thinned["step"] == [2, 4, 6, 8, 10]  # steps completed at each chunk's end
    assert thinned["tac"] == pytest.approx([0.5, 2.5, 4.5, 6.5, 8.5])
    assert thinned["ode"] == pytest.approx([1.0, 5.0, 9.0, 13.0, 17.0])
    assert thin_history([]) == {"step": [], "tac": [], "ode": []}


def test_spread_slices_picks_middles_of_the_tissue_slices():
    tissue = np.zeros((3, 3, 10), dtype=bool)
    tissue[1, 1, 2:8] = True  # tissue slices 2..7
    assert spread_slices(tissue, 2) == [3, 6]
    assert spread_slices(tissue, 1) == [5]
    assert spread_slices(tissue, 99) == [2, 3, 4, 5, 6, 7]


def test_lesion_slices_pick_the_slices_with_most_true_tmax_over_6_s(tmp_path):

    tissue = np.ones((4, 4, 8), dtype=bool)
    tmax = np.full(tissue.shape, 2.0)
    tmax[:2, :2, 5] = 9.0  # 4 voxels
    tmax[:, :, 2] = 7.0  # 16 voxels
    tmax[0, 0, 6] = 6.0  # not above 6 s
    assert lesion_slices(tissue, tmp_path, 1) is None  # no truth map: spread slices instead
    write_nifti_atomic(tmp_path / "tmax.nii.gz", tmax, np.eye(4), np.float32)
    assert lesion_slices(tissue, tmp_path, 1) == [2]
    assert lesion_slices(tissue, tmp_path, 2) == [2, 5]
    assert lesion_slices(tissue, tmp_path, 5) == [2, 5]  # only slices that hold any
    outside = tissue.copy()
    outside[..., 2] = False  # the big region outside the tissue does not count
    assert lesion_slices(outside, tmp_path, 1) == [5]
    write_nifti_atomic(tmp_path / "tmax.nii.gz", np.full(tissue.shape, 3.0), np.eye(4), np.float32)
    assert lesion_slices(tissue, tmp_path, 1) is None  # no lesion: spread slices instead
    with pytest.raises(PerfusionError, match="truth grid"):
        lesion_slices(np.ones((4, 4, 7), dtype=bool), tmp_path, 1)


def tiny_fit() -> FitConfig:
    enc = EncodingConfig(
        n_levels=3, log2_hashmap_size=10, base_resolution=4, finest_resolution=16, backend="torch"
    )
    cfg = FitConfig(fields=FieldsConfig(encoding=enc))
    cfg.sampling.batch_size = 128
    cfg.optim.lr = 3e-3
    return cfg


def test_arms_repeat_the_checkpoint_inner_loop_and_the_control_loads(tmp_path):
    meta = OmegaConf.to_object(OmegaConf.structured(MetaConfig(fit=tiny_fit(), n_inner=7)))
    torch.manual_seed(0)
    init = export_init(build_fields(meta.fit.fields, 3), meta, tmp_path / "meta.ckpt", 3, ["a"])
    checkpoint = read_init(init)
    cfg = CompareConfig(init=str(init), no_init_steps=[20, 7], meta_init_steps=[20, 7])
    base = base_fit_config(cfg, checkpoint)
    assert (base.sampling.batch_size, base.optim.lr, base.fields.encoding.n_levels) == (
        128,
        3e-3,
        3,
    )
    arms = build_arms(cfg, checkpoint, tmp_path / "control.ckpt")
    by_name = {a.name: a for a in arms}
    assert list(by_name) == [
        "meta-init@7", "meta-init@20", "meta-init@default", "meta-init@7-no-grid",
        "random-init@7", "no-init@7", "no-init@20", "no-init@default", "sppinn@5000",
    ]  # fmt: skip
    assert [a.fit.steps for a in arms[:2]] == [7, 20] and by_name["no-init@20"].fit.steps == 20
    assert by_name["meta-init@7"].fit.init == str(init) and by_name["no-init@7"].fit.init is None
    shipped = FitConfig()  # the default fit's stopping rule and cap, whatever the inner loop's
    for name in ("meta-init@default", "no-init@default"):
        arm = by_name[name]
        assert arm.budget == "default" and arm.fit.stop.rule == shipped.stop.rule != "none"
        assert arm.fit.steps == 1000 and arm.fit.sampling.batch_size == 128  # inner loop kept
    assert by_name["meta-init@default"].fit.init == str(init)
    no_grid = by_name["meta-init@7-no-grid"]
    assert not no_grid.grid_start and no_grid.fit.ode_prefit_steps == 0
    assert no_grid.fit.init == str(init) and base.ode_prefit_steps > 0
    sppinn = by_name["sppinn@5000"]
    assert sppinn.fit.slice_wise and sppinn.fit.preprocess == base.preprocess
    names = [_fit_folder_name(a) for a in arms]
    assert len(set(names)) == len(arms) and names == [_fit_folder_name(a) for a in arms]
    other = dataclasses.replace(arms[5], fit=dataclasses.replace(arms[5].fit, seed=1))
    assert _fit_folder_name(other) != names[5]  # another recipe keeps its own fit folder
    with_prior = build_arms(cfg, checkpoint, tmp_path / "control.ckpt", prior=True)
    assert [a.name for a in with_prior][5:7] == ["population-prior", "no-init@7"]
    assert with_prior[5].kind == "prior" and with_prior[5].steps == 0
    fields = build_fields(base.fields, 3)
    control = load_init(fields, tmp_path / "control.ckpt", Domain.from_config(base.domain).scales())
    assert control["fit"] == checkpoint["fit"]  # the same inner loop, only the weights differ
    assert control["sha256"] != checkpoint["sha256"]


def heldout_case(folder: Path) -> Path:
    """The analytic case, already preprocessed, with ``truth/`` and ``brainmask.nii.gz`` beside it."""
    shape = (16, 16, 4)
    prepared = make_prepared(shape=shape, n_frames=20)
    case = prepared.save(folder / "patient-000")
    truth = truth_volumes(tissue_labels(shape))
    truth["cbv"] = cbv_from_cbf_mtt(truth["cbf"], truth["mtt"])
    truth["tmax"] = tmax_box(truth["delay"], truth["mtt"])
    (case / "truth").mkdir()
    for name, volume in truth.items():
        write_nifti_atomic(case / "truth" / f"{name}.nii.gz", volume, prepared.affine)
    write_nifti_atomic(case / "brainmask.nii.gz", prepared.brain, prepared.affine, np.uint8)
    return case


@pytest.mark.slow
def test_tiny_compare_end_to_end(tmp_path):
    fit = tiny_fit()
    fit.aif_prefit_steps = 5
    meta = OmegaConf.to_object(OmegaConf.structured(MetaConfig(fit=fit, n_inner=3)))
    torch.manual_seed(fit.seed)  # the very weights a no-init fit starts from: results must match it
    init = export_init(build_fields(meta.fit.fields, 3), meta, tmp_path / "meta.ckpt", 2, ["a"])
    heldout_case(tmp_path / "held")
    heldout_case(tmp_path / "cohort")  # a training patient with the same truth: a perfect prior
    cfg = CompareConfig(
        init=str(init), out=str(tmp_path / "results"), work_dir=str(tmp_path / "work"),
        no_init_steps=[6], meta_init_steps=[], tracking=False,
        heldout=HeldoutConfig(dir=str(tmp_path / "held"), n=1),
        sppinn=SppinnArmConfig(steps=3, slices=1, overrides=["sampling.batch_size=128", "aif_prefit_steps=5"]),
        probe=ProbeConfig(voxels=2, every=1), prior=PriorArmConfig(cohort_dir=str(tmp_path / "cohort")),
    )  # fmt: skip
    leak = copy.deepcopy(cfg)
    leak.prior.cohort_dir = str(tmp_path / "held")
    with pytest.raises(PerfusionError, match="held-out patient"):
        run_compare(leak)
    payload = run_compare(cfg)
    out = tmp_path / "results"
    for name in (
        "README.md",
        "compare.json",
        *(f"compare-{k}.png" for k in ("losses", "init", "voxels", "accuracy")),
    ):
        assert (out / name).is_file(), name
    arms = [r["arm"] for r in payload["records"]]
    assert arms == [
        "meta-init@3", "meta-init@default", "meta-init@3-no-grid", "random-init@3",
        "population-prior", "no-init@3", "no-init@6", "no-init@default", "sppinn@3",
    ]  # fmt: skip
    by_arm = {r["arm"]: r for r in payload["records"]}
    assert by_arm["population-prior"]["metrics"]["cbf_r"] == pytest.approx(1.0)
    assert payload["probes"]["init_cbf_r"]["population-prior"] == pytest.approx(1.0)
    assert by_arm["no-init@6"]["history"]["step"][-1] == 6
    sppinn = by_arm["sppinn@3"]
    assert sppinn["extrapolated"] and sppinn["slices"]["fitted"] == 1
    assert sppinn["slices"]["tissue_slices"] == 4
    (z,) = sppinn["slices"]["z"]  # a slice with lesion: its region Dice means something
    true_tmax = np.asarray(load_nifti(tmp_path / "held/patient-000/truth/tmax.nii.gz").dataobj)
    assert (true_tmax[..., z] > 6.0).any()
    assert sppinn["wall_full_s"] == pytest.approx(4 * sppinn["wall_s"])
    assert all(np.isfinite(r["metrics"]["cbf_r"]) for r in payload["records"])
    assert by_arm["meta-init@3"]["metrics"] == by_arm["no-init@3"]["metrics"]  # loading is exact
    assert by_arm["random-init@3"]["metrics"] != by_arm["no-init@3"]["metrics"]
    assert payload["probes"]["trajectories"]["step"] == [0, 1, 2, 3]
    assert set(payload["probes"]["init_cbf_r"]) == {"meta-init", "random-init", "population-prior"}
    ran = by_arm["no-init@default"]["steps_run"]
    assert 0 < ran < 1000 and by_arm["no-init@default"]["history"]["step"][-1] == ran  # stopped
    text = (out / "README.md").read_text()
    assert f"stop rule (mean {ran})" in text
    assert "## Targets" in text and "extrapolated" in text and str(init) in text
    assert f"patient-000 z {z} of 4 tissue slices" in text
    scored = [r for r in payload["records"] if r["kind"] != "sppinn"]
    assert all("slice_metrics" in r for r in scored)  # every arm also on SPPINN's slice
    assert by_arm["population-prior"]["slice_metrics"]["cbf_r"] == pytest.approx(1.0)
    assert "On SPPINN's slices only (patient-000), map error: meta-init@3 " in text
    # a rerun reproduces the table from the cached fits, refitting nothing
    fits = sorted(p for p in (tmp_path / "work").rglob("summary.json") if "prior" not in str(p))
    assert len(fits) >= 5  # every fit; the population prior is no fit (rewritten in 0.1 s)
    stamps = {p: p.stat().st_mtime_ns for p in fits}
    again = run_compare(cfg)
    assert {p: p.stat().st_mtime_ns for p in fits} == stamps
    assert [r["metrics"] for r in again["records"]] == [r["metrics"] for r in payload["records"]]


def test_prior_line_compares_the_population_prior_with_the_pre_fits():
    table = {
        **TABLE,
        "population-prior": ("prior", 0, 0.1, [(0.5, 0.0, 0.0), (0.6, 0.0, 0.0)]),  # 0.8333, 0.8
        "no-init@0": ("noinit", 0, 3.0, [(0.6, 0.2, 0.3), (0.6, 0.2, 0.3)]),  # 0.6333
    }
    line = prior_line(summarize(records(table)))
    assert "0.817" in line and "0.633" in line and "not expected" in line
    better = {**table, "no-init@0": ("noinit", 0, 3.0, [(0.1, 0.1, 0.1), (0.1, 0.1, 0.1)])}
    assert "can start closer" in prior_line(summarize(records(better)))
    assert prior_line(summarize(records())) is None


def test_summary_page_lists_conditions_targets_and_what_holds(tmp_path):
    rows = summarize(records())
    payload = {"checkpoint": {"sha256": "abc"}, "patients": ["p0", "p1"], "rows": rows,
               "verdicts": judge(rows, VerdictConfig())}  # fmt: skip
    worse = copy.deepcopy(TABLE)  # at sigma 10 the prior loses its lead at the default budget
    worse["meta-init@default"] = ("meta", 1000, 4.0, TABLE["no-init@default"][3], "default", True)
    rows10 = summarize(records(worse))
    stale = {**payload, "checkpoint": {"sha256": "old"}}  # made with another initialisation
    for name, data in (("s5", payload), ("s10", {**payload, "rows": rows10,
                       "verdicts": judge(rows10, VerdictConfig())}), ("white", stale)):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "compare.json").write_text(json.dumps(data))
    cfg = CompareConfig(init="init.ckpt", out=str(tmp_path),
                        conditions={"s5": [], "s10": ["noise_hu=10"], "white": [], "2s": []})  # fmt: skip
    found = write_summary(cfg, "perfusion compare", {"sha256": "abc"})["conditions"]
    assert list(found) == ["s5", "s10"]  # the stale and the missing condition are not run
    text = (tmp_path / "README.md").read_text()
    assert "| s10 | `noise_hu=10` | 2 | [s10](s10/README.md) |" in text
    assert "| white | `as the training cohort` | not run | - |" in text
    assert "| meta-init@default | 0.117 (4.0 s) | 0.250 (4.0 s) | - | - |" in text
    assert (
        "| meta-init@default clearly lower map error than no-init@default | PASS | FAIL | - | - |"
        in text
    )
    assert "no-init@default: 1 of 2 conditions (s5)." in text
    assert "relative to no-init@default: s5 -53 %, s10 +0 %." in text


def test_conditions_are_checked_before_any_fit(tmp_path):
    init = tmp_path / "init.ckpt"
    init.write_bytes(b"")
    cfg = CompareConfig(init=str(init), conditions={"s5": []}, only=["s50"])
    with pytest.raises(PerfusionError, match="names no condition"):
        run_compare(cfg)
