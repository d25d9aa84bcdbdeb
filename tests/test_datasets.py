"""Readers on small generated files in each layout: ISLES 2018, ISLES 2024, DICOM, bare NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from layouts import (
    DICOM_COLS,
    DICOM_ORIGIN_LPS,
    DICOM_ROWS,
    DICOM_SLICES,
    DICOM_TIMES_S,
    ISLES2024_CORE,
    NCCT_AFFINE,
    SHAPE,
    ctp_values,
    dicom_hu,
    make_case,
    make_dicom_series,
    make_isles2018,
    make_isles2024,
    save_nifti,
)

from perfusion.cli import main
from perfusion.datasets import (
    detect_layout,
    read_any,
    read_isles2018,
    read_isles2024,
    read_vendor_maps,
    resample_nearest,
)
from perfusion.datasets.dicom import choose_frame_times, read_series
from perfusion.datasets.dicom_frames import group_frames
from perfusion.errors import PerfusionError
from perfusion.io import read_case


def voxels(mask: np.ndarray) -> list[tuple[int, ...]]:
    """The (i, j, k) indices of a mask's true voxels, sorted."""
    return sorted(tuple(int(v) for v in ijk) for ijk in np.argwhere(mask))


def test_detect_layout_each_kind(tmp_path: Path) -> None:
    make_case(tmp_path / "case")
    save_nifti(tmp_path / "scan.nii.gz", ctp_values())
    make_dicom_series(tmp_path / "dicom")
    assert detect_layout(tmp_path / "case") == "case"
    assert detect_layout(make_isles2018(tmp_path / "i18")) == "isles2018"
    assert detect_layout(make_isles2024(tmp_path / "i24")) == "isles2024"
    assert detect_layout(tmp_path / "dicom") == "dicom"
    assert detect_layout(tmp_path / "scan.nii.gz") == "nifti"


def test_isles2018_reads_5d_ctp_at_1s_core_and_rapid_maps(tmp_path: Path) -> None:
    case = read_isles2018(make_isles2018(tmp_path, n_frames=6))
    assert case.ctp_hu.shape == (*SHAPE, 6)
    np.testing.assert_array_equal(case.frame_times_s, np.arange(6.0))  # pixdim[4] unset -> 1 s
    np.testing.assert_array_equal(case.ctp_hu, ctp_values(n_frames=6))
    assert voxels(case.core) == [(4, 1, 2), (4, 2, 2)]
    maps = read_vendor_maps(case)
    # each map was written constant: CBF 1, CBV 2, MTT 3, Tmax 4
    assert {k: float(v.mean()) for k, v in maps.items()} == {
        "cbf": 1,
        "cbv": 2,
        "mtt": 3,
        "tmax": 4,
    }


def test_resample_nearest_through_world_affines() -> None:
    # a 1-D ramp along x on a LAS grid: value i at world x = 11 - i
    src = np.broadcast_to(np.arange(12.0)[:, None, None], (12, 10, 6)).copy()
    out = resample_nearest(src, NCCT_AFFINE, (6, 5, 3), np.diag([2.0, 2.0, 5.0, 1.0]))
    # CTP centres at x = 0, 2, ..., 10 -> source i = 11, 9, ..., 1
    np.testing.assert_array_equal(out[:, 0, 0], [11, 9, 7, 5, 3, 1])
    # z = 10 mm -> source k = 4 (inside); nothing falls outside in y for j <= 4 (y <= 8)
    assert not np.isnan(
        resample_nearest(src, NCCT_AFFINE, (6, 5, 3), np.diag([2.0, 2, 5, 1]), fill=np.nan)
    ).any()


def test_isles2024_lesion_resampled_onto_ctp_grid_and_nonbrain_nan(tmp_path: Path) -> None:
    make_isles2024(tmp_path)
    case = read_isles2024(tmp_path / "raw_data" / "sub-stroke0001")
    assert case.ctp_hu.shape == (*SHAPE, 8) and case.meta["ctp_file"].endswith("_ses-01_ctp.nii.gz")
    np.testing.assert_array_equal(case.frame_times_s, np.arange(8.0))
    assert voxels(case.core) == ISLES2024_CORE
    maps = read_vendor_maps(case)
    assert np.isnan(maps["tmax"][0]).all() and np.isnan(maps["cbf"][0]).all()  # -30 / 0 non-brain
    assert float(np.nanmean(maps["tmax"])) == 4.0 and float(np.nanmean(maps["cbf"])) == 50.0


def test_isles2024_root_with_several_subjects_needs_subject(tmp_path: Path) -> None:
    make_isles2024(tmp_path, subjects=("sub-stroke0001", "sub-stroke0002"))
    with pytest.raises(PerfusionError, match="2 subjects"):
        read_isles2024(tmp_path)
    assert read_any(tmp_path, subject="sub-stroke0002").meta["subject"] == "sub-stroke0002"


