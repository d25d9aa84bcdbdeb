"""Case-folder checks that bad input used to slip through: label masks, broken affines, timing
gaps, near-empty TSVs. Each fault is one line naming its file (masks: the full path)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import AFFINE, SHAPE, make_case, make_isles2018, save_nifti

from perfusion.cli import main
from perfusion.datasets import read_any, read_isles2018
from perfusion.errors import PerfusionError
from perfusion.io import binary_mask, check_affine, read_case, read_curves, validate_frame_times


def label_core(case: Path) -> np.ndarray:
    """core.nii.gz as a label image 0-4: 4 voxels of each label 1-4 (as ISLES-style tools write)."""
    core = np.zeros(SHAPE, np.uint8)
    core[1:5, 0, 0] = [1, 2, 3, 4]
    core[1:5, 1, 0] = [1, 2, 3, 4]
    core[1:5, 2, 1] = [1, 2, 3, 4]
    core[1:5, 3, 2] = [1, 2, 3, 4]
    save_nifti(case / "core.nii.gz", core)
    return core


def test_label_core_is_refused_naming_full_path_and_values(tmp_path: Path, capsys) -> None:
    make_case(tmp_path / "case")
    label_core(tmp_path / "case")
    path = tmp_path / "case" / "core.nii.gz"
    with pytest.raises(PerfusionError) as info:
        read_case(tmp_path / "case")
    assert str(info.value) == (
        f"{path}: mask holds values 0, 1, 2, 3, 4; expected 0 and 1 only "
        "(a label image: pick one label with core_label=N)"
    )
    assert main(["inspect", str(tmp_path / "case")]) == 2  # it used to print a 16-voxel core
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "0, 1, 2, 3, 4" in err, err
    assert "core_label=N" in err  # the key that reads it, as the command line takes it
    assert main(["inspect", str(tmp_path / "case"), "core_label=3"]) == 0


def test_a_chosen_core_label_is_read_as_the_mask(tmp_path: Path) -> None:
    make_case(tmp_path / "case")
    core = label_core(tmp_path / "case")
    case = read_case(tmp_path / "case", core_label=3)
    np.testing.assert_array_equal(case.core, core == 3)
    assert case.core.sum() == 4
    assert read_any(tmp_path / "case", core_label=2).core.sum() == 4
    with pytest.raises(PerfusionError, match=r"no voxel has label 7 \(values found: 0, 1, 2"):
        read_case(tmp_path / "case", core_label=7)


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ([0, 255], "0, 255"),
        ([0.0, 0.5, 1.0], "0, 0.5, 1"),
        (np.linspace(0, 1, 11), "0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, ..., 1 (11 distinct values)"),
    ],
)
def test_binary_mask_lists_what_it_found(values, shown: str) -> None:
    with pytest.raises(PerfusionError, match=re.escape(f"mask holds values {shown};")):
        binary_mask(np.asarray(values), Path("/data/brainmask.nii.gz"))
    with pytest.raises(PerfusionError, match=r"only \(a label image: pick one label with k=N\)$"):
        binary_mask(np.asarray(values), Path("/data/core.nii.gz"), label_key="k")
    np.testing.assert_array_equal(binary_mask(np.array([0, 1, 1.0]), Path("m")), [0, 1, 1])


def test_brain_mask_and_isles_core_are_checked_too(tmp_path: Path) -> None:
    make_case(tmp_path / "case")
    save_nifti(tmp_path / "case" / "brainmask.nii.gz", np.full(SHAPE, 255, np.uint8))
    with pytest.raises(PerfusionError, match=r"brainmask.nii.gz: mask holds values 255;") as info:
        read_case(tmp_path / "case", core_label=1)
    # no key picks a label of a brain mask: the core's key is not offered for it
    assert str(info.value).endswith("expected 0 and 1 only") and "label" not in str(info.value)
    root = make_isles2018(tmp_path / "isles", n_frames=6)
    ot = next(root.rglob("*OT*.nii"))
    save_nifti(ot, np.asarray(nib.load(str(ot)).dataobj) * 2)  # labels 0/2
    with pytest.raises(PerfusionError, match=r"OT.350.nii: mask holds values 0, 2;"):
        read_isles2018(root)


@pytest.mark.parametrize(
    ("diagonal", "fault"),
    [
        ([2.0, 0.0, 5.0], "voxel spacing 2 x 0 x 5 mm outside 0.05-50 mm"),
        ([2e3, 2.0, 5.0], "voxel spacing 2e+03 x 2 x 5 mm outside"),
        ([np.nan, 2.0, 5.0], "affine (voxel-to-world) holds NaN/Inf"),
    ],
)
def test_broken_affines_are_refused(diagonal: list[float], fault: str) -> None:
    with pytest.raises(PerfusionError) as info:
        check_affine(np.diag([*diagonal, 1.0]), Path("ctp.nii.gz"))
    assert str(info.value).startswith("ctp.nii.gz: ") and fault in str(info.value)
    check_affine(np.diag([-2.0, 2.0, -5.0, 1.0]), Path("ctp.nii.gz"))  # flipped axes are fine
    sheared = np.array([[2.0, 2.0, 0, 0], [0, 0.001, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]])
    with pytest.raises(PerfusionError, match="nearly"):
        check_affine(sheared, Path("ctp.nii.gz"))


def test_frame_gap_over_a_minute_is_refused_with_its_frames() -> None:
    validate_frame_times(np.array([0.0, 1.0, 61.0]), 3, Path("ctp.json"))  # 60 s: accepted
    with pytest.raises(PerfusionError, match=r"ctp.json: frames 2 and 3 are 60.5 s apart"):
        validate_frame_times(np.array([0.0, 1.0, 61.5]), 3, Path("ctp.json"))
    with pytest.raises(PerfusionError, match=r"not strictly increasing \(frame 3 at 1 s after"):
        validate_frame_times(np.array([0.0, 2.0, 1.0]), 3, Path("ctp.json"))


def test_frame_times_in_ms_are_refused(tmp_path: Path) -> None:
    make_case(tmp_path / "case")
    times = json.loads((tmp_path / "case" / "ctp.json").read_text())["FrameTimes"]
    (tmp_path / "case" / "ctp.json").write_text(
        json.dumps({"FrameTimes": [t * 1e3 for t in times]})
    )
    with pytest.raises(PerfusionError, match="times in ms"):
        read_case(tmp_path / "case")


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "0 data rows"),
        ("time\taif\n", "0 data rows"),
        ("time\taif\n0\t1\n", "1 data rows"),
        ("time,aif\n0,1\n1,300\n2,5\n", "unreadable TSV (could not convert"),
    ],
)
def test_short_or_foreign_tsv_is_one_line(tmp_path: Path, text: str, fault: str) -> None:
    (tmp_path / "aif.tsv").write_text(text)
    with pytest.raises(PerfusionError) as info:
        read_curves(tmp_path / "aif.tsv")
    assert str(info.value).startswith(f"aif.tsv: {fault}") and "\n" not in str(info.value)


def test_affine_is_checked_when_reading_a_case(tmp_path: Path) -> None:
    make_case(tmp_path / "case")
    image = nib.load(str(tmp_path / "case" / "ctp.nii.gz"))
    save_nifti(tmp_path / "case" / "ctp.nii.gz", image.get_fdata(), AFFINE * [1, 1, 1e-3, 1])
    with pytest.raises(PerfusionError, match=r"ctp.nii.gz: voxel spacing 2 x 2 x 0.005 mm"):
        read_case(tmp_path / "case")
