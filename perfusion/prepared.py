"""The fit-ready state of a case: what preprocessing produces and every fitting method consumes.

Arrays stay on the scan's own grid (no resampling of the data), so maps come back on the scan's
grid and affine exactly. The standard frame enters only as the rigid transform
``scan_to_standard`` that gives each voxel centre its standard-frame position in mm, which the
neural fields encode (the same anatomy at the same coordinate in every aligned patient).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfusion.errors import PerfusionError
from perfusion.io import (
    CTP_FILE,
    InputCurves,
    VoxelGeometry,
    atomic_dir,
    load_nifti,
    read_curves,
    write_curves,
    write_json_atomic,
    write_nifti_atomic,
)

PREPARED_JSON = "prepared.json"
TISSUE_FILE = "tissue.nii.gz"
CURVES_FILE = "aif.tsv"
MASK_FILES = {"brain": "brainmask.nii.gz", "csf": "csf.nii.gz", "vessels": "vessels.nii.gz"}


def scan_file(case_dir: str | Path) -> Path:
    """The 4-D image a fit of ``case_dir`` reads: a preprocessed folder's ``tissue.nii.gz``,
    else the case's ``ctp.nii.gz`` (for the memory check before a fit)."""
    prepared = Path(case_dir) / TISSUE_FILE
    return prepared if prepared.is_file() else Path(case_dir) / CTP_FILE


@dataclass
class PreparedCase(VoxelGeometry):
    """A preprocessed case.

    Attributes:
        tissue_hu: float32 (X, Y, Z, T) enhancement above baseline (ΔHU), motion-corrected and
            smoothed as configured, on the scan grid.
        frame_times_s: float64 (T,) frame times in s (the scan's own clock).
        aif_hu: float64 (T,) arterial enhancement (ΔHU) at ``frame_times_s``, partial-volume
            corrected (scaled to the VOF) when configured.
        vof_hu: float64 (T,) venous enhancement (ΔHU), or None.
        affine: (4, 4) scan voxel-to-world affine (RAS mm).
        brain, csf, vessels: bool (X, Y, Z) masks; CSF and vessels are excluded from volumes
            and thresholds (see :attr:`tissue`).
        scan_to_standard: (4, 4) rigid map from scan world mm to standard-frame mm (origin at
            the brain centre, mid-sagittal plane at x = 0).
        bolus_arrival_s: AIF arrival time in s; the fit measures time from here.
        meta: facts worth reporting (AIF/VOF voxels, VOF scale, quality flags, motion).
    """

    tissue_hu: np.ndarray
    frame_times_s: np.ndarray
    aif_hu: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    csf: np.ndarray
    vessels: np.ndarray
    scan_to_standard: np.ndarray = field(default_factory=lambda: np.eye(4))
    bolus_arrival_s: float = 0.0
    vof_hu: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.tissue_hu.shape[:3])  # type: ignore[return-value]

    @property
    def tissue(self) -> np.ndarray:
        """Brain parenchyma: brain without CSF and large vessels (bool, X, Y, Z)."""
        return self.brain & ~self.csf & ~self.vessels

    def standard_mm(self, voxels: np.ndarray | None = None) -> np.ndarray:
        """Standard-frame positions (N, 3) in mm of voxel indices (N, 3); all voxels if None."""
        if voxels is None:
            voxels = np.argwhere(np.ones(self.shape, dtype=bool))
        homogeneous = np.c_[np.asarray(voxels, dtype=np.float64), np.ones(len(voxels))]
        return (homogeneous @ (self.scan_to_standard @ self.affine).T)[:, :3]

    def save(self, folder: str | Path) -> Path:
        """Write the prepared case as NIfTI/TSV/JSON into ``folder`` (atomically)."""
        with atomic_dir(folder) as tmp:
            write_nifti_atomic(tmp / TISSUE_FILE, self.tissue_hu, self.affine)
            for name, file in MASK_FILES.items():
                write_nifti_atomic(tmp / file, getattr(self, name), self.affine, np.uint8)
            write_curves(
                tmp / CURVES_FILE, InputCurves(self.frame_times_s, self.aif_hu, self.vof_hu)
            )
            write_json_atomic(
                tmp / PREPARED_JSON,
                {
                    "frame_times_s": self.frame_times_s,
                    "scan_to_standard": self.scan_to_standard,
                    "bolus_arrival_s": self.bolus_arrival_s,
                    "meta": self.meta,
                },
            )
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> PreparedCase:
        """Read a folder written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / PREPARED_JSON).is_file():
            raise PerfusionError(f"no {PREPARED_JSON}: not a preprocessed case", folder)
        info = json.loads((folder / PREPARED_JSON).read_text())
        image = load_nifti(folder / TISSUE_FILE)
        times = np.asarray(info["frame_times_s"], dtype=np.float64)
        curves = read_curves(folder / CURVES_FILE, times)
        masks = {
            name: np.asarray(load_nifti(folder / file).dataobj) > 0
            for name, file in MASK_FILES.items()
        }
        return cls(
            tissue_hu=np.asarray(image.dataobj, dtype=np.float32),
            frame_times_s=times,
            aif_hu=curves.aif_hu,
            vof_hu=curves.vof_hu,
            affine=image.affine.astype(np.float64),
            scan_to_standard=np.asarray(info["scan_to_standard"], dtype=np.float64),
            bolus_arrival_s=float(info["bolus_arrival_s"]),
            meta=info.get("meta", {}),
            **masks,
        )
