"""What scanner exports get wrong: midnight, gaps, frozen AcquisitionTime, missing slices, series.

Each series is 3 slices (5 mm apart) x N frames written with pydicom (layouts.py's CT header);
pixel values are ``dicom_hu`` + 1024, so a frame's mean HU minus frame 0's is 10 x its frame
number: the tests check which frames were read, in which order, with which times.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from layouts import (
    DICOM_COLS,
    DICOM_ORIGIN_LPS,
    DICOM_ROWS,
    DICOM_SLICES,
    _ct_dataset,
    _tm,
    dicom_hu,
)
from pydicom.uid import generate_uid

from perfusion.cli import main
from perfusion.datasets import read_any
from perfusion.datasets.dicom_frames import unwrap_midnight
from perfusion.errors import PerfusionError

START_S = 10 * 3600.0


def write_series(
    folder: Path,
    times_s: list[float],
    clock: Callable[[int, int], float] | None = None,
    date: str | None = "20240101",
    skip: tuple[tuple[int, int], ...] = (),
    number: int = 3,
    description: str = "CTP 5mm",
    hu_offset: int = 0,
    **tags: Callable[[int, int], object],
) -> Path:
    """A series whose frame t, slice z has AcquisitionTime ``clock(t, z)`` (s of day; default
    START_S + times_s[t] + 0.1 z); ``tags`` set other tags per image; ``skip`` (t, z) are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame_uid = generate_uid(), generate_uid(), generate_uid()
    rows, cols = np.meshgrid(np.arange(DICOM_ROWS), np.arange(DICOM_COLS), indexing="ij")
    count = 0
    for t, time_s in enumerate(times_s):
        for z in range(DICOM_SLICES):
            count += 1
            if (t, z) in skip:
                continue
            ds = _ct_dataset(series, study, frame_uid, count)
            ds.SeriesNumber, ds.SeriesDescription = number, description
            ds.AcquisitionNumber = t + 1
            ds.AcquisitionTime = _tm(clock(t, z) if clock else START_S + time_s + 0.1 * z)
            if date is None:
                del ds.AcquisitionDate
            else:
                ds.AcquisitionDate = date
            for tag, value in tags.items():
                setattr(ds, tag, value(t, z))
            ds.ImagePositionPatient = [DICOM_ORIGIN_LPS[0], DICOM_ORIGIN_LPS[1], 5.0 * z]
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
            ds.PixelData = (
                (dicom_hu(t, z, rows, cols) + 1024 + hu_offset).astype(np.uint16).tobytes()
            )
            ds.save_as(folder / f"S{number}-{(count * 7) % 97:04d}", enforce_file_format=True)
    return folder


def frames_read(ctp: np.ndarray) -> list[int]:
    """Which written frame each read frame is (from its mean HU, 10 HU per frame)."""
    means = ctp.reshape(-1, ctp.shape[-1]).mean(0)
    return [int(v) for v in np.rint((means - means[0]) / 10.0)]


def test_unwrap_midnight_by_hand() -> None:
    times, wrapped = unwrap_midnight(np.array([86390.0, 86395.0, 0.0, 5.0]))
    np.testing.assert_array_equal(times, [86390, 86395, 86400, 86405])
    assert wrapped
    assert not unwrap_midnight(np.array([100.0, 3700.0]))[1]  # an hour apart: no wrap


@pytest.mark.parametrize("date", ["20240101", None], ids=["date-frozen", "date-removed"])
def test_frame_times_that_wrap_at_midnight_are_unwrapped_and_said(
    tmp_path: Path, date: str | None, capsys: pytest.CaptureFixture
) -> None:
    times = [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 27.0]  # 86385 .. 86399, 0 .. 12
    folder = write_series(
        tmp_path / "dicom",
        times,
        clock=lambda t, z: (86385.0 + times[t] + 0.1 * z) % 86400,
        date=date,
    )
    case = read_any(folder)
    np.testing.assert_allclose(case.frame_times_s, times, atol=1e-6)
    assert frames_read(case.ctp_hu) == list(range(10))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "frame times cross midnight" in err, err
    assert case.meta["notes"] == [err.split(": ", 1)[1].strip()]


def test_gap_longer_than_a_minute_is_refused_naming_the_frames(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "dicom", [0.0, 1.0, 2.0, 70.0, 71.0])
    with pytest.raises(PerfusionError, match=r"dicom: frames 3 and 4 are 68 s apart"):
        read_any(folder)


