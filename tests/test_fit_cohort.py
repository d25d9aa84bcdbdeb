"""``perfusion fit-cohort``: every case fitted once, resumed, re-fitted on a new configuration,
split by shards and claims, failures recorded, and the cohort table."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from perfusion import cache
from perfusion.cli import main
from perfusion.errors import PerfusionError
from perfusion.fitting.cohort import Shard, case_dirs, fit_cohort, record_path

REPO = Path(__file__).resolve().parents[1]
PHANTOM = ["n=4", "shape=[24,24,4]", "n_frames=30", "seed=3"]
BSVD = ["method=bsvd", "report=false"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cohort") / "phantoms"
    assert main(["phantom", f"out={folder}", *PHANTOM]) == 0
    return folder


def _linked(cohort: Path, folder: Path, names: list[str] | None = None) -> Path:
    """A cohort folder of links to some of ``cohort``'s cases (the fixture stays untouched)."""
    folder.mkdir()
    for case in case_dirs(cohort):
        if names is None or case.name in names:
            (folder / case.name).symlink_to(case, target_is_directory=True)
    return folder


def _records(out: Path, cohort: Path) -> dict[str, dict]:
    return {c.name: json.loads(record_path(out, c).read_text()) for c in case_dirs(cohort)}


def _statuses(text: str) -> list[tuple[str, str]]:
    """(case, first word of its outcome) from the progress lines."""
    return re.findall(r"^\[\d+/\d+\] (\S+): (\w+)", text, flags=re.MULTILINE)


