"""The case folder contract, its validating reader and atomic writers.

A case is a folder holding:

- ``ctp.nii.gz``: 4-D CTP in HU, axes (x, y, z, t); frame times in seconds from the sidecar
  ``ctp.json`` key ``FrameTimes`` (BIDS style), else from the NIfTI time step (pixdim[4] and its
  xyzt units). Non-uniform frame times are allowed.
- ``aif.tsv`` (optional): tab-separated, header ``time`` (s), ``aif`` (HU), optional ``vof`` (HU).
- ``brainmask.nii.gz`` (optional) and ``core.nii.gz`` (optional reference infarct core).

Every fault is a :class:`PerfusionError` naming the file. Writers go through a temporary file
and ``os.replace`` so that a failed run never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from perfusion.atomic import (  # noqa: F401  (re-exported: the case writers' public names)
    atomic_dir,
    atomic_target,
    json_default,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from perfusion.errors import PerfusionError

CTP_FILE = "ctp.nii.gz"
SIDECAR_FILE = "ctp.json"
AIF_FILE = "aif.tsv"
BRAINMASK_FILE = "brainmask.nii.gz"
CORE_FILE = "core.nii.gz"
CORE_LABEL_KEY = "core_label"
"""The key (FitConfig, convert, inspect, preprocess) that picks the core's label of a label image."""
CTP_STORE_STEP_HU = 0.1
"""HU per count of the int16 ``ctp.nii.gz`` (scl_slope): +-0.05 HU, far below CT noise (~5-10 HU);
integer HU (what scanners store) come back exactly; a range beyond +-3276 HU gets a coarser slope."""

_TIME_UNIT_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}
SPACING_RANGE_MM = (0.05, 50.0)
"""Accepted voxel size per axis (mm): CT in-plane 0.2-1 mm, slices 0.5-10 mm, phantoms 1-6 mm.
Outside it the affine is broken (0, NaN, metres, microns) and volumes in ml would be nonsense."""
MAX_FRAME_GAP_S = 60.0
"""Longest accepted interval between frames (s): CTP samples every 1-3 s, late phases every
5-10 s; a minute is a second scan, lost frames, or times in ms read as s."""


@dataclass
class InputCurves:
    """Arterial (and venous) input curves: ``time_s`` (T,), ``aif_hu`` (T,), ``vof_hu`` (T,) or None."""

    time_s: np.ndarray
    aif_hu: np.ndarray
    vof_hu: np.ndarray | None = None
    source: str = "file"


class VoxelGeometry:
    """Voxel size and volume of anything with a voxel-to-world ``affine`` (mm)."""

    affine: np.ndarray

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size (3,) in mm from the affine's column norms."""
        return voxel_spacing_mm(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        return voxel_volume_ml(self.affine)


@dataclass
class Case(VoxelGeometry):
    """One CTP scan with its optional curves and masks, as read from a case folder.

    Attributes:
        path: the case folder.
        ctp_hu: float32 (X, Y, Z, T) attenuation in HU.
        affine: (4, 4) voxel-to-world (RAS mm) affine of the scan.
        frame_times_s: float64 (T,) acquisition time of each frame, strictly increasing.
        curves: the ``aif.tsv`` curves, or None (then selected automatically).
        brainmask: bool (X, Y, Z) or None.
        core: bool (X, Y, Z) reference infarct core, or None.
        meta: free-form facts found while reading (source layout, original file names).
    """

    path: Path
    ctp_hu: np.ndarray
    affine: np.ndarray
    frame_times_s: np.ndarray
    curves: InputCurves | None = None
    brainmask: np.ndarray | None = None
    core: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.ctp_hu.shape[:3])  # type: ignore[return-value]


def voxel_spacing_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel size (3,) in mm: the norms of the affine's first three columns."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def voxel_volume_ml(affine: np.ndarray) -> float:
    """One voxel's volume in ml: the product of :func:`voxel_spacing_mm` / 1000."""
    return float(np.prod(voxel_spacing_mm(affine))) / 1000.0


