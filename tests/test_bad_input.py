"""Every bad input: one line naming the file and the fault, exit status 2, and no output written.

Each fault is built from a valid case (or DICOM series) with one thing broken, then run through
the command line twice: ``inspect`` (reads and validates) and ``convert out=`` (must leave no
``out`` folder and no temporary sibling behind).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import AFFINE, SHAPE, TIMES_S, ctp_values, make_case, make_dicom_series, save_nifti

from perfusion.cli import main


def _case(tmp: Path) -> Path:
    make_case(tmp / "case")
    return tmp / "case"


def _scan_3d(tmp: Path) -> Path:
    case = _case(tmp)
    save_nifti(case / "ctp.nii.gz", ctp_values()[..., 0])
    return case


def _times(values: list[float]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        case = _case(tmp)
        (case / "ctp.json").write_text(json.dumps({"FrameTimes": values}))
        return case

    return build


def _nan_voxel(tmp: Path) -> Path:
    case = _case(tmp)
    data = ctp_values()
    data[2, 2, 1, 3] = np.nan
    data[3, 2, 1, 3] = np.inf
    save_nifti(case / "ctp.nii.gz", data)
    return case


def _mask(data: np.ndarray, affine: np.ndarray = AFFINE) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        case = _case(tmp)
        save_nifti(case / "brainmask.nii.gz", data.astype(np.uint8), affine)
        return case

    return build


def _aif(rows: list[tuple[float, float]]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        case = _case(tmp)
        (case / "aif.tsv").write_text("time\taif\n" + "".join(f"{t}\t{a}\n" for t, a in rows))
        return case

    return build


def _stored_values(tmp: Path) -> Path:
    case = _case(tmp)
    save_nifti(case / "ctp.nii.gz", ctp_values() + 1024.0)  # air 24, brain 1054: never rescaled
    return case


def _no_ctp(tmp: Path) -> Path:
    case = _case(tmp)
    (case / "ctp.nii.gz").unlink()
    return case


def _garbage_nifti(tmp: Path) -> Path:
    case = _case(tmp)
    (case / "ctp.nii.gz").write_bytes(b"this is not a NIfTI file" * 20)
    return case


def _truncated_nifti(tmp: Path) -> Path:
    case = _case(tmp)
    payload = (case / "ctp.nii.gz").read_bytes()
    (case / "ctp.nii.gz").write_bytes(payload[: len(payload) * 2 // 3])
    return case


def _truncated_dicom(tmp: Path) -> Path:
    paths = make_dicom_series(tmp / "dicom")
    payload = paths[7].read_bytes()
    paths[7].write_bytes(payload[:-20])  # cut inside the pixel data
    return tmp / "dicom"


def _unreadable_dicom(tmp: Path) -> Path:
    paths = make_dicom_series(tmp / "dicom")
    paths[4].write_bytes(paths[4].read_bytes()[:132] + b"\xff" * 64)  # magic, then junk
    return tmp / "dicom"


def _cut_dicom_header(tmp: Path) -> Path:
    paths = make_dicom_series(tmp / "dicom")
    paths[2].rename(paths[2].with_suffix(".dcm")).write_bytes(b"\0" * 60)
    return tmp / "dicom"


def _dicom_without_rescale(tmp: Path) -> Path:
    make_dicom_series(tmp / "dicom", rescale=False)
    return tmp / "dicom"


def _missing_frame_dicom(tmp: Path) -> Path:
    paths = make_dicom_series(tmp / "dicom")
    paths[-1].unlink()  # the last frame lacks one slice
    return tmp / "dicom"


EMPTY = np.zeros(SHAPE, bool)
FULL = np.ones(SHAPE, bool)
SHIFTED = AFFINE + np.array([[0, 0, 0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
T_END = float(TIMES_S[-1])

FAULTS: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    # name: (builder, file named in the message, fault text)
    "3d-scan": (_scan_3d, "ctp.nii.gz", "3-D image, expected 4-D"),
    "time-count": (_times([0, 1, 2]), "ctp.json", "3 frame times for 8 frames"),
    "time-order": (_times([0, 1, 2, 3, 3, 4, 5, 6]), "ctp.json", "not strictly increasing"),
    "nan-inf": (_nan_voxel, "ctp.nii.gz", "2 NaN/Inf voxel values"),
    "empty-mask": (_mask(EMPTY), "brainmask.nii.gz", "brain mask is empty"),
    "mask-shape": (_mask(np.ones((6, 5, 4), bool)), "brainmask.nii.gz", "shape (6, 5, 4) differs"),
    "mask-affine": (_mask(FULL, SHIFTED), "brainmask.nii.gz", "affine differs"),
    "aif-short": (_aif([(0, 0), (2, 0), (4, 300), (6, 50)]), "aif.tsv", "do not cover"),
    "aif-flat": (_aif([(t, 20.0) for t in np.linspace(0, T_END, 8)]), "aif.tsv", "never rises"),
    "stored-values": (_stored_values, "ctp.nii.gz", "stored CT values without rescale"),
    "no-ctp": (_no_ctp, "case", "no ctp.nii.gz in case folder"),
    "garbage-nifti": (_garbage_nifti, "ctp.nii.gz", "unreadable or truncated NIfTI"),
    "truncated-nifti": (_truncated_nifti, "ctp.nii.gz", "unreadable or truncated NIfTI"),
    "truncated-dicom": (_truncated_dicom, "IM0056", "truncated DICOM"),
    "unreadable-dicom": (_unreadable_dicom, "IM0035", "unreadable or truncated DICOM"),
    "cut-dicom-header": (_cut_dicom_header, "IM0021.dcm", "unreadable or truncated DICOM"),
    "dicom-no-rescale": (_dicom_without_rescale, "dicom", "stored CT values without rescale"),
    "dicom-missing-slice": (_missing_frame_dicom, "dicom", "different numbers of frames"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_input_fails_with_one_line_and_no_output(
    fault: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    build, file_name, text = FAULTS[fault]
    path = build(tmp_path / "in")
    for command in (["inspect", str(path)], ["convert", str(path), f"out={tmp_path / 'out'}"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"perfusion {command[0]}: /"), err  # the full path
        assert f"/{file_name}: " in err, err
        assert text in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no out/, no .out.*.tmp


def test_empty_folder_names_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no CTP found (expected ctp.nii.gz" in capsys.readouterr().err


def test_nifti_with_header_but_no_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = nib.Nifti1Image(ctp_values(), AFFINE)
    nib.save(image, str(tmp_path / "scan.nii"))
    payload = (tmp_path / "scan.nii").read_bytes()
    (tmp_path / "scan.nii").write_bytes(payload[:400])  # header only, uncompressed
    assert main(["inspect", str(tmp_path / "scan.nii")]) == 2
    assert "scan.nii: unreadable or truncated NIfTI" in capsys.readouterr().err
