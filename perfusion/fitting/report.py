"""The pages written after a fit: ``report.png``, ``mosaic.png`` and ``diagnostics.png``.

This module assembles what the pages show from the fit's outputs and hands it to
:mod:`perfusion.report`, which only draws:

- ``report.png``, the clinical page: maps on the slices with the most lesion, outlines of the
  core and of Tmax > 6 s exactly as :func:`perfusion.fitting.defuse.defuse3_masks` defines them
  (the regions behind the DEFUSE-3 numbers of ``summary.json``), the AIF/VOF with preprocessing's
  record of them (``meta["aif"]``), and, when the case folder holds ``core.nii.gz``, its outline
  and the Dice of the predicted core.
- ``mosaic.png``: Tmax and CBF on every slice of the brain.
- ``diagnostics.png``: the fit against the data, the residual against the noise, the losses.
"""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from perfusion.errors import PerfusionError
from perfusion.evaluation import dice
from perfusion.fitting.defuse import defuse3_masks
from perfusion.io import CORE_FILE, SIDECAR_FILE, read_mask, write_bytes_atomic
from perfusion.prepared import PreparedCase
from perfusion.report import (
    ArterialInput,
    Header,
    MapSet,
    Reference,
    clinical_figure,
    diagnostics_figure,
    mosaic_figure,
)

MOSAIC_PNG = "mosaic.png"
DIAGNOSTICS_PNG = "diagnostics.png"
ACQUISITION_KEYS = ("AcquisitionDateTime", "acquisition_time", "AcquisitionTime")
"""Keys of the acquisition time in ``prepared.meta`` or the case's ``ctp.json``, first found."""


def write_report(
    path: Path,
    maps: dict,
    prepared: PreparedCase,
    summary: dict[str, Any],
    fit: Any = None,
    usable: np.ndarray | None = None,
    core_label: int | None = None,
) -> list[Path]:
    """Write the clinical page to ``path`` and the mosaic and diagnostics beside it (atomically).

    Args:
        path: the clinical page's file (``report.png``).
        maps: ``cbf``, ``cbv``, ``mtt``, ``tmax`` volumes (masked as written).
        prepared: the case the maps were fitted to.
        summary: the ``summary.json`` dict (``case``, ``method``, ``defuse3``, ...).
        fit: the neural fit (FieldFit) or None for classical methods.
        usable: bool volume of the voxels the DEFUSE-3 numbers count (tissue with physical
            maps); ``prepared.tissue`` when None.
        core_label: the label of a label-image ``core.nii.gz`` that is the reference core
            (FitConfig.core_label); None reads it as a 0/1 mask.

    Returns:
        The three paths written.
    """
    path = Path(path)
    case_dir = Path(str(summary.get("case") or "."))
    truth = _reference_core(case_dir, prepared, core_label)
    mapset = report_mapset(maps, prepared, usable, truth)
    inputs = ArterialInput.from_meta(
        prepared.frame_times_s, prepared.aif_hu, prepared.vof_hu, prepared.meta.get("aif")
    )
    reference = None
    if truth is not None:
        volume = float(truth.sum()) * prepared.voxel_volume_ml
        reference = Reference(volume, dice(mapset.regions["core"], truth))
    name = case_dir.name or "case"
    header = Header(name, summary["method"], acquisition_time(case_dir, prepared.meta))
    pages = {
        path: clinical_figure(mapset, summary["defuse3"], header, inputs, reference),
        path.with_name(MOSAIC_PNG): mosaic_figure(mapset, f"{name}: Tmax and CBF on every slice"),
        path.with_name(DIAGNOSTICS_PNG): diagnostics_figure(
            summary, inputs, fit, f"{name}: {summary['method']} fit diagnostics"
        ),
    }
    for target, figure in pages.items():
        _save(figure, target)
    return list(pages)


def report_mapset(
    maps: dict,
    prepared: PreparedCase,
    usable: np.ndarray | None = None,
    truth_core: np.ndarray | None = None,
) -> MapSet:
    """What the pages draw: the maps, the DEFUSE-3 regions, the orientation, the vessel MIP."""
    usable = prepared.tissue if usable is None else usable
    standard_x = prepared.standard_mm()[:, 0].reshape(prepared.shape)
    masks = defuse3_masks(maps, usable, standard_x, prepared.voxel_volume_ml)
    regions = {"core": masks["core"], "hypo": masks["hypo"]}
    if truth_core is not None:
        regions["truth"] = truth_core
    return MapSet(
        maps={k: maps[k] for k in ("cbf", "cbv", "mtt", "tmax")},
        brain=prepared.brain,
        regions=regions,
        voxel_to_patient=np.asarray(prepared.scan_to_standard) @ prepared.affine,
        vessel_mip=prepared.tissue_hu.max(axis=(2, 3)),
    )


def acquisition_time(case_dir: Path, meta: dict[str, Any]) -> str | None:
    """The scan's acquisition time from ``meta`` or the case's ``ctp.json``; None when absent."""
    sources = [meta]
    sidecar = case_dir / SIDECAR_FILE
    if sidecar.is_file():
        try:
            sources.append(json.loads(sidecar.read_text()))
        except (OSError, ValueError):
            pass
    for source in sources:
        for key in ACQUISITION_KEYS:
            if source.get(key):
                date = source.get("AcquisitionDate") if key == "AcquisitionTime" else None
                return f"{date} {source[key]}" if date else str(source[key])
    return None


def _reference_core(
    case_dir: Path, prepared: PreparedCase, core_label: int | None = None
) -> np.ndarray | None:
    """The case folder's ``core.nii.gz`` on the maps' grid (label ``core_label`` of a label
    image), or None (absent or not matching)."""
    path = case_dir / CORE_FILE
    if not path.is_file():
        return None
    try:
        return read_mask(path, prepared.shape, prepared.affine, core_label)
    except PerfusionError:
        return None


def _save(figure: Figure, path: Path) -> None:
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