# ---------------------------------------------------------------------------------------------
# Reading


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Load a NIfTI image fully into memory, turning every reader failure into one line."""
    path = Path(path)
    if not path.is_file():
        raise PerfusionError("file not found", path)
    try:
        image = nib.load(str(path))
        image.get_fdata(dtype=np.float32)  # forces the read: truncated gzip fails here
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise PerfusionError(
            f"unreadable or truncated NIfTI ({type(exc).__name__})", path
        ) from None
    return image


def read_ctp(
    path: str | Path, frame_times_s: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a 4-D CTP NIfTI and its frame times: (ctp_hu float32 XYZT, affine, frame_times_s).

    Args:
        path: the NIfTI file; (X, Y, Z, 1, T) images (some ISLES 2018 files) are squeezed.
        frame_times_s: (T,) times in s known from elsewhere (e.g. DICOM headers); when None they
            come from the sidecar or the NIfTI time step (:func:`read_frame_times`).
    """
    path = Path(path)
    image = load_nifti(path)
    data = image.get_fdata(dtype=np.float32)  # cached by load_nifti: the file is decoded once
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, T), as some ISLES 2018 files
        data = data[:, :, :, 0, :]
    if data.ndim != 4:
        raise PerfusionError(f"{data.ndim}-D image, expected 4-D (x, y, z, t)", path)
    if data.shape[3] < 2:
        raise PerfusionError(f"only {data.shape[3]} frame, expected a time series", path)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise PerfusionError(f"{bad} NaN/Inf voxel values", path)
    check_hu(data, path)
    check_affine(image.affine, path)
    if frame_times_s is None:
        times = read_frame_times(path, image, data.shape[3])
    else:
        times = validate_frame_times(frame_times_s, data.shape[3], path)
    return data, image.affine.astype(np.float64), times


