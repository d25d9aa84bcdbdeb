"""Dataset readers: every layout a user may hold, read into a :class:`~perfusion.io.Case`.

Layouts (:func:`detect_layout`): ``case`` (our case folder, see :mod:`perfusion.io`),
``isles2018``, ``isles2024`` (:mod:`perfusion.datasets.isles`), ``dicom`` (a CTP series,
:mod:`perfusion.datasets.dicom`) and ``nifti`` (a bare 4-D NIfTI with optional JSON sidecar).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from perfusion.datasets.dicom import is_dicom_file, read_dicom_series
from perfusion.datasets.grid import resample_nearest, same_grid
from perfusion.datasets.isles import (
    VENDOR_MAPS,
    find_isles2018_files,
    find_isles2024_files,
    read_isles2018,
    read_isles2024,
    read_vendor_maps,
)
from perfusion.errors import PerfusionError
from perfusion.io import (
    AIF_FILE,
    BRAINMASK_FILE,
    CORE_FILE,
    CTP_FILE,
    SIDECAR_FILE,
    Case,
    read_case,
    read_ctp,
)

__all__ = [
    "VENDOR_MAPS",
    "detect_layout",
    "find_isles2018_files",
    "find_isles2024_files",
    "read_any",
    "read_dicom_series",
    "read_isles2018",
    "read_isles2024",
    "read_nifti",
    "read_vendor_maps",
    "resample_nearest",
    "same_grid",
]

_CASE_FILES = (SIDECAR_FILE, AIF_FILE, BRAINMASK_FILE, CORE_FILE)


def detect_layout(path: str | Path) -> str:
    """Which layout ``path`` holds: case, isles2018, isles2024, dicom or nifti.

    Raises:
        PerfusionError: the path is missing or holds no CTP in any known layout (a case folder
            with its other files but no ``ctp.nii.gz`` is named as such).
    """
    path = Path(path)
    if not path.exists():
        raise PerfusionError("not found", path)
    if path.is_file():
        if path.name.endswith((".nii", ".nii.gz")):
            return "nifti"
        raise PerfusionError("not a NIfTI file or a folder", path)
    if (path / CTP_FILE).exists():
        return "case"
    if any(path.rglob("*_ctp.nii.gz")):
        return "isles2024"
    if any("ct_4dpwi" in p.name.lower() for p in path.rglob("*")):
        return "isles2018"
    if any(is_dicom_file(p) for p in path.rglob("*") if p.is_file()):
        return "dicom"
    if any((path / name).exists() for name in _CASE_FILES):
        raise PerfusionError(f"no {CTP_FILE} in case folder", path)
    raise PerfusionError(
        f"no CTP found (expected {CTP_FILE}, an ISLES 2018/2024 case, a DICOM series or a NIfTI)",
        path,
    )


def read_nifti(path: str | Path) -> Case:
    """A bare 4-D CTP NIfTI (times from its JSON sidecar or pixdim[4]) as a :class:`Case`."""
    path = Path(path)
    ctp, affine, times = read_ctp(path)
    return Case(path=path, ctp_hu=ctp, affine=affine, frame_times_s=times, meta={"layout": "nifti"})


@dataclass
class ReadOptions:
    """The reading options of the commands that take any layout (:func:`read_any`)."""

    subject: str = ""
    """ISLES 2024: the subject (``sub-...``) to read when PATH holds several."""
    series: int | None = None
    """DICOM folder with several series: the SeriesNumber to read."""
    drop_incomplete: bool = False
    """DICOM: leave out frames lacking a slice."""
    core_label: int | None = None
    """Keep this label of a label-image ``core.nii.gz`` (null: a 0/1 mask)."""


def read_with(path: str | Path, options: ReadOptions) -> Case:
    """:func:`read_any` of ``path`` with a command's :class:`ReadOptions`."""
    return read_any(
        path, options.subject, options.series, options.drop_incomplete, options.core_label
    )


def read_any(
    path: str | Path,
    subject: str = "",
    series: int | None = None,
    drop_incomplete: bool = False,
    core_label: int | None = None,
) -> Case:
    """Read whatever :func:`detect_layout` finds at ``path``.

    Args:
        subject: ISLES 2024 root: the subject to read.
        series: DICOM folder holding several series: the SeriesNumber to read.
        drop_incomplete: DICOM: leave out frames lacking a slice instead of refusing.
        core_label: case folder: keep this label of a label-image ``core.nii.gz``.
    """
    layout = detect_layout(path)
    if layout == "case":
        case = read_case(path, core_label)
        case.meta.setdefault("layout", "case")
        return case
    readers = {
        "isles2018": read_isles2018,
        "isles2024": lambda p: read_isles2024(p, subject),
        "dicom": lambda p: read_dicom_series(p, series, drop_incomplete),
        "nifti": read_nifti,
    }
    return readers[layout](path)
