"""CTP DICOM series -> :class:`~perfusion.io.Case` with per-frame acquisition times (dcm2niix).

dcm2niix (Li et al., J Neurosci Methods 2016) stacks the slices, applies RescaleSlope and
RescaleIntercept (scl_slope/scl_inter, so nibabel reads HU) and orients the volume. Before it
runs, every file is read with pydicom: an unreadable or truncated file fails here naming that
file, and the frame times are recomputed from the headers. A CTP series repeats each slice
position once per frame, so the k-th acquisition at every position belongs to frame k; the
frame's time is its earliest slice's AcquisitionTime (ContentTime when absent), in s from the
first frame. dcm2niix's own ``FrameTimesStart`` is used when the headers carry no times.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from perfusion.errors import PerfusionError
from perfusion.io import Case, read_ctp

POSITION_TOL_MM = 0.01
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


@dataclass
class DicomSlice:
    """One image's facts: slice position along the normal (mm) and acquisition time (s of day)."""

    path: Path
    series_uid: str
    position_mm: float
    time_s: float | None


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


def _acquisition_time_s(ds: pydicom.Dataset) -> float | None:
    """AcquisitionTime (else ContentTime) with its date, in s; None when neither is present."""
    for tm, da in (("AcquisitionTime", "AcquisitionDate"), ("ContentTime", "ContentDate")):
        if str(getattr(ds, tm, "")).strip():
            return _seconds(str(getattr(ds, tm)), str(getattr(ds, da, "")))
    return None


def read_slice(path: Path) -> DicomSlice:
    """Read one file's header and check its pixel data is complete (names the file if not)."""
    try:
        with warnings.catch_warnings():  # pydicom warns on every odd tag; faults raise below
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
        origin = np.asarray(ds.ImagePositionPatient, dtype=float)
        position = float(origin @ np.cross(orientation[:3], orientation[3:]))  # along the normal
        found = DicomSlice(path, str(ds.SeriesInstanceUID), position, _acquisition_time_s(ds))
        stored, expected = len(ds.PixelData), _expected_pixel_bytes(ds)
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
    except _READ_ERRORS as exc:
        raise PerfusionError(
            f"unreadable or truncated DICOM ({type(exc).__name__})", path
        ) from None
    if not compressed and stored < expected:
        raise PerfusionError(f"truncated DICOM: {stored} of {expected} pixel bytes", path)
    return found


def read_series(folder: Path) -> list[DicomSlice]:
    """Headers of every DICOM file under ``folder``; exactly one series is accepted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    for path in files:  # a named DICOM without its magic was cut short or is not DICOM
        if path.suffix.lower() in DICOM_SUFFIXES and not is_dicom_file(path):
            raise PerfusionError("unreadable or truncated DICOM (no DICM header)", path)
    slices = [read_slice(p) for p in files if is_dicom_file(p)]
    if not slices:
        raise PerfusionError("no DICOM files", folder)
    series = sorted({s.series_uid for s in slices})
    if len(series) > 1:
        raise PerfusionError(f"holds {len(series)} DICOM series; give the folder of one", folder)
    return slices


def frame_times_from_slices(slices: list[DicomSlice], folder: Path) -> np.ndarray | None:
    """Per-frame times (s from the first frame), or None when the headers carry no times.

    Slices are grouped by position (within 0.01 mm); each position must hold the same number of
    acquisitions T; frame k's time is the earliest k-th acquisition over positions.
    """
    if any(s.time_s is None for s in slices):
        return None
    positions = np.array([s.position_mm for s in slices])
    keys = np.round(positions / POSITION_TOL_MM).astype(np.int64)
    per_position = [
        np.sort([s.time_s for s, k in zip(slices, keys, strict=True) if k == key])
        for key in np.unique(keys)
    ]
    counts = {len(t) for t in per_position}
    if len(counts) != 1:
        raise PerfusionError(
            f"slice positions hold different numbers of frames ({sorted(counts)}); incomplete series",
            folder,
        )
    times = np.min(np.stack(per_position), axis=0)
    return times - times[0]


def run_dcm2niix(folder: Path, out: Path) -> tuple[Path, dict]:
    """Convert ``folder`` into ``out`` (gzip NIfTI + JSON); return the 4-D image and its sidecar."""
    # -z gzip, -b BIDS sidecar (FrameTimesStart), -ba anonymised sidecar, -f output name
    cmd = [find_dcm2niix(), *"-z y -b y -ba y -f ctp".split(), "-o", str(out), str(folder)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    images = sorted(out.glob("*.nii.gz"))
    if result.returncode != 0 or not images:
        text = (result.stdout + result.stderr).splitlines()
        lines = [ln for ln in text if "rror" in ln or "arning: File" in ln]
        detail = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise PerfusionError(f"dcm2niix failed: {detail}", folder)
    # gantry-tilted series come out twice; the tilt-corrected copy (_Tilt_) is on a true grid
    tilted = [p for p in images if "_Tilt" in p.name or "_Eq" in p.name]
    if len(images) > 1 and len(tilted) != 1:
        raise PerfusionError(f"dcm2niix wrote {len(images)} images; expected one 4-D CTP", folder)
    image = tilted[0] if len(images) > 1 else images[0]
    sidecar = image.with_name(image.name[: -len(".nii.gz")] + ".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return image, meta


def choose_frame_times(
    header_times: np.ndarray | None, sidecar: dict, n_frames: int
) -> tuple[np.ndarray | None, str]:
    """The frame times to use and where they came from.

    The headers' times win when their count matches the image; dcm2niix's ``FrameTimesStart``
    covers series whose headers lack times or hold them per frame inside one file (enhanced
    multi-frame CT). With neither, None: the NIfTI time step is used.
    """
    start = sidecar.get("FrameTimesStart")
    candidates = [(header_times, "DICOM AcquisitionTime"), (start, "dcm2niix FrameTimesStart")]
    for times, source in candidates:
        if times is not None and len(times) == n_frames:
            return np.asarray(times, dtype=np.float64), source
    if header_times is not None:  # wrong count: let validation name the mismatch
        return header_times, "DICOM AcquisitionTime"
    return None, "NIfTI time step"


def read_dicom_series(folder: str | Path) -> Case:
    """Read a CTP DICOM series (one series, any file names) into a :class:`Case` in HU.

    Frame times come from the DICOM headers (see module docstring), else from dcm2niix's
    ``FrameTimesStart``; values must be HU after rescale (stored values are refused).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PerfusionError("DICOM folder not found", folder)
    slices = read_series(folder)
    header_times = frame_times_from_slices(slices, folder)
    with tempfile.TemporaryDirectory(prefix="perfusion-dcm2niix-") as tmp:
        image, sidecar = run_dcm2niix(folder, Path(tmp))
        shape = nib.load(str(image)).shape
        times, source = choose_frame_times(
            header_times, sidecar, shape[-1] if len(shape) > 3 else 1
        )
        try:
            ctp, affine, times = read_ctp(image, times)
        except PerfusionError as exc:  # name the DICOM folder, not the temporary NIfTI
            raise PerfusionError(exc.fault, folder) from None
    meta = {"layout": "dicom", "frame_times_source": source, "n_files": len(slices)}
    keys = ("Manufacturer", "ManufacturersModelName", "ConvolutionKernel", "KVP")
    meta["scanner"] = {k: sidecar[k] for k in keys if k in sidecar}
    return Case(path=folder, ctp_hu=ctp, affine=affine, frame_times_s=times, meta=meta)