def check_affine(affine: np.ndarray, path: Path) -> None:
    """Refuse a voxel-to-world affine that is not finite, is degenerate, or has absurd spacing."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise PerfusionError("affine (voxel-to-world) holds NaN/Inf", path)
    spacing = voxel_spacing_mm(affine)
    low, high = SPACING_RANGE_MM
    if np.any(spacing < low) or np.any(spacing > high):
        shown = " x ".join(f"{v:.3g}" for v in spacing)
        raise PerfusionError(
            f"voxel spacing {shown} mm outside {low:g}-{high:g} mm (broken affine or pixdim)", path
        )
    # columns nearly parallel: the voxels would be flat, their volume near 0
    if abs(np.linalg.det(affine[:3, :3])) < 1e-3 * float(np.prod(spacing)):
        raise PerfusionError("affine axes are (nearly) parallel: not a 3-D grid", path)


# Stored CT values are HU + 1024 (RescaleIntercept -1024): unsigned, air near 0-24, water at
# 1024, brain 1044-1084. HU never exceed the int16 range that scanners store them in.
_STORED_BRAIN_BAND = (1004.0, 1104.0)  # -20..80 HU shifted by +1024: CSF, brain, blood
_HU_LIMITS = (-32768.0, 32767.0)


def check_hu(data: np.ndarray, path: Path) -> None:
    """Refuse values that cannot be HU: stored CT values never rescaled, or beyond int16.

    HU scans have air near -1000, or, when skull-stripped or masked, a background of 0 with the
    brain at 20-50 HU; either way soft tissue lies below 100. Stored values (RescaleIntercept
    -1024 not applied) are never negative and hold the brain at 1044-1084. So a first frame with
    no negative value whose voxels above 200 lie mostly in 1004-1104 (brain shifted by 1024) is
    refused. In an HU scan the voxels above 200 are bone (300-2000 HU) and contrast, of which
    that narrow band holds a small share, so a masked HU scan that keeps the skull passes.
    """
    sample = np.asarray(data[..., 0] if data.ndim == 4 else data, dtype=np.float32)
    low, high = float(np.min(sample)), float(np.max(sample))
    if high > _HU_LIMITS[1] or low < _HU_LIMITS[0]:
        raise PerfusionError(f"values outside any HU range ({low:.0f} to {high:.0f})", path)
    if low < 0.0:
        return
    dense = int(np.count_nonzero(sample > 200.0))
    band = np.count_nonzero((sample >= _STORED_BRAIN_BAND[0]) & (sample <= _STORED_BRAIN_BAND[1]))
    median = float(np.median(sample))
    if median > 500.0 or (band > 0.01 * sample.size and band >= 0.5 * dense):
        raise PerfusionError(
            f"values look like stored CT values without rescale (min {low:.0f}, median "
            f"{median:.0f}, {band / sample.size:.0%} of voxels at 1004-1104 = brain + 1024); "
            "expected HU (apply RescaleSlope/RescaleIntercept)",
            path,
        )


def read_frame_times(path: Path, image: nib.Nifti1Image, n_frames: int) -> np.ndarray:
    """Frame times (s): the sidecar's ``FrameTimes`` when present, else pixdim[4] with its units.

    ``FrameTimesStart`` (what dcm2niix writes) is read when ``FrameTimes`` is absent, so a
    user's own dcm2niix output keeps its non-uniform timing instead of pixdim[4]'s average.
    """
    sidecar = _sidecar_path(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise PerfusionError(f"unreadable JSON ({exc})", sidecar) from None
        if not isinstance(meta, dict):
            raise PerfusionError("expected a JSON object with FrameTimes", sidecar)
        for key in ("FrameTimes", "FrameTimesStart"):
            if key in meta:
                try:
                    times = np.asarray(meta[key], dtype=np.float64)
                except (TypeError, ValueError):
                    raise PerfusionError(f"{key} is not a list of numbers (s)", sidecar) from None
                return validate_frame_times(times, n_frames, sidecar)
    zooms = image.header.get_zooms()
    step = float(zooms[-1]) if len(zooms) >= 4 else 0.0
    unit = image.header.get_xyzt_units()[1] if hasattr(image.header, "get_xyzt_units") else "sec"
    step *= _TIME_UNIT_TO_S.get(unit, 1.0)
    if not step > 0:
        step = 1.0  # ISLES 2018 convention: frames resampled to 1 s, pixdim[4] often unset
    return validate_frame_times(np.arange(n_frames) * step, n_frames, path)


def validate_frame_times(times: np.ndarray, n_frames: int, path: Path) -> np.ndarray:
    """Check the count, finiteness and strict increase of frame times (s)."""
    times = np.asarray(times, dtype=np.float64).ravel()
    if times.size != n_frames:
        raise PerfusionError(f"{times.size} frame times for {n_frames} frames", path)
    if not np.isfinite(times).all():
        raise PerfusionError("frame times contain NaN/Inf", path)
    steps = np.diff(times)
    if np.any(steps <= 0):
        first = int(np.argmax(steps <= 0))
        raise PerfusionError(
            f"frame times are not strictly increasing (frame {first + 2} at "
            f"{times[first + 1]:g} s after frame {first + 1} at {times[first]:g} s)",
            path,
        )
    check_frame_gaps(times, range(n_frames), path)
    return times


def check_frame_gaps(times: np.ndarray, numbers: Sequence[int], path: Path) -> None:
    """Refuse a gap over :data:`MAX_FRAME_GAP_S` between consecutive frame times (s), naming
    the frames by their 0-based ``numbers`` (1-based in the message)."""
    steps = np.diff(times)
    if steps.size and steps.max() > MAX_FRAME_GAP_S:
        i = int(np.argmax(steps))
        raise PerfusionError(
            f"frames {numbers[i] + 1} and {numbers[i + 1] + 1} are {steps[i]:g} s apart (more "
            f"than {MAX_FRAME_GAP_S:g} s: a second scan, lost frames, or times in ms?)",
            path,
        )


def read_mask(
    path: str | Path,
    shape: tuple[int, ...],
    affine: np.ndarray,
    label: int | None = None,
    label_key: str | None = None,
) -> np.ndarray:
    """A 0/1 mask that must lie on the scan's grid (same shape and affine within 1e-3 mm).

    ``label``: read a label image (values 0..N) keeping only voxels equal to ``label``; without
    it any value other than 0 and 1 is refused (:func:`binary_mask`). ``label_key``: the key
    that chooses ``label`` (``core_label``), named in the refusal; None where no key can (a
    brain mask must be 0/1).
    """
    path = Path(path)
    image = load_nifti(path)
    data = np.asarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape):
        raise PerfusionError(
            f"shape {tuple(data.shape)} differs from the scan's {tuple(shape)}", path
        )
    if not np.allclose(image.affine, affine, atol=1e-3):
        raise PerfusionError("affine differs from the scan's affine", path)
    return binary_mask(data, path, label, label_key)


def binary_mask(
    data: np.ndarray, path: Path, label: int | None = None, label_key: str | None = None
) -> np.ndarray:
    """bool mask of a 0/1 image, or of one ``label`` of a label image; anything else is refused.

    A label image (core 0-4, a probability map, a resampled 0.5) read as ``> 0.5`` would count
    every label as lesion, silently; so the values must be exactly 0 and 1 unless a label is
    chosen. The refusal names ``label_key`` (e.g. ``core_label``), the key that chooses one, when
    the caller has one. Errors name the full path: mask files share names across case folders.
    """
    data = np.asarray(data)
    if not np.isfinite(data).all():
        raise PerfusionError("mask contains NaN/Inf", path, full_path=True)
    values = np.unique(data)
    if label is not None:
        if not np.any(values == label):
            raise PerfusionError(
                f"no voxel has label {label} (values found: {_values_text(values)})",
                path,
                full_path=True,
            )
        return data == label
    if not np.isin(values, (0, 1)).all():
        hint = f" (a label image: pick one label with {label_key}=N)" if label_key else ""
        raise PerfusionError(
            f"mask holds values {_values_text(values)}; expected 0 and 1 only{hint}",
            path,
            full_path=True,
        )
    return data == 1


def _values_text(values: np.ndarray, shown: int = 8) -> str:
    """Sorted distinct values, e.g. ``0, 1, 2`` or ``0, 0.1, ..., 1 (1000 distinct values)``."""
    text = [f"{v:g}" for v in np.asarray(values, dtype=np.float64)]
    if len(text) <= shown:
        return ", ".join(text)
    return f"{', '.join(text[: shown - 1])}, ..., {text[-1]} ({len(text)} distinct values)"


def read_curves(path: str | Path, frame_times_s: np.ndarray | None = None) -> InputCurves:
    """Read ``aif.tsv`` (columns ``time``, ``aif``, optional ``vof``) and check it against the scan."""
    path = Path(path)
    try:
        rows = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise PerfusionError(f"unreadable TSV ({type(exc).__name__})", path) from None
    if len(rows) < 3:  # genfromtxt fails on these with IndexError, or returns a 0-d table
        raise PerfusionError(
            f"{max(len(rows) - 1, 0)} data rows; expected a header and at least 2 rows", path
        )
    try:
        with warnings.catch_warnings():  # ragged rows warn, then raise ValueError below
            warnings.simplefilter("ignore")
            table = np.genfromtxt(path, delimiter="\t", names=True, dtype=np.float64)
    except (OSError, ValueError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PerfusionError(f"unreadable TSV ({first})", path) from None
    names = table.dtype.names or ()
    for column in ("time", "aif"):
        if column not in names:
            raise PerfusionError(f"missing column '{column}' (have {', '.join(names)})", path)
    table = np.atleast_1d(table)
    time_s, aif = np.asarray(table["time"]), np.asarray(table["aif"])
    vof = np.asarray(table["vof"]) if "vof" in names else None
    for name, values in (("time", time_s), ("aif", aif), ("vof", vof)):
        if values is not None and not np.isfinite(values).all():
            raise PerfusionError(f"column '{name}' has missing or non-numeric values", path)
    if np.any(np.diff(time_s) <= 0):
        raise PerfusionError("times are not strictly increasing", path)
    if frame_times_s is not None:
        tol = 0.5 * float(np.min(np.diff(frame_times_s))) if len(frame_times_s) > 1 else 0.5
        if time_s[0] > frame_times_s[0] + tol or time_s[-1] < frame_times_s[-1] - tol:
            raise PerfusionError(
                f"AIF times {time_s[0]:.1f}-{time_s[-1]:.1f} s do not cover the scan's "
                f"{frame_times_s[0]:.1f}-{frame_times_s[-1]:.1f} s",
                path,
            )
    check_aif_rises(aif, path)
    return InputCurves(time_s=time_s, aif_hu=aif, vof_hu=vof, source=str(path))


def check_aif_rises(aif_hu: np.ndarray, path: Path, hint: str = "") -> None:
    """Refuse an AIF whose peak does not clear its first frames (the larger of 2 and a tenth of
    them: its baseline) by 10 HU and 5 of their SDs: no bolus, or one already under way when
    the scan began. ``hint`` is appended to the message."""
    aif = np.asarray(aif_hu, dtype=np.float64)
    baseline = aif[: max(2, len(aif) // 10)]
    noise = float(np.std(baseline)) if baseline.size > 1 else 0.0
    if float(np.max(aif) - np.median(baseline)) <= max(10.0, 5.0 * noise):
        raise PerfusionError(f"AIF never rises above its baseline{hint}", path)


def read_case(path: str | Path, core_label: int | None = None) -> Case:
    """Read and validate a case folder (see the module docstring for the contract).

    ``core_label``: read ``core.nii.gz`` as a label image and keep that label as the core;
    without it the core must be a 0/1 mask.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise PerfusionError("case folder not found", folder)
    ctp_path = folder / CTP_FILE
    if not ctp_path.is_file():
        raise PerfusionError(f"no {CTP_FILE} in case folder", folder)
    ctp, affine, times = read_ctp(ctp_path)
    case = Case(path=folder, ctp_hu=ctp, affine=affine, frame_times_s=times)
    if (folder / AIF_FILE).is_file():
        case.curves = read_curves(folder / AIF_FILE, times)
    if (folder / BRAINMASK_FILE).is_file():
        case.brainmask = read_mask(folder / BRAINMASK_FILE, case.shape, affine)
        if not case.brainmask.any():
            raise PerfusionError("brain mask is empty", folder / BRAINMASK_FILE)
    if (folder / CORE_FILE).is_file():
        case.core = read_mask(
            folder / CORE_FILE, case.shape, affine, core_label, label_key=CORE_LABEL_KEY
        )
    return case


