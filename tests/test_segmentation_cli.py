"""``perfusion loocv``, ``train-seg`` and ``segment`` end to end on a tiny synthetic cohort."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
from test_segmentation_cases import write_cohort

from perfusion.commands import loocv, segment, train_seg
from perfusion.errors import PerfusionError

TINY = ["train.epochs=2", "seeds=0", "wandb=false", "train.threads=1", "model.num_res_units=0"]


def test_loocv_runs_resumes_and_excludes_fold0(tmp_path: Path, capsys) -> None:
    cohort = write_cohort(tmp_path / "cohort", 5)
    args = [
        f"cohort={cohort}",
        f"runs={tmp_path / 'runs'}",
        f"results={tmp_path / 'res' / 'loocv'}",
        *TINY,
    ]
    loocv.main(args)
    result = json.loads((tmp_path / "res" / "loocv.json").read_text())
    unet = result["methods"]["U-Net (truth)"]
    rule = result["methods"]["rCBF<30% (truth)"]
    patients = [row["patient"] for row in unet["per_patient"]]
    assert patients == ["patient-001", "patient-002", "patient-003", "patient-004"]  # no fold 0
    assert [row["patient"] for row in rule["per_patient"]] == patients
    assert unet["metrics"]["fp_ml"]["mean"] is not None  # patient-003 has no core
    assert (tmp_path / "res" / "loocv.md").read_text().count("| U-Net (truth) |") == 1
    assert (tmp_path / "res" / "loocv-bland-altman-u-net--truth.png").stat().st_size > 1000
    unit = tmp_path / "runs" / "cpu-default" / "truth" / "seed-0" / "fold-002.json"
    fold = json.loads(unit.read_text())
    assert fold["patient"] == "patient-002" and "patient-002" not in fold["val_patients"]
    assert (
        cohort.parent / "runs" / "cpu-default" / "truth" / "inputs" / "patient-002" / "rcbf.nii.gz"
    ).is_file()
    stamp = unit.stat().st_mtime_ns
    capsys.readouterr()
    loocv.main(args)  # resume: nothing retrained
    assert capsys.readouterr().out.count("done, skipped") == 4
    assert unit.stat().st_mtime_ns == stamp
    loocv.main([*args, "fold=0"])  # tuning fold on request, still not reported
    assert (unit.parent / "fold-000.json").is_file()
    with pytest.raises(PerfusionError, match="another config"):
        loocv.main([*args, "train.lr=0.01"])


def test_train_seg_then_segment_writes_core_and_summary(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort", 4)
    model = tmp_path / "model"
    train_seg.main([str(cohort), f"out={model}", *TINY])
    assert (model / "model.pt").is_file() and (model / "config.yaml").is_file()
    case = cohort / "patient-001"
    segment.main([str(case), f"model={model}", f"out={tmp_path / 'seg'}"])
    pred = nib.load(tmp_path / "seg" / "core_pred.nii.gz")
    assert pred.shape == (32, 32, 16)
    summary = json.loads((tmp_path / "seg" / "summary.json").read_text())["segmentation"]
    assert summary["input_method"] == "truth" and summary["affected_side"] == "right"
    assert summary["core_volume_ml"] >= 0 and summary["warnings"] == []
    assert (tmp_path / "seg" / "core_overlay.png").is_file()
