"""CTP DICOM series -> :class:`~perfusion.io.Case` with per-frame acquisition times (dcm2niix).

dcm2niix (Li et al., J Neurosci Methods 2016) stacks the slices, applies RescaleSlope and
RescaleIntercept (scl_slope/scl_inter, so nibabel reads HU) and orients the volume. Before it
runs, every file is read with pydicom: an unreadable or truncated file fails here naming that
file, and the frames are found and timed from the headers (:mod:`perfusion.datasets.dicom_frames`:
time tag choice, midnight wrap, gaps, incomplete frames). A folder holding several series names
them; ``series=N`` picks one. When a series or frames are left out, dcm2niix reads a folder of
links to the kept files only. dcm2niix's own ``FrameTimesStart`` is used when the headers carry
no times.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from perfusion.datasets.dicom_frames import (
    POSITION_TOL_MM,  # noqa: F401  (re-exported)
    DicomSlice,
    group_frames,
)
from perfusion.errors import PerfusionError
from perfusion.io import Case, read_ctp

DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


def find_dcm2niix() -> str:
    """The dcm2niix binary: the pip package's, the venv's, or one on PATH."""
    try:
        import dcm2niix  # the PyPI package ships the binary beside its __init__

        if Path(dcm2niix.bin).is_file():
            return str(dcm2niix.bin)
    except ImportError:
        pass
    for candidate in (Path(sys.executable).parent / "dcm2niix", shutil.which("dcm2niix")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise PerfusionError("dcm2niix not found (pip install dcm2niix)")


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts with the DICOM preamble and ``DICM`` magic."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _seconds(time_text: str, date_text: str = "") -> float:
    """DICOM TM ``HHMMSS.ffffff`` (plus an optional DA ``YYYYMMDD``) as seconds."""
    text = time_text.strip().replace(":", "")
    hours, minutes = int(text[0:2]), int(text[2:4] or 0)
    seconds = float(text[4:] or 0)
    day = 0.0
    if date_text.strip():
        day = float(
            np.datetime64(f"{date_text[:4]}-{date_text[4:6]}-{date_text[6:8]}", "D").astype(int)
        )
    return day * 86400.0 + hours * 3600.0 + minutes * 60.0 + seconds


# what pydicom raises for missing tags, malformed values and files cut short in the header
_READ_ERRORS = (
    InvalidDicomError,
    AttributeError,
    KeyError,
    ValueError,
    TypeError,
    OSError,
    EOFError,
)


def _expected_pixel_bytes(ds: pydicom.Dataset) -> int:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * frames
    return samples * int(ds.BitsAllocated) // 8


def _times_s(ds: pydicom.Dataset) -> dict[str, float]:
    """Every time tag present, in s: AcquisitionTime and ContentTime with their dates (s of
    day plus days), TriggerTime (ms) and TemporalPositionTimeOffset (s) from the scan start."""
    times = {}
    for tm, da in (("AcquisitionTime", "AcquisitionDate"), ("ContentTime", "ContentDate")):
        if str(getattr(ds, tm, "")).strip():
            times[tm] = _seconds(str(getattr(ds, tm)), str(getattr(ds, da, "")))
    for tag, scale in (("TriggerTime", 1e-3), ("TemporalPositionTimeOffset", 1.0)):
        if str(getattr(ds, tag, "")).strip():
            times[tag] = float(getattr(ds, tag)) * scale
    return times


def read_slice(path: Path) -> DicomSlice:
    """Read one file's header and check its pixel data is complete (names the file if not)."""
    try:
        with warnings.catch_warnings():  # pydicom warns on every odd tag; faults raise below
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        origin = np.asarray(ds.ImagePositionPatient, dtype=float)
        position = float(origin @ np.cross(orientation[:3], orientation[3:]))  # along the normal
        number = str(getattr(ds, "SeriesNumber", "")).strip()
        found = DicomSlice(
            path,
            str(ds.SeriesInstanceUID),
            position,
            _times_s(ds),
            int(float(number)) if number else None,
            str(getattr(ds, "SeriesDescription", "")).strip(),
        )
        stored, expected = len(ds.PixelData), _expected_pixel_bytes(ds)
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
    except _READ_ERRORS as exc:
        raise PerfusionError(
            f"unreadable or truncated DICOM ({type(exc).__name__})", path
        ) from None
    if not compressed and stored < expected:
        raise PerfusionError(f"truncated DICOM: {stored} of {expected} pixel bytes", path)
    return found