@pytest.mark.parametrize(
    ("tag", "value", "source"),
    [
        ("ContentTime", lambda t, z: _tm(START_S + [0, 2, 5, 9][t] + 0.1 * z), "ContentTime"),
        ("TriggerTime", lambda t, z: 1000.0 * [0, 2, 5, 9][t] + 100.0 * z, "TriggerTime"),
    ],
)
def test_constant_acquisition_time_falls_back_to_another_time_tag(
    tmp_path: Path, tag: str, value, source: str
) -> None:
    folder = write_series(
        tmp_path / "dicom", [0, 2, 5, 9], clock=lambda t, z: START_S, **{tag: value}
    )
    case = read_any(folder)
    np.testing.assert_allclose(case.frame_times_s, [0, 2, 5, 9], atol=1e-6)
    assert case.meta["frame_times_source"] == f"DICOM {source}"
    assert frames_read(case.ctp_hu) == [0, 1, 2, 3]


def test_constant_acquisition_time_alone_is_refused(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "dicom", [0, 2, 5, 9], clock=lambda t, z: START_S)
    with pytest.raises(PerfusionError, match="AcquisitionTime repeats .* frame times are unknown"):
        read_any(folder)


def test_incomplete_frame_is_named_and_dropped_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = write_series(tmp_path / "dicom", [0, 1, 2, 4, 7], skip=((2, 1),))
    with pytest.raises(PerfusionError) as info:
        read_any(folder)
    text = str(info.value)
    assert "\n" not in text and text.startswith("dicom: slice positions hold different numbers")
    assert "frame 3 of 5 (index 2) lacks the slice at 5.00 mm" in text
    assert "drop_incomplete=true" in text
    case = read_any(folder, drop_incomplete=True)
    np.testing.assert_allclose(case.frame_times_s, [0, 1, 4, 7], atol=1e-6)
    assert frames_read(case.ctp_hu) == [0, 1, 3, 4]
    assert case.meta["dropped_frames"] == [3]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dropped frame 3 of 5" in err, err


def test_several_series_are_listed_and_one_is_picked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_series(tmp_path / "dicom", [0, 1, 2, 4])
    write_series(tmp_path / "dicom", [0, 2, 4], number=4, description="MIP", hu_offset=-200)
    with pytest.raises(PerfusionError) as info:
        read_any(tmp_path / "dicom")
    assert str(info.value) == (
        "dicom: holds 2 DICOM series: 3 'CTP 5mm' (12 images), 4 'MIP' (9 images); "
        "pick one with series=N"
    )
    case = read_any(tmp_path / "dicom", series=4)
    assert case.ctp_hu.shape[3] == 3 and case.meta["series"] == {"number": 4, "description": "MIP"}
    assert case.ctp_hu.min() == 30 - 200  # the offset series, not the other
    np.testing.assert_allclose(case.frame_times_s, [0, 2, 4], atol=1e-6)
    assert read_any(tmp_path / "dicom", series=3).ctp_hu.shape[3] == 4
    with pytest.raises(PerfusionError, match=r"no series 7 \(holds 3 'CTP 5mm'"):
        read_any(tmp_path / "dicom", series=7)
    assert main(["inspect", str(tmp_path / "dicom")]) == 2  # through the CLI: one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pick one with series=N" in err


def test_convert_and_inspect_take_series_and_drop_incomplete(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_series(tmp_path / "dicom", [0, 1, 2, 4])
    write_series(tmp_path / "dicom", [0, 2, 4], number=4, description="MIP", hu_offset=-200)
    out = tmp_path / "case"
    assert main(["convert", str(tmp_path / "dicom"), f"out={out}", "series=4"]) == 0
    case = read_any(out)  # the case folder convert wrote: the offset series' 3 frames
    assert case.ctp_hu.shape[3] == 3 and case.ctp_hu.min() == 30 - 200
    np.testing.assert_allclose(case.frame_times_s, [0, 2, 4], atol=1e-3)
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "dicom"), "series=3"]) == 0
    assert "frames: 4 frames, 0.00-4.00 s" in capsys.readouterr().out
    write_series(tmp_path / "gappy", [0, 1, 2, 4, 7], skip=((2, 1),))
    assert main(["inspect", str(tmp_path / "gappy")]) == 2
    assert "drop_incomplete=true" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "gappy"), "drop_incomplete=true"]) == 0
    assert "frames: 4 frames, 0.00-7.00 s" in capsys.readouterr().out