def _expected_dicom_hu(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Hand-derived HU at each NIfTI voxel: RAS world -> LPS -> DICOM (slice, row, column)."""
    ijk = np.indices(shape[:3]).reshape(3, -1)
    world = affine[:3, :3] @ ijk + affine[:3, 3:]
    x_lps, y_lps, z = -world[0], -world[1], world[2]
    col = np.rint((x_lps - DICOM_ORIGIN_LPS[0]) / 0.7).astype(int)
    row = np.rint((y_lps - DICOM_ORIGIN_LPS[1]) / 0.5).astype(int)
    sl = np.rint(z / 5.0).astype(int)
    frames = [dicom_hu(t, sl, row, col).reshape(shape[:3]) for t in range(shape[3])]
    return np.stack(frames, axis=-1).astype(np.float32)


def test_dicom_series_to_hu_with_nonuniform_times(tmp_path: Path) -> None:
    make_dicom_series(tmp_path / "dicom")
    case = read_any(tmp_path / "dicom")
    assert case.ctp_hu.shape == (DICOM_COLS, DICOM_ROWS, DICOM_SLICES, len(DICOM_TIMES_S))
    np.testing.assert_allclose(case.spacing_mm, [0.7, 0.5, 5.0], atol=1e-6)
    np.testing.assert_allclose(case.frame_times_s, DICOM_TIMES_S)  # first slice of each frame
    np.testing.assert_array_equal(case.ctp_hu, _expected_dicom_hu(case.affine, case.ctp_hu.shape))
    assert case.meta["frame_times_source"] == "DICOM AcquisitionTime"


def test_dicom_frame_times_group_by_position(tmp_path: Path) -> None:
    make_dicom_series(tmp_path / "dicom")
    slices = read_series(tmp_path / "dicom")
    np.testing.assert_allclose(group_frames(slices, tmp_path).times_s, DICOM_TIMES_S, atol=1e-6)
    with pytest.raises(PerfusionError, match="different numbers of frames"):
        group_frames(slices[:-1], tmp_path)


def test_convert_dicom_writes_case_with_frame_times(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make_dicom_series(tmp_path / "dicom")
    assert main(["convert", str(tmp_path / "dicom"), f"out={tmp_path / 'case'}"]) == 0
    sidecar = json.loads((tmp_path / "case" / "ctp.json").read_text())
    np.testing.assert_allclose(sidecar["FrameTimes"], DICOM_TIMES_S)
    case = read_case(tmp_path / "case")
    np.testing.assert_array_equal(case.ctp_hu, _expected_dicom_hu(case.affine, case.ctp_hu.shape))
    assert (tmp_path / "case" / "config.yaml").is_file()


def test_convert_isles2024_keeps_core_and_vendor_maps(tmp_path: Path) -> None:
    make_isles2024(tmp_path / "isles")
    out = tmp_path / "case"
    assert main(["convert", str(tmp_path / "isles"), f"out={out}"]) == 0
    case = read_case(out)
    assert voxels(case.core) == ISLES2024_CORE
    assert sorted(p.name for p in (out / "vendor").iterdir()) == ["cbf.nii.gz", "tmax.nii.gz"]
    # a second convert into the same folder must be asked for
    assert main(["convert", str(tmp_path / "isles"), f"out={out}"]) == 2
    (out / "aif.tsv").write_text("time\taif\n")  # stale: must not survive a new conversion
    assert main(["convert", str(tmp_path / "isles"), f"out={out}", "overwrite=true"]) == 0
    assert not (out / "aif.tsv").exists() and (out / "core.nii.gz").is_file()


def test_inspect_prints_timing_aif_and_core(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_case(tmp_path / "case")
    assert main(["inspect", str(tmp_path / "case")]) == 0
    text = capsys.readouterr().out
    assert "6 x 5 x 3 voxels x 8 frames, spacing 2 x 2 x 5 mm" in text
    assert "NON-uniform: intervals 1.00-3.00 s" in text
    assert "AIF: from" in text and "peak 310 HU at 5.0 s" in text
    assert "core: 2 voxels, 0.04 ml" in text  # 2 voxels x 0.02 ml


def test_inspect_isles2018_uniform_and_bare_nifti(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make_isles2018(tmp_path, n_frames=6)
    make_case(tmp_path / "nocurves", with_curves=False)
    assert main(["inspect", str(tmp_path / "case_1")]) == 0
    text = capsys.readouterr().out
    assert "uniform every 1.00 s" in text and "vendor maps (RAPID): cbf, cbv, mtt, tmax" in text
    assert main(["inspect", str(tmp_path / "nocurves" / "ctp.nii.gz")]) == 0
    assert "AIF: automatic" in capsys.readouterr().out


def test_choose_frame_times_prefers_headers_then_dcm2niix() -> None:
    headers, sidecar = np.array([0.0, 1.0, 3.0]), {"FrameTimesStart": [0, 2, 4]}
    assert choose_frame_times(headers, sidecar, 3)[1] == "DICOM AcquisitionTime"
    # one enhanced multi-frame file: one position, so the headers give 1 time for 3 frames
    times, source = choose_frame_times(np.array([0.0]), sidecar, 3)
    np.testing.assert_array_equal(times, [0, 2, 4])
    assert source == "dcm2niix FrameTimesStart"
    assert choose_frame_times(None, {}, 3) == (None, "NIfTI time step")


def test_two_series_in_one_folder_are_refused(tmp_path: Path) -> None:
    make_dicom_series(tmp_path / "dicom")
    make_dicom_series(tmp_path / "dicom", prefix="B")  # fresh SeriesInstanceUID
    with pytest.raises(PerfusionError, match="holds 2 DICOM series"):
        read_any(tmp_path / "dicom")


def test_convert_bare_nifti_keeps_sidecar_times(tmp_path: Path) -> None:
    save_nifti(tmp_path / "scan.nii.gz", ctp_values(n_frames=4), dt_s=2.0)
    (tmp_path / "scan.json").write_text('{"FrameTimes": [0, 1, 2.5, 6]}')
    assert main(["convert", str(tmp_path / "scan.nii.gz"), f"out={tmp_path / 'case'}"]) == 0
    np.testing.assert_array_equal(read_case(tmp_path / "case").frame_times_s, [0, 1, 2.5, 6])
    source = json.loads((tmp_path / "case" / "source.json").read_text())
    assert source["layout"] == "nifti" and source["source"].endswith("scan.nii.gz")
