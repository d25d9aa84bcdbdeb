"""``perfusion convert PATH out=CASE``: write a validated case folder from any supported layout.

PATH may be a CTP DICOM series (dcm2niix; per-frame acquisition times into ``ctp.json``
``FrameTimes``), an ISLES 2018 case, an ISLES 2024 subject (``subject=`` picks one from a
dataset root), a bare 4-D NIfTI, or a case folder (re-validated and copied). The dataset's own
maps, when present, go to ``vendor/{cbf,cbv,mtt,tmax}.nii.gz`` on the CTP grid for comparison.
Everything is read and checked before anything is written, and the folder appears atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfusion.commands.outputs import wrote_line
from perfusion.config import save_resolved
from perfusion.datasets import VENDOR_MAPS, ReadOptions, read_vendor_maps, read_with
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.io import (
    AIF_FILE,
    BRAINMASK_FILE,
    CORE_FILE,
    CTP_FILE,
    atomic_dir,
    write_case,
    write_json_atomic,
    write_nifti_atomic,
)
from perfusion.resources import check_memory, check_out_dir

VENDOR_DIR = "vendor"


@dataclass
class ConvertConfig(ReadOptions):
    """Options of ``perfusion convert``."""

    out: str = ""
    """Output case folder (required)."""
    overwrite: bool = False
    """Allow writing into an existing, non-empty ``out`` folder."""


OPTIONS = Options(ConvertConfig)


def _drop_stale(out: Path, written: Path) -> None:
    """Remove case files an earlier conversion left in ``out`` that this one does not write.

    Called last inside :func:`atomic_dir`, after every new file exists, so a stale ``aif.tsv``
    or mask can never sit beside a new scan it was not made for.
    """
    names = [
        AIF_FILE,
        BRAINMASK_FILE,
        CORE_FILE,
        *(f"{VENDOR_DIR}/{k}.nii.gz" for k in VENDOR_MAPS),
    ]
    for name in names:
        if not (written / name).exists():
            (out / name).unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    started = time.time()
    source, cfg = OPTIONS.parse(__doc__, argv)
    out = check_out_dir(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise PerfusionError("exists and is not empty (pass overwrite=true)", out)
    check_memory("convert", source if source.is_file() else source / CTP_FILE)
    case = read_with(source, cfg)
    maps = read_vendor_maps(case)
    with atomic_dir(out) as tmp:
        write_case(tmp, case)
        for kind, values in maps.items():
            write_nifti_atomic(tmp / VENDOR_DIR / f"{kind}.nii.gz", values, case.affine)
        provenance = {"source": str(source.resolve()), **case.meta}
        provenance["vendor_maps"] = sorted(maps)
        write_json_atomic(tmp / "source.json", provenance)
        save_resolved(cfg, tmp)
        _drop_stale(out, tmp)
    n = int(np.count_nonzero(case.core)) if case.core is not None else 0
    print(
        f"{case.meta.get('layout', 'case')}: {case.ctp_hu.shape[3]} frames, "
        f"{len(maps)} vendor maps, core {n * case.voxel_volume_ml:.2f} ml"
    )
    print(wrote_line(out, started))