def test_fits_all_resumes_and_refits_a_changed_configuration(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert main(["fit-cohort", str(cohort), f"out={out}", *BSVD]) == 0
    names = [c.name for c in case_dirs(cohort)]
    assert _statuses(capsys.readouterr().out) == [(n, "fitted") for n in names]
    first = _records(out, cohort)
    assert {r["status"] for r in first.values()} == {"fitted"}
    assert all(
        (out / n / "cbf.nii.gz").is_file() and (out / n / "config.yaml").is_file() for n in names
    )
    stamps = {n: (out / n / "cbf.nii.gz").stat().st_mtime_ns for n in names}

    assert main(["fit-cohort", str(cohort), f"out={out}", *BSVD]) == 0
    assert _statuses(capsys.readouterr().out) == [(n, "reused") for n in names]
    assert {n: (out / n / "cbf.nii.gz").stat().st_mtime_ns for n in names} == stamps

    changed = [*BSVD, "preprocess.smooth_sigma_mm=1.5"]
    assert main(["fit-cohort", str(cohort), f"out={out}", *changed]) == 0
    assert _statuses(capsys.readouterr().out) == [(n, "fitted") for n in names]
    again = _records(out, cohort)
    assert all(again[n][cache.DIGEST_KEY] != first[n][cache.DIGEST_KEY] for n in names)


def test_shards_split_the_sorted_cases_exactly_once(tmp_path: Path) -> None:
    cases = [tmp_path / f"case-{k}" for k in (3, 0, 4, 1, 2)]
    for count in (1, 2, 3, 7):
        parts = [Shard(i, count).take(cases) for i in range(count)]
        taken = [case.name for part in parts for case in part]
        assert sorted(taken) == sorted(c.name for c in cases) and len(set(taken)) == len(cases)
    assert [c.name for c in Shard.parse("1/2").take(cases)] == ["case-1", "case-3"]
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(PerfusionError, match="shard: "):
            Shard.parse(bad)


def test_a_claimed_case_is_left_to_its_holder(cohort: Path, tmp_path: Path) -> None:
    from perfusion.fitting.init import build_fit_config

    out, cases = tmp_path / "out", case_dirs(cohort)
    cfg = build_fit_config(BSVD)
    with cache.claim(record_path(out, cases[1])) as mine:
        assert mine
        records = fit_cohort(cases, out, cfg, say=None)
    assert [r["status"] for r in records] == ["fitted", "busy", "fitted", "fitted"]
    assert not (out / cases[1].name / "cbf.nii.gz").exists()


def _start(cohort: Path, out: Path, *words: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "perfusion.cli", "fit-cohort", str(cohort), f"out={out}"]
    return subprocess.Popen(
        [*command, *BSVD, *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_processes_started_at_once_fit_each_case_once(cohort: Path, tmp_path: Path) -> None:
    """Shard 0/2 and a whole-cohort run overlap on half the cases: the claims decide those."""
    out = tmp_path / "out"
    runs = [_start(cohort, out, shard) for shard in ("shard=0/2", "shard=0/1")]
    outputs = [run.communicate(timeout=240) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    fitted = [case for text, _ in outputs for case, status in _statuses(text) if status == "fitted"]
    assert sorted(fitted) == [c.name for c in case_dirs(cohort)]
    assert {r["status"] for r in _records(out, cohort).values()} == {"fitted"}


def test_a_broken_case_is_recorded_and_the_rest_fitted(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mixed = _linked(cohort, tmp_path / "mixed", ["patient-000", "patient-001"])
    (mixed / "broken").mkdir()
    (mixed / "broken" / "ctp.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    assert main(["fit-cohort", str(mixed), f"out={out}", *BSVD]) == 2
    captured = capsys.readouterr()
    assert _statuses(captured.out) == [
        ("broken", "failed"),
        ("patient-000", "fitted"),
        ("patient-001", "fitted"),
    ]
    # the tiny phantoms' short scans also draw input warnings, one line each, naming the case
    errors = [e for e in captured.err.splitlines() if not e.startswith("warning: ")]
    assert len(errors) == 1 and "1 of 3 cases failed (broken)" in errors[0]
    error = json.loads(record_path(out, mixed / "broken").read_text())["error"]
    assert error.startswith(f"{mixed / 'broken' / 'ctp.nii.gz'}: ") and "\n" not in error


def test_summarize_writes_one_row_per_case(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mixed = _linked(cohort, tmp_path / "mixed")
    (mixed / "broken").mkdir()
    (mixed / "broken" / "ctp.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "out"
    assert main(["fit-cohort", str(mixed), f"out={out}", "shard=0/2", *BSVD]) == 2
    assert not (out / "cohort.csv").exists()  # a shard leaves the table to summarize
    assert main(["fit-cohort", str(mixed), f"out={out}", "summarize"]) == 0
    assert "5 cases: 2 fitted, 1 failed, 2 missing" in capsys.readouterr().out
    rows = {row["case"]: row for row in csv.DictReader((out / "cohort.csv").open())}
    assert [rows[n]["status"] for n in sorted(rows)] == [
        "failed",
        "missing",
        "fitted",
        "missing",
        "fitted",
    ]
    assert rows["broken"]["error"] and rows["broken"]["core_ml"] == ""
    summary = json.loads((out / "patient-001" / "summary.json").read_text())
    row = rows["patient-001"]
    assert row["method"] == "bsvd" and row["aif_source"] == summary["preprocess"]["aif"]["source"]
    assert float(row["core_ml"]) == pytest.approx(summary["defuse3"]["core_volume_ml"], rel=1e-5)
    assert float(row["tmax_gt_6s_ml"]) == pytest.approx(
        summary["defuse3"]["tmax_gt_6s_volume_ml"], rel=1e-5
    )
    assert float(row["tissue_cnr"]) == summary["preprocess"]["contrast"]["cnr"] > 0
    flagged = {"core_mostly_outside_tmax_gt_6s": True, "core_volume_ml": 20.0,
               "core_outside_tmax_gt_6s_ml": 17.0, "tmax_gt_6s_both_sides": True,
               "tmax_gt_6s_other_side_fraction": 0.4, "healthy_median_cbf": 40.0}  # fmt: skip
    summary["defuse3"].update(flagged)
    (out / "patient-001" / "summary.json").write_text(json.dumps(summary))
    assert main(["fit-cohort", str(mixed), f"out={out}", "summarize"]) == 0
    rows = {row["case"]: row for row in csv.DictReader((out / "cohort.csv").open())}
    assert rows["patient-001"]["warnings"].endswith(  # after the tiny scan's input warnings
        "; 85% of the core lies outside Tmax > 6 s; Tmax > 6 s in 40% of the other hemisphere"
    )


def test_a_tiny_resppinn_cohort_reports_its_fit_diagnostics(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    one = _linked(cohort, tmp_path / "one", ["patient-002"])
    out = tmp_path / "out"
    quick = ["steps=20", "aif_prefit_steps=5", "ode_prefit_steps=5", "report=false"]
    assert main(["fit-cohort", str(one), f"out={out}", *quick]) == 0
    assert _statuses(capsys.readouterr().out) == [("patient-002", "fitted")]
    row = next(csv.DictReader((out / "cohort.csv").open()))
    summary = json.loads((out / "patient-002" / "summary.json").read_text())
    assert row["method"] == "resppinn" and int(row["steps"]) == summary["steps"] > 0
    assert row["stop_reason"] == summary["stop"]["reason"]
    assert float(row["noise_sd_hu"]) == pytest.approx(summary["noise"]["sd_hu"], rel=1e-5)
    config = (out / "patient-002" / "config.yaml").read_text()
    assert f"group: fit-cohort-{out.name}" in config


def test_refusals_name_the_fault(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fit-cohort", str(empty), f"out={tmp_path / 'out'}"]) == 2
    assert "no case folders" in capsys.readouterr().err
    assert main(["fit-cohort", str(empty)]) == 2
    assert "missing out=DIR" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_loocv_inputs_are_fitted_by_fit_cohort(cohort: Path, tmp_path: Path) -> None:
    """loocv's maps: fitted once per configuration, reused, refitted on a change; maps made
    elsewhere (no config.yaml) are used as they are."""
    from experiments.commands.loocv import input_fits
    from perfusion.segmentation.cohort import load_cohort
    from perfusion.segmentation.config import CohortConfig, LoocvConfig
    from perfusion.segmentation.inputs import list_patients

    patients = _linked(cohort, tmp_path / "cohort", ["patient-000", "patient-001", "patient-002"])
    cases = list_patients(patients)
    fits = tmp_path / "fits"
    cfg = CohortConfig(path=str(patients), fits=str(fits), fit_overrides=["report=false"])
    assert [p.name for p in load_cohort(cases, "bsvd", cfg)] == [c.name for c in cases]
    out = fits / "bsvd"
    first = _records(out, patients)
    assert {r["status"] for r in first.values()} == {"fitted"}
    stamps = {c.name: (out / c.name / "cbf.nii.gz").stat().st_mtime_ns for c in cases}
    load_cohort(cases, "bsvd", cfg)
    assert {c.name: (out / c.name / "cbf.nii.gz").stat().st_mtime_ns for c in cases} == stamps

    (out / "patient-000" / "config.yaml").unlink()  # as if made by another tool
    changed = CohortConfig(
        path=str(patients),
        fits=str(fits),
        fit_overrides=["report=false", "preprocess.smooth_sigma_mm=1.5"],
    )
    load_cohort(cases, "bsvd", changed)
    again = {c.name: (out / c.name / "cbf.nii.gz").stat().st_mtime_ns for c in cases}
    assert again["patient-000"] == stamps["patient-000"]
    assert all(again[n] != stamps[n] for n in ("patient-001", "patient-002"))
    loocv = LoocvConfig(cohort=cfg, inputs=["truth", "bsvd"])
    assert list(input_fits(loocv)) == ["bsvd"]
    assert input_fits(loocv) != input_fits(LoocvConfig(cohort=changed, inputs=["truth", "bsvd"]))


def test_a_case_whose_scan_changed_is_fitted_again(cohort: Path, tmp_path: Path, capsys) -> None:
    import shutil

    case = tmp_path / "one" / "patient-000"
    shutil.copytree(case_dirs(cohort)[0], case)
    out = tmp_path / "out"
    assert main(["fit-cohort", str(case.parent), f"out={out}", *BSVD]) == 0
    assert main(["fit-cohort", str(case.parent), f"out={out}", *BSVD]) == 0
    assert _statuses(capsys.readouterr().out)[-1] == ("patient-000", "reused")
    scan = case / "ctp.nii.gz"
    scan.write_bytes(scan.read_bytes())  # same content, a new file: the input is not the same
    os.utime(scan, ns=(scan.stat().st_atime_ns, scan.stat().st_mtime_ns + 10**9))
    assert main(["fit-cohort", str(case.parent), f"out={out}", *BSVD]) == 0
    assert _statuses(capsys.readouterr().out)[-1] == ("patient-000", "fitted")
