"""``perfusion loocv``, ``train-seg`` and ``segment`` end to end on a tiny synthetic cohort."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
from test_segmentation_cases import write_cohort

from experiments.commands import loocv
from perfusion.commands import segment, train_seg
from perfusion.config import config_dir
from perfusion.errors import PerfusionError
from perfusion.segmentation.config import check_features

TINY = [
    "train.epochs=2",
    "train.val_every=1",
    "seeds=0",
    "inputs=truth",  # the shipped default fits bSVD maps, which needs CTP data
    "wandb=false",
    "train.threads=1",
    "model.num_res_units=0",
]


def test_loocv_runs_resumes_and_excludes_fold0(tmp_path: Path, capsys) -> None:
    cohort = write_cohort(tmp_path / "cohort", 5)
    args = [
        f"cohort={cohort}",
        f"runs={tmp_path / 'runs'}",
        f"results={tmp_path / 'res' / 'loocv'}",
        *TINY,
    ]
    loocv.main(args)
    result = json.loads((tmp_path / "res" / "loocv" / "loocv.json").read_text())
    unet = result["methods"]["U-Net (truth)"]
    rule = result["methods"]["rCBF<30% (truth)"]
    patients = [row["patient"] for row in unet["per_patient"]]
    assert patients == ["patient-001", "patient-002", "patient-003", "patient-004"]  # no fold 0
    assert [row["patient"] for row in rule["per_patient"]] == patients
    assert unet["metrics"]["fp_ml"]["mean"] is not None  # patient-003 has no core
    page = (tmp_path / "res" / "loocv" / "README.md").read_text()
    assert page.count("| U-Net (truth) |") == 2  # Table 1 and the paired comparison
    assert unet["paired_with_rule"]["dice"]["n"] == 3  # patient-003 has no core
    assert (tmp_path / "res" / "loocv" / "bland-altman-u-net--truth.png").stat().st_size > 1000
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
    before = fold["config_digest"]
    loocv.main([*args, "train.lr=0.01", "fold=2"])  # another config: that unit is redone
    assert unit.stat().st_mtime_ns != stamp
    assert json.loads(unit.read_text())["config_digest"] != before


def test_train_seg_then_segment_writes_core_and_summary(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort", 4)
    model = tmp_path / "model"
    with pytest.warns(FutureWarning, match=r"train.pad_multiple=16 is ignored.*\(16, 16, 16\)"):
        train_seg.main([str(cohort), f"out={model}", *TINY, "train.pad_multiple=16"])  # old key
    assert (model / "model.pt").is_file() and (model / "config.yaml").is_file()
    case = cohort / "patient-001"
    segment.main([str(case), f"model={model}", f"out={tmp_path / 'seg'}"])
    pred = nib.load(tmp_path / "seg" / "core_pred.nii.gz")
    assert pred.shape == (32, 32, 16)
    summary = json.loads((tmp_path / "seg" / "summary.json").read_text())["segmentation"]
    assert summary["input_method"] == "truth" and summary["affected_side"] == "right"
    assert summary["core_volume_ml"] >= 0 and summary["warnings"] == []
    assert summary["segmenter"] == "unet"
    assert (tmp_path / "seg" / "core_overlay.png").is_file()
    # maps of another method: the rule by default, the U-Net on request, or a refusal
    other = [str(case), f"model={model}", "method=bsvd", f"maps={case / 'truth'}"]
    segment.main([*other, f"out={tmp_path / 'rule'}"])
    ruled = json.loads((tmp_path / "rule" / "summary.json").read_text())["segmentation"]
    assert ruled["segmenter"] == "rCBF<30%" and "model trained on 'truth'" in ruled["warnings"][0]
    rule_core = nib.load(tmp_path / "rule" / "core_pred.nii.gz").get_fdata() > 0
    assert rule_core.sum() > 0 and ruled["core_volume_ml"] > 0
    segment.main([*other, f"out={tmp_path / 'unet'}", "mismatch=unet"])
    forced = json.loads((tmp_path / "unet" / "summary.json").read_text())["segmentation"]
    assert forced["segmenter"] == "unet" and forced["warnings"]
    with pytest.raises(PerfusionError, match="mismatch=rule or mismatch=unet"):
        segment.main([*other, f"out={tmp_path / 'refused'}", "mismatch=refuse"])
    assert not (tmp_path / "refused" / "core_pred.nii.gz").exists()
    # maps without the CBV the model's rCBV channel reads (another tool's): the rule, and why
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "cbf.nii.gz").write_bytes((case / "truth" / "cbf.nii.gz").read_bytes())
    segment.main([str(case), f"model={model}", f"maps={bare}", f"out={tmp_path / 'bare-seg'}"])
    no_cbv = json.loads((tmp_path / "bare-seg" / "summary.json").read_text())["segmentation"]
    assert no_cbv["segmenter"] == "rCBF<30%" and no_cbv["warnings"] == [
        "no cbv.nii.gz beside cbf.nii.gz (the model reads it)"
    ]


def test_missing_maps_fitted_with_the_cohort_fit_overrides(tmp_path: Path, monkeypatch) -> None:
    from perfusion.segmentation import inputs

    calls = []
    monkeypatch.setattr(inputs, "fit_maps", lambda *args: calls.append(args))
    case = write_cohort(tmp_path / "cohort", 1) / "patient-000"
    folder = inputs.ensure_maps(case, "bsvd", None, True, ["preprocess.motion_correction=false"])
    assert folder == tmp_path / "cohort" / "fits" / "bsvd" / "patient-000"
    assert calls == [(case, "bsvd", folder, ["preprocess.motion_correction=false"])]
    with pytest.raises(PerfusionError, match="no cbf.nii.gz"):
        inputs.ensure_maps(case, "bsvd", None, False)


def test_fold_logger_is_false_not_none_when_off(tmp_path: Path, monkeypatch) -> None:
    # a Trainer given None would make its own default logger
    monkeypatch.setenv("WANDB_MODE", "disabled")  # explicit: wandb may touch the environment
    assert loocv.fold_logger(False, "g", "j", "n", tmp_path) is False
    assert loocv.fold_logger(True, "g", "j", "n", tmp_path) is False


def test_too_many_validation_patients_is_one_line_error(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "cohort", 4)  # a fold trains on 4 - 1 - n_val patients
    with pytest.raises(PerfusionError, match="n_val=3 leaves no training patient"):
        loocv.main([f"cohort={cohort}", f"runs={tmp_path / 'runs'}", *TINY, "train.n_val=3"])


@pytest.mark.parametrize("command", [loocv, train_seg])
def test_unknown_input_channel_refused_before_any_work(tmp_path: Path, command) -> None:
    args = [f"cohort={tmp_path / 'absent'}", f"runs={tmp_path / 'runs'}", *TINY]
    with pytest.raises(PerfusionError, match=r"model.features must be some of .*'adc'"):
        command.main([*args, "model.features=[rcbf,adc]"])
    assert not (tmp_path / "absent").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "loocv").glob("*.yaml")))
def test_shipped_loocv_variants_load_with_their_own_cohort(name: str) -> None:
    default, variant = loocv.OPTIONS.load([]), loocv.OPTIONS.load([f"config=loocv/{name}"])
    check_features(variant.model.features)
    assert variant.cohort.path != default.cohort.path  # another grid: never the default's fits
    assert variant.run != default.run and variant.results != default.results


def test_a_changed_fit_of_one_input_leaves_the_other_inputs_units_standing() -> None:
    cfg = loocv.OPTIONS.load(["inputs=[bsvd,resppinn,truth]"])
    patients = ["patient-000", "patient-001", "patient-002"]
    before = loocv.unit_digests(cfg, {"bsvd": "b1", "resppinn": "r1"}, patients)
    after = loocv.unit_digests(cfg, {"bsvd": "b1", "resppinn": "r2"}, patients)
    assert after["bsvd"] == before["bsvd"] and after["truth"] == before["truth"]
    assert after["resppinn"] != before["resppinn"]
    trained = loocv.unit_digests(loocv.OPTIONS.load(["inputs=[bsvd,resppinn]", "train.lr=0.01"]),
                                 {"bsvd": "b1", "resppinn": "r1"}, patients)  # fmt: skip
    assert trained["bsvd"] != before["bsvd"]  # the training settings count for every input
    more = loocv.unit_digests(cfg, {"bsvd": "b1", "resppinn": "r1"}, [*patients, "patient-003"])
    assert more["truth"] != before["truth"]  # another cohort: other training patients per fold


def test_shipped_model_found_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    from perfusion.config import repository_path
    from perfusion.segmentation.config import SegmentConfig

    default = SegmentConfig().model
    monkeypatch.chdir(tmp_path)
    assert (
        repository_path(default).is_absolute() and (repository_path(default) / "model.pt").is_file()
    )
    (tmp_path / default).mkdir(parents=True)  # the working directory's own model comes first
    assert repository_path(default) == Path(default)
    assert repository_path("no/such/model") == Path("no/such/model")
