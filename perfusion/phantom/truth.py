"""Writing a phantom patient: the case folder (``io.write_case``) plus ``truth/``, atomically.

``truth/`` holds ``cbf, cbv, mtt, delay, tmax`` (float32; CBF ml/100g/min, CBV ml/100g, s),
``core, penumbra, csf`` (uint8 masks; Kudo: ``residue`` codes), ``vessels`` (float32 vessel volume fraction), ``baseline_hu``
(float32 pre-contrast HU), ``curves.tsv`` (the true AIF/VOF at the frame times, ΔHU) and
``meta.json`` (every parameter: config, pose, lesion, inputs, AIF/VOF voxels, enhancement).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from perfusion.io import atomic_dir, write_case, write_curves, write_json_atomic, write_nifti_atomic

TRUTH_DIR = "truth"


def write_patient(folder: str | Path, patient: Any, config: dict[str, Any]) -> Path:
    """Write ``patient`` (a PhantomPatient or KudoPhantom) to ``folder`` in one atomic move."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        write_case(tmp, patient.case)
        truth_dir = tmp / TRUTH_DIR
        affine = patient.case.affine
        for name, data in patient.truth.items():
            dtype = np.uint8 if data.dtype in (np.bool_, np.uint8) else np.float32
            write_nifti_atomic(truth_dir / f"{name}.nii.gz", data, affine, dtype)
        write_curves(truth_dir / "curves.tsv", patient.true_curves)
        write_json_atomic(truth_dir / "meta.json", {**patient.meta, "config": config})
    return folder
