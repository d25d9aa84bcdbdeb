"""Small synthetic case folders for the segmentation tests (no phantom package needed).

A 32 x 32 x 16 ellipsoidal brain at 4 x 4 x 8 mm: grey-matter rim CBF 60, white matter 22,
a CSF slab (CBF 0) in the middle, and optionally a spherical core (CBF x 0.15) with a
penumbra shell (CBF / 2) in the left or right hemisphere (RAS: +x = right = high i).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfusion.io import write_nifti_atomic

SHAPE = (32, 32, 16)
AFFINE = np.diag([4.0, 4.0, 8.0, 1.0])


def synthetic_maps(side: str | None, radius: float = 3.0, centre_y: int = 16):
    """CBF (ml/100g/min), brain mask and core of one synthetic patient."""
    i, j, k = np.indices(SHAPE, dtype=float)
    c = (np.array(SHAPE) - 1) / 2.0
    r = ((i - c[0]) / 14) ** 2 + ((j - c[1]) / 14) ** 2 + ((k - c[2]) / 7.5) ** 2
    brain = r <= 1.0
    cbf = np.where(r > 0.55, 60.0, 22.0) * brain
    cbf[(np.abs(i - c[0]) < 1) & (np.abs(j - c[1]) < 4)] = 0.0  # CSF next to the midline
    core = np.zeros(SHAPE, bool)
    if side is not None:
        ci = c[0] + (8 if side == "right" else -8)
        d = np.sqrt((i - ci) ** 2 + (j - centre_y) ** 2 + ((k - c[2]) * 2) ** 2)
        core = brain & (d <= radius)
        penumbra = brain & (d > radius) & (d <= radius + 2)
        cbf[penumbra] /= 2.0
        cbf[core] *= 0.15
    return cbf.astype(np.float32), brain, core


def write_cohort(root: Path, n: int) -> Path:
    """``n`` case folders (truth/cbf.nii.gz and cbv.nii.gz, brainmask.nii.gz, core.nii.gz);
    patient 3 has no core."""
    for index in range(n):
        side = None if index == 3 else ("right" if index % 2 else "left")
        cbf, brain, core = synthetic_maps(side, radius=2.5 + index % 3, centre_y=12 + index % 5)
        case = root / f"patient-{index:03d}"
        write_nifti_atomic(case / "truth" / "cbf.nii.gz", cbf, AFFINE)
        write_nifti_atomic(case / "truth" / "cbv.nii.gz", cbf * 4.0 / 60.0, AFFINE)  # MTT 4 s
        write_nifti_atomic(case / "brainmask.nii.gz", brain, AFFINE, np.uint8)
        write_nifti_atomic(case / "core.nii.gz", core, AFFINE, np.uint8)
    return root
