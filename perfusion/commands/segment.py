"""``perfusion segment CASE_DIR [model=PATH] [maps=DIR] [method=...] [side=auto] [out=DIR]``.

Runs a model from ``perfusion train-seg`` on one case: reads the fit's CBF maps (fitting them
first when missing), computes ``rcbf.nii.gz``, and writes ``core_pred.nii.gz`` on the scan grid,
the core volume (ml) in ``summary.json`` under ``segmentation`` and ``core_overlay.png``.
When the maps come from another method, grid or voxel size than the model was trained on,
the core is the rCBF < 30 % rule instead, with a warning (``mismatch=unet`` applies the model
anyway, ``mismatch=refuse`` stops with an error).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perfusion.clinical import RCBF_CORE
from perfusion.commands.outputs import case_maps_folder, wrote_line
from perfusion.config import repository_path, split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options, one_positional
from perfusion.io import write_json_atomic, write_nifti_atomic
from perfusion.resources import check_out_dir
from perfusion.segmentation.config import SegmentConfig
from perfusion.segmentation.inputs import (
    CBF_FILE,
    PatientInputs,
    fit_maps,
    load_patient,
    missing_maps,
    save_rcbf,
)
from perfusion.segmentation.metrics import dice, volume_ml
from perfusion.segmentation.rcbf import threshold_core
from perfusion.segmentation.report import overlay_png

OPTIONS = Options(SegmentConfig)


def find_maps(
    case: Path, method: str, maps: str, fit_missing: bool, fit_overrides: Sequence[str] = ()
) -> Path:
    """The maps folder: ``maps=``, ``<case>/fits/<method>``, ``<cohort>/fits/<method>/<case>``, or a new fit."""
    if maps:
        if not (Path(maps) / CBF_FILE).is_file():
            raise PerfusionError(f"no {CBF_FILE}", Path(maps).absolute())
        return Path(maps)
    if method == "truth":
        return case / "truth"
    candidates = [case_maps_folder(case, method), case.parent / "fits" / method / case.name]
    for folder in candidates:
        if (folder / CBF_FILE).is_file():
            return folder
    if not fit_missing:
        raise PerfusionError(
            f"no {method} maps (looked in {', '.join(map(str, candidates))})", case
        )
    print(f"segment: no {method} maps of {case.name}: fitting them first", flush=True)
    fit_maps(case, method, candidates[0], fit_overrides)
    return candidates[0]


MISMATCH_CHOICES = ("rule", "unet", "refuse")


def mismatches(
    patient: PatientInputs, method: str, meta: dict, features: Sequence[str]
) -> list[str]:
    """How method, grid or voxel size differ from the model's training data, and the maps its
    input channels ``features`` read that are missing (empty: none)."""
    warnings = [
        f"no {name} beside {CBF_FILE} (the model reads it)"
        for name in missing_maps(patient, features)
    ]
    if method != meta["input_method"]:
        warnings.append(f"maps from {method!r}, model trained on {meta['input_method']!r} maps")
    if list(patient.rcbf.shape) != list(meta["grid_shape"]):
        warnings.append(
            f"grid {list(patient.rcbf.shape)} differs from training {meta['grid_shape']}"
        )
    if not np.allclose(patient.spacing_mm, meta["spacing_mm"], rtol=0.05):
        spacing, trained = (
            [round(float(s), 2) for s in v] for v in (patient.spacing_mm, meta["spacing_mm"])
        )
        warnings.append(f"voxel size {spacing} mm differs from training {trained} mm")
    return warnings


def choose_segmenter(found: list[str], mismatch: str, case: Path) -> str:
    """``unet`` or ``rule`` for maps with the differences ``found``; prints the warning, or
    raises under ``mismatch=refuse``."""
    if not found:
        return "unet"
    text = "; ".join(found)
    if mismatch == "refuse":
        raise PerfusionError(f"{text} (mismatch=rule or mismatch=unet to go on)", case)
    if mismatch == "unet":
        print(f"segment: WARNING: {text}; U-Net applied anyway (mismatch=unet)", file=sys.stderr)
        return "unet"
    print(
        f"segment: WARNING: {text}; core from the rCBF < {100 * RCBF_CORE:g} % rule instead "
        "(mismatch=unet applies the model anyway)",
        file=sys.stderr,
    )
    return "rule"


def main(argv: list[str]) -> None:
    started = time.time()
    positionals, overrides = split_args(argv)
    case = Path(one_positional(__doc__, positionals)).absolute()
    cfg = OPTIONS.load(overrides)
    if cfg.mismatch not in MISMATCH_CHOICES:
        raise PerfusionError(f"mismatch: {cfg.mismatch!r}, expected one of {MISMATCH_CHOICES}")
    if not case.is_dir():
        raise PerfusionError("case folder not found", case)
    if cfg.out:
        check_out_dir(cfg.out)
    from perfusion.segmentation.module import load_bundle
    from perfusion.segmentation.train import predict_core  # torch and MONAI from here on

    model = repository_path(cfg.model)
    module, meta = load_bundle(model)
    method = cfg.method or meta["input_method"]
    folder = find_maps(case, method, cfg.maps, cfg.fit_missing, cfg.fit_overrides)
    patient = load_patient(case, method, side=cfg.side, maps=folder)
    warnings = mismatches(patient, method, meta, module.hparams.features)
    segmenter = choose_segmenter(warnings, cfg.mismatch, case)
    if segmenter == "unet":
        pred = predict_core(module, patient)
    else:
        pred = threshold_core(
            patient.rcbf, patient.tissue, patient.x_mm, patient.affected, patient.voxel_ml
        )
    out = Path(cfg.out) if cfg.out else (case / "segmentation" if method == "truth" else folder)
    write_nifti_atomic(out / "core_pred.nii.gz", pred, patient.affine, np.uint8)
    save_rcbf(patient, out)
    overlay_png(
        patient.rcbf, pred, patient.core, out / "core_overlay.png", f"{case.name}: core ({method})"
    )
    result = {
        "core_volume_ml": volume_ml(pred, patient.spacing_mm),
        "affected_side": patient.affected,
        "input_method": method,
        "segmenter": segmenter if segmenter == "unet" else f"rCBF<{100 * RCBF_CORE:g}%",
        "model": str(model.absolute()),
        "warnings": warnings,
    }
    if patient.core is not None:
        result["reference_volume_ml"] = volume_ml(patient.core, patient.spacing_mm)
        result["dice_vs_reference"] = dice(pred, patient.core)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    write_json_atomic(summary_path, {**summary, "segmentation": result})
    print(
        f"segment: {case.name}: core {result['core_volume_ml']:.1f} ml ({patient.affected}, "
        f"{result['segmenter']})"
    )
    print(wrote_line(out, started))