def _sidecar_path(ctp_path: Path) -> Path:
    name = ctp_path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else ctp_path.stem
    return ctp_path.with_name(stem + ".json")


# ---------------------------------------------------------------------------------------------
# Atomic writing


def quantise(
    data: np.ndarray, store_dtype: Any, step: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """Integers ``q`` of ``store_dtype`` and NIfTI (scl_slope, scl_inter) with
    data ~ q * slope + inter, |error| <= slope / 2 (plus float32 rounding).

    slope = ``step`` and inter = 0 when the range fits, so multiples of ``step`` (integer HU)
    come back exactly; otherwise inter = the mid-range integer and slope = ``step`` doubled
    until the range fits. slope and inter are float32, as the header stores them.
    """
    info = np.iinfo(store_dtype)
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise ValueError("quantise: data must be finite")
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    slope, inter = np.float32(step), np.float32(0.0)
    if low / slope < info.min or high / slope > info.max:
        inter = np.float32(round((low + high) / 2))
        span = max(high - float(inter), float(inter) - low)
        while span / float(slope) > info.max - 1:
            slope = np.float32(2 * slope)
    counts = np.subtract(data, inter)  # one float32 temporary, the rest in place
    np.rint(np.divide(counts, slope, out=counts), out=counts)
    counts = np.clip(counts, info.min, info.max, out=counts).astype(store_dtype)
    return counts, (float(slope), float(inter))


def write_nifti_atomic(
    path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    dtype: Any = np.float32,
    time_step_s: float | None = None,
    store_dtype: Any = None,
    store_step: float = CTP_STORE_STEP_HU,
) -> Path:
    """Write ``data`` as NIfTI (``.nii.gz``) with ``affine``, atomically.

    ``time_step_s`` sets pixdim[4] of a 4-D image (tools that ignore the ``ctp.json`` sidecar
    read it; for non-uniform frames it is only the median interval, the sidecar stays exact).
    ``store_dtype`` (an integer type such as ``np.int16``) stores float ``data`` as integers
    with scl_slope/scl_inter (:func:`quantise`, finest slope ``store_step``), which nibabel's
    ``get_fdata``/``dataobj`` apply on reading; ``dtype`` is then ignored.
    """
    path = Path(path)
    scaling = None
    if store_dtype is None:
        array = np.asarray(data, dtype=dtype)
    else:
        array, scaling = quantise(data, store_dtype, store_step)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    if scaling is not None:  # a set slope/inter makes nibabel write the integers unscaled
        image.header.set_slope_inter(*scaling)
    image.header.set_xyzt_units("mm", "sec")
    if time_step_s is not None and image.ndim == 4:
        image.header.set_zooms((*image.header.get_zooms()[:3], float(time_step_s)))
    fd, tmp = atomic_target(path)
    os.close(fd)
    tmp_nii = tmp + (".nii.gz" if path.name.endswith(".gz") else ".nii")
    try:
        nib.save(image, tmp_nii)
        os.replace(tmp_nii, path)
    finally:
        for leftover in (tmp, tmp_nii):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
    return path


def write_curves(path: str | Path, curves: InputCurves) -> Path:
    """Write ``aif.tsv`` (``time``, ``aif`` and, when present, ``vof``) atomically."""
    columns = [curves.time_s, curves.aif_hu] + (
        [curves.vof_hu] if curves.vof_hu is not None else []
    )
    header = "time\taif" + ("\tvof" if curves.vof_hu is not None else "")
    rows = ["\t".join(f"{v:.6g}" for v in row) for row in zip(*columns, strict=True)]
    return write_text_atomic(path, header + "\n" + "\n".join(rows) + "\n")


def write_case(folder: str | Path, case: Case) -> Path:
    """Write a :class:`Case` in the folder format (CTP, sidecar with FrameTimes, curves, masks)."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        step = float(np.median(np.diff(case.frame_times_s)))
        write_nifti_atomic(
            tmp / CTP_FILE, case.ctp_hu, case.affine, time_step_s=step, store_dtype=np.int16
        )
        write_json_atomic(
            tmp / SIDECAR_FILE, {"FrameTimes": [float(t) for t in case.frame_times_s]}
        )
        if case.curves is not None:
            write_curves(tmp / AIF_FILE, case.curves)
        if case.brainmask is not None:
            write_nifti_atomic(tmp / BRAINMASK_FILE, case.brainmask, case.affine, np.uint8)
        if case.core is not None:
            write_nifti_atomic(tmp / CORE_FILE, case.core, case.affine, np.uint8)
    return folder