def read_series(folder: Path, series: int | None = None) -> list[DicomSlice]:
    """Headers of every DICOM file under ``folder``: its one series, or series number ``series``.

    Raises:
        PerfusionError: no DICOM file, or several series and none chosen (each listed with its
            number, description and image count), or no series of that number.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    for path in files:  # a named DICOM without its magic was cut short or is not DICOM
        if path.suffix.lower() in DICOM_SUFFIXES and not is_dicom_file(path):
            raise PerfusionError("unreadable or truncated DICOM (no DICM header)", path)
    slices = [read_slice(p) for p in files if is_dicom_file(p)]
    if not slices:
        raise PerfusionError("no DICOM files", folder)
    groups: dict[str, list[DicomSlice]] = {}
    for item in slices:
        groups.setdefault(item.series_uid, []).append(item)
    listed = sorted(groups.values(), key=lambda g: (g[0].series_number or 0, g[0].series_uid))
    if series is not None:
        chosen = [g for g in listed if g[0].series_number == series]
        if len(chosen) != 1:
            fault = "no series" if not chosen else f"{len(chosen)} series share the number"
            raise PerfusionError(f"{fault} {series} (holds {_series_list(listed)})", folder)
        return chosen[0]
    if len(listed) > 1:
        raise PerfusionError(
            f"holds {len(listed)} DICOM series: {_series_list(listed)}; pick one with series=N",
            folder,
        )
    return slices


def _series_list(groups: list[list[DicomSlice]]) -> str:
    """``3 'CTP 5mm' (60 images), 4 'MIP' (12 images)``: number, description, image count."""
    return ", ".join(
        f"{g[0].series_number if g[0].series_number is not None else '?'} "
        f"'{g[0].description or 'no description'}' ({len(g)} images)"
        for g in groups
    )


def run_dcm2niix(folder: Path, out: Path, named: Path | None = None) -> tuple[Path, dict]:
    """Convert ``folder`` into ``out`` (gzip NIfTI + JSON); return the 4-D image and its sidecar.

    ``named``: the folder errors name (the user's, when ``folder`` is a temporary one of links).
    """
    named = folder if named is None else named
    out.mkdir(parents=True, exist_ok=True)
    # -z gzip, -b BIDS sidecar (FrameTimesStart), -ba anonymised sidecar, -f output name
    cmd = [find_dcm2niix(), *"-z y -b y -ba y -f ctp".split(), "-o", str(out), str(folder)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    images = sorted(out.glob("*.nii.gz"))
    if result.returncode != 0 or not images:
        text = (result.stdout + result.stderr).splitlines()
        lines = [ln for ln in text if "rror" in ln or "arning: File" in ln]
        detail = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise PerfusionError(f"dcm2niix failed: {detail}", named)
    # gantry-tilted series come out twice; the tilt-corrected copy (_Tilt_) is on a true grid
    tilted = [p for p in images if "_Tilt" in p.name or "_Eq" in p.name]
    if len(images) > 1 and len(tilted) != 1:
        raise PerfusionError(f"dcm2niix wrote {len(images)} images; expected one 4-D CTP", named)
    image = tilted[0] if len(images) > 1 else images[0]
    sidecar = image.with_name(image.name[: -len(".nii.gz")] + ".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return image, meta


def choose_frame_times(
    header_times: np.ndarray | None, sidecar: dict, n_frames: int, tag: str = "AcquisitionTime"
) -> tuple[np.ndarray | None, str]:
    """The frame times to use and where they came from.

    The headers' times (from time tag ``tag``) win when their count matches the image;
    dcm2niix's ``FrameTimesStart`` covers series whose headers lack times or hold them per
    frame inside one file (enhanced multi-frame CT). With neither, None: the NIfTI time step.
    """
    start = sidecar.get("FrameTimesStart")
    candidates = [(header_times, f"DICOM {tag}"), (start, "dcm2niix FrameTimesStart")]
    for times, source in candidates:
        if times is not None and len(times) == n_frames:
            return np.asarray(times, dtype=np.float64), source
    if header_times is not None:  # wrong count: let validation name the mismatch
        return header_times, f"DICOM {tag}"
    return None, "NIfTI time step"


def read_dicom_series(
    folder: str | Path, series: int | None = None, drop_incomplete: bool = False
) -> Case:
    """Read a CTP DICOM series (any file names) into a :class:`Case` in HU.

    Args:
        folder: the series' folder; one holding several series needs ``series``.
        series: the SeriesNumber to read when the folder holds several.
        drop_incomplete: leave out frames that lack a slice instead of refusing the series.

    Frame times come from the DICOM headers (see module docstring), else from dcm2niix's
    ``FrameTimesStart``; values must be HU after rescale (stored values are refused). What was
    fixed on the way (a midnight wrap, dropped frames) is printed as one line each on stderr and
    kept in ``meta["notes"]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PerfusionError("DICOM folder not found", folder)
    slices = read_series(folder, series)
    frames = group_frames(slices, folder, drop_incomplete)
    kept = [s for frame in frames.members for s in frame]
    with tempfile.TemporaryDirectory(prefix="perfusion-dcm2niix-") as tmp:
        source_dir = folder
        if len(kept) < _count_dicom_files(folder):  # another series or dropped frames
            source_dir = _link_files(kept, Path(tmp) / "input")
        image, sidecar = run_dcm2niix(source_dir, Path(tmp) / "output", folder)
        shape = nib.load(str(image)).shape
        times, source = choose_frame_times(
            frames.times_s, sidecar, shape[-1] if len(shape) > 3 else 1, frames.source
        )
        try:
            ctp, affine, times = read_ctp(image, times)
        except PerfusionError as exc:  # name the DICOM folder, not the temporary NIfTI
            raise PerfusionError(exc.fault, folder) from None
    for note in frames.notes:
        print(f"[dicom] {folder}: {note}", file=sys.stderr)
    meta = {"layout": "dicom", "frame_times_source": source, "n_files": len(kept)}
    meta["series"] = {"number": slices[0].series_number, "description": slices[0].description}
    if frames.notes:
        meta["notes"] = list(frames.notes)
    if frames.dropped:
        meta["dropped_frames"] = [i + 1 for i in frames.dropped]
    keys = ("Manufacturer", "ManufacturersModelName", "ConvolutionKernel", "KVP")
    meta["scanner"] = {k: sidecar[k] for k in keys if k in sidecar}
    return Case(path=folder, ctp_hu=ctp, affine=affine, frame_times_s=times, meta=meta)


def _count_dicom_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and is_dicom_file(p))


def _link_files(slices: list[DicomSlice], into: Path) -> Path:
    """A folder of links (copies where links fail) to the kept images, for dcm2niix."""
    into.mkdir(parents=True)
    for index, item in enumerate(slices):
        target = into / f"{index:06d}.dcm"
        try:
            os.symlink(item.path.resolve(), target)
        except OSError:  # e.g. no symlinks on this file system
            shutil.copyfile(item.path, target)
    return into
