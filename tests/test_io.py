"""Case folder I/O: round trips, frame-time sources, the HU check, curves and atomic writing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from layouts import AFFINE, SHAPE, TIMES_S, ctp_values, make_case, save_nifti

from perfusion.errors import PerfusionError
from perfusion.io import (
    InputCurves,
    atomic_dir,
    check_hu,
    read_case,
    read_ctp,
    read_curves,
    voxel_spacing_mm,
    write_curves,
    write_nifti_atomic,
)


def test_case_round_trip_keeps_values_times_curves_and_masks(tmp_path: Path) -> None:
    written = make_case(tmp_path / "case")
    case = read_case(tmp_path / "case")
    np.testing.assert_array_equal(case.ctp_hu, written.ctp_hu)
    np.testing.assert_array_equal(case.frame_times_s, TIMES_S)
    np.testing.assert_allclose(case.affine, AFFINE)
    np.testing.assert_allclose(case.curves.aif_hu, written.curves.aif_hu, rtol=1e-5)
    assert case.brainmask.sum() == 5 * 5 * 3 and case.core.sum() == 2
    # 2 x 2 x 5 mm voxels hold 0.02 ml each
    assert case.voxel_volume_ml == pytest.approx(0.02)
    np.testing.assert_allclose(voxel_spacing_mm(case.affine), [2.0, 2.0, 5.0])
    # pixdim[4] carries the median interval for tools that ignore ctp.json (intervals 1-3 s)
    zooms = nib.load(str(tmp_path / "case" / "ctp.nii.gz")).header.get_zooms()
    assert zooms[3] == pytest.approx(np.median(np.diff(TIMES_S)))
    # stored as int16 counts of 0.1 HU: integer HU (as scanners store them) come back exactly
    image = nib.load(str(tmp_path / "case" / "ctp.nii.gz"))
    assert image.get_data_dtype() == np.int16
    assert (image.dataobj.slope, image.dataobj.inter) == (np.float32(0.1), 0.0)


def test_int16_storage_rounds_to_the_slope_and_widens_it_for_large_ranges(tmp_path: Path) -> None:
    values = np.array([-1000.0, 0.0, 37.0, 12.34, -0.06], dtype=np.float32).reshape(1, 1, 1, 5)
    write_nifti_atomic(tmp_path / "a.nii.gz", values, AFFINE, store_dtype=np.int16)
    back = nib.load(str(tmp_path / "a.nii.gz")).get_fdata(dtype=np.float32).ravel()
    np.testing.assert_allclose(back, [-1000.0, 0.0, 37.0, 12.3, -0.1], atol=1e-4)
    # +-20000 HU: 0.1, 0.2 and 0.4 HU steps overflow int16 (200000, 100000, 50000 counts),
    # 0.8 HU gives 25000 counts; every value is then within half a step (0.4 HU)
    wide = np.array([-20000.0, 0.3, 123.45, 20000.0], dtype=np.float32).reshape(1, 1, 1, 4)
    write_nifti_atomic(tmp_path / "b.nii.gz", wide, AFFINE, store_dtype=np.int16)
    image = nib.load(str(tmp_path / "b.nii.gz"))
    assert (image.dataobj.slope, image.dataobj.inter) == (np.float32(0.8), 0.0)
    back = image.get_fdata(dtype=np.float32).ravel()
    assert np.abs(back - wide.ravel()).max() <= 0.4 + 1e-3


def test_frame_times_from_pixdim_with_units(tmp_path: Path) -> None:
    image = nib.Nifti1Image(ctp_values(n_frames=4), AFFINE)
    image.header.set_xyzt_units("mm", "msec")
    image.header.set_zooms((2.0, 2.0, 5.0, 1500.0))
    nib.save(image, str(tmp_path / "scan.nii.gz"))
    _, _, times = read_ctp(tmp_path / "scan.nii.gz")
    np.testing.assert_allclose(times, [0.0, 1.5, 3.0, 4.5])


def test_unset_time_step_defaults_to_one_second_and_5d_is_squeezed(tmp_path: Path) -> None:
    data = ctp_values(n_frames=3)[:, :, :, None, :]  # ISLES 2018 style (X, Y, Z, 1, T)
    save_nifti(tmp_path / "scan.nii", data, dt_s=0.0)
    ctp, _, times = read_ctp(tmp_path / "scan.nii")
    assert ctp.shape == (*SHAPE, 3)
    np.testing.assert_allclose(times, [0.0, 1.0, 2.0])


def test_sidecar_frame_times_win_over_pixdim(tmp_path: Path) -> None:
    save_nifti(tmp_path / "scan.nii.gz", ctp_values(n_frames=3), dt_s=2.0)
    (tmp_path / "scan.json").write_text('{"FrameTimes": [0, 1.5, 4]}')
    np.testing.assert_allclose(read_ctp(tmp_path / "scan.nii.gz")[2], [0.0, 1.5, 4.0])


def _brain(background: float, brain: float = 30.0) -> np.ndarray:
    """A 20^3 head: background outside a radius-9 ball of brain; a 1-voxel shell of skull."""
    grid = np.indices((20, 20, 20)) - 9.5
    radius = np.sqrt((grid**2).sum(0))
    data = np.full((20, 20, 20), background, np.float32)
    data[radius < 9.5] = brain + np.random.default_rng(0).normal(0, 3, (radius < 9.5).sum())
    return data, radius


def test_check_hu_accepts_skull_stripped_hu_with_zero_background() -> None:
    data, _ = _brain(background=0.0)  # brain ~30 HU, no voxel below 0 after clipping
    check_hu(np.clip(data, 0, None), Path("stripped.nii.gz"))


def test_check_hu_accepts_masked_hu_that_keeps_the_skull() -> None:
    data, radius = _brain(background=0.0)
    shell = (radius >= 8.5) & (radius < 9.5)
    data[shell] = np.linspace(300, 2000, shell.sum())  # bone spread over its HU range
    check_hu(np.clip(data, 0, None), Path("masked.nii.gz"))


def test_check_hu_accepts_hu_with_air_and_padding() -> None:
    data, _ = _brain(background=-1000.0)
    data[:2] = -3024.0  # outside the reconstruction circle
    check_hu(data, Path("scan.nii.gz"))


@pytest.mark.parametrize("background", [24.0, 0.0], ids=["air-stored", "stripped-stored"])
def test_check_hu_refuses_stored_values(background: float) -> None:
    data, _ = _brain(background=background, brain=30.0 + 1024.0)
    with pytest.raises(PerfusionError, match="stored CT values"):
        check_hu(data, Path("raw.nii.gz"))


def test_check_hu_refuses_values_beyond_int16() -> None:
    with pytest.raises(PerfusionError, match="outside any HU range"):
        check_hu(np.array([0.0, 40000.0]), Path("scaled.nii.gz"))


def test_curves_round_trip_and_coverage(tmp_path: Path) -> None:
    aif = np.array([5.0, 5.0, 200.0, 80.0])
    write_curves(tmp_path / "aif.tsv", InputCurves(np.array([0.0, 1.0, 2.0, 3.0]), aif, aif / 2))
    curves = read_curves(tmp_path / "aif.tsv", np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_allclose(curves.vof_hu, [2.5, 2.5, 100.0, 40.0])
    # covers 0-3 s, not 0-6 s
    with pytest.raises(PerfusionError, match="do not cover"):
        read_curves(tmp_path / "aif.tsv", np.array([0.0, 2.0, 4.0, 6.0]))


def test_curves_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "aif.tsv").write_text("t\taif\n0\t1\n1\t300\n")
    with pytest.raises(PerfusionError, match="missing column 'time'"):
        read_curves(tmp_path / "aif.tsv")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_truncated_gzip_is_one_line_error(tmp_path: Path) -> None:
    save_nifti(tmp_path / "scan.nii.gz", ctp_values())
    payload = (tmp_path / "scan.nii.gz").read_bytes()
    (tmp_path / "scan.nii.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(PerfusionError, match="unreadable or truncated NIfTI") as info:
        read_ctp(tmp_path / "scan.nii.gz")
    assert "\n" not in str(info.value) and str(info.value).startswith("scan.nii.gz: ")


def test_dcm2niix_frame_times_start_is_read(tmp_path: Path) -> None:
    save_nifti(tmp_path / "scan.nii.gz", ctp_values(n_frames=3), dt_s=2.5)  # pixdim: the mean
    (tmp_path / "scan.json").write_text('{"FrameTimesStart": [0, 1, 5]}')
    np.testing.assert_allclose(read_ctp(tmp_path / "scan.nii.gz")[2], [0.0, 1.0, 5.0])


def test_frame_times_that_are_not_numbers(tmp_path: Path) -> None:
    save_nifti(tmp_path / "scan.nii.gz", ctp_values(n_frames=3))
    (tmp_path / "scan.json").write_text('{"FrameTimes": [0, "one", 2]}')
    with pytest.raises(PerfusionError, match="scan.json: FrameTimes is not a list of numbers"):
        read_ctp(tmp_path / "scan.nii.gz")
