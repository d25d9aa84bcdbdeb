"""``fit_case``: a case folder in, the fit output folder out (every method, one contract).

Output folder: cbf, cbv, mtt, tmax, delay ``.nii.gz`` (float32, scan grid and affine, 0 outside
the brain), ``tissuemask.nii.gz``, ``fitqc.nii.gz``, ``summary.json``, ``config.yaml`` and
``report.png``, all moved in together (:func:`perfusion.io.atomic_dir`): a failed fit leaves none.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from perfusion.baselines.bsvd import fit_bsvd
from perfusion.baselines.nlr import fit_nlr
from perfusion.clinical import input_warnings, median_or_nan, withheld_verdict
from perfusion.config import save_resolved, to_object
from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig, check_fit_config
from perfusion.fitting.defuse import defuse3_masks, mask_summary
from perfusion.fitting.maps import (
    MAP_NAMES,
    box_model_fitqc,
    maps_from_params,
    mask_unphysical,
    unexplained,
    write_maps,
    write_masks,
)
from perfusion.fitting.neural import fit_fields
from perfusion.fitting.report import write_report
from perfusion.fitting.reuse import input_digest
from perfusion.io import atomic_dir, read_case, write_json_atomic, write_text_atomic
from perfusion.noise import fit_noise
from perfusion.prepared import PREPARED_JSON, PreparedCase
from perfusion.units import TMAX_CONVENTION

BASELINES: dict[str, Callable[[PreparedCase, FitConfig], dict[str, np.ndarray]]] = {
    "bsvd": lambda prepared, cfg: fit_bsvd(prepared, cfg.bsvd),
    "nlr": lambda prepared, cfg: fit_nlr(prepared),
}
"""The classical methods (``method=bsvd|nlr``): name -> maps of a prepared case, given the
fit's configuration (bSVD reads its ``bsvd`` section)."""

HISTORY_CSV = "history.csv"

"""Per-step losses beside summary.json (the same numbers go to the W&B run)."""

TMAX_CONVENTIONS = {
    "bsvd": "tmax = argmax of the deconvolved residue (s after the AIF); delay = tmax - mtt/2",
}

NOTE = (
    "Tmax is well determined by the data; its split into delay and MTT is not "
    "(a shorter delay with a longer MTT fits almost as well), so read delay and MTT with care."
)


def load_prepared(case_dir: str | Path, cfg: FitConfig, progress: Any = None) -> PreparedCase:
    """A preprocessed folder (``prepared.json``) as is, else read the case and preprocess it.

    ``progress``, when given, receives preprocessing's one-line progress messages.
    """
    folder = Path(case_dir)
    if (folder / PREPARED_JSON).is_file():
        return PreparedCase.load(folder)
    case = read_case(folder, cfg.core_label)
    from perfusion.preprocess import prepare_case  # SimpleITK: only when a case needs it

    return prepare_case(case, cfg.preprocess, progress=progress)


def fit_case(
    case_dir: str | Path, cfg: FitConfig | DictConfig, out_dir: str | Path, logger: Any = None
) -> dict[str, Any]:
    """Fit maps to the case at ``case_dir`` with ``cfg.method``; write the output folder.

    Args:
        case_dir: a case folder (preprocessed here) or a preprocessed folder.
        cfg: FitConfig (dataclass or structured DictConfig, saved as ``config.yaml``).
        out_dir: the output folder (created; existing files it writes are replaced).
        logger: optional Lightning logger (perfusion.tracking builds the W&B one).

    Returns:
        The ``summary.json`` dict.
    """
    fit_cfg: FitConfig = to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    check_fit_config(fit_cfg)  # a bad method or step count fails before preprocessing
    threads = torch.get_num_threads()
    if fit_cfg.threads > 0:
        torch.set_num_threads(fit_cfg.threads)
    try:
        return _fit_and_write(case_dir, cfg, fit_cfg, Path(out_dir), logger)
    finally:
        torch.set_num_threads(threads)


def _fit_and_write(case_dir, cfg, fit_cfg: FitConfig, out_dir: Path, logger: Any) -> dict[str, Any]:
    start = time.perf_counter()
    say = (
        (lambda message: print(f"[preprocess] {message}", file=sys.stderr))
        if fit_cfg.progress_bar
        else None
    )
    prepared = load_prepared(case_dir, fit_cfg, say)
    _warn_inputs(prepared, case_dir)
    fit_start = time.perf_counter()
    if fit_cfg.method in BASELINES:
        raw, fitqc, extra = _baseline(prepared, fit_cfg)
    else:
        if fit_cfg.progress_bar:  # seconds to a minute before the first step shows, large grids
            print("[fit] starting values: box-model grid start, f_ODE pre-fit", file=sys.stderr)
        fit = fit_fields(prepared, fit_cfg, logger)
        raw = maps_from_params(fit.flow_per_s, fit.mtt_s, fit.delay_s)
        fitqc = fit.fitqc_hu
        extra = {"fit": fit}
    maps, valid, counts = mask_unphysical(raw, prepared.brain)
    fit_time = time.perf_counter() - fit_start
    if fitqc is None:
        fitqc = box_model_fitqc(
            maps,
            prepared.tissue & valid,
            prepared.tissue_hu,
            prepared.frame_times_s,
            prepared.aif_hu,
        )
    fit = extra.get("fit")
    odd = unexplained(fitqc, prepared.tissue & valid, _residual_rms(prepared, fit))
    usable = prepared.tissue & valid & ~odd
    wall = time.perf_counter() - start
    masked = {"unphysical": counts, "unexplained": int(odd.sum())}
    standard_x = prepared.standard_mm()[:, 0].reshape(prepared.shape)
    masks = defuse3_masks(maps, usable, standard_x, prepared.voxel_volume_ml)
    summary = _summary(prepared, fit_cfg, maps, usable, masks, masked, wall, fit, case_dir)
    summary["fit_time_s"] = fit_time
    with atomic_dir(out_dir) as tmp:
        write_maps(tmp, maps, prepared.affine, usable, fitqc)
        write_masks(tmp, masks, prepared.affine)
        write_json_atomic(tmp / "summary.json", summary)
        if fit is not None:
            write_history(tmp / HISTORY_CSV, fit.history)
        save_resolved(cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg), tmp)
        if fit_cfg.report:
            write_report(
                tmp / "report.png",
                maps,
                prepared,
                summary,
                extra.get("fit"),
                usable,
                core_label=fit_cfg.core_label,
            )
    if logger is not None:
        _log_summary(logger, summary, Path(out_dir))
    return summary


def _residual_rms(prepared: PreparedCase, fit: Any) -> float:
    """RMS residual a perfect fit leaves on the tissue curves (:func:`perfusion.noise.fit_noise`):
    a neural fit of one region (the whole tissue) has already measured it."""
    if fit is not None and fit.info.get("fits") == 1:
        return float(fit.info["noise"]["expected_residual_rms_hu"])
    return fit_noise(
        prepared.tissue_hu[prepared.tissue],
        prepared.frame_times_s,
        prepared.bolus_arrival_s,
        prepared.meta.get("baseline_frames", 1),
    )[1]


def _warn_inputs(prepared: PreparedCase, case_dir: str | Path) -> None:
    """One line on stderr per input quality flag (:func:`perfusion.clinical.input_warnings`),
    before the fit starts; low tissue contrast with its peak and noise."""
    contrast = prepared.meta.get("contrast", {})
    numbers = (
        f" (peak {contrast['peak_hu']:.1f} ΔHU, noise SD {contrast['noise_sd_hu']:.1f} ΔHU)"
        if contrast.get("peak_hu") is not None
        else ""
    )
    flags = prepared.meta.get("aif", {}).get("flags", [])
    for flag, (finding, advice) in zip(flags, input_warnings(flags), strict=True):
        details = numbers if flag == "low_tissue_contrast" else ""
        print(f"warning: {Path(case_dir).resolve()}: {finding}{details}: {advice}", file=sys.stderr)


def _baseline(prepared: PreparedCase, cfg: FitConfig) -> tuple[dict, None, dict]:
    """Classical maps of ``prepared`` by :data:`BASELINES`' ``cfg.method`` (bsvd, nlr)."""
    method = cfg.method
    result = BASELINES[method](prepared, cfg)
    missing = [n for n in MAP_NAMES if n not in result]
    if missing:
        raise PerfusionError(f"method={method}: baseline returned no {missing}")
    return {n: np.asarray(result[n], dtype=np.float64) for n in MAP_NAMES}, None, {}


PREPROCESS_KEYS = ("aif", "contrast", "motion", "baseline_frames", "timings_s", "runtime_s")
"""What preprocessing reports into summary.json: where the input curves came from (source,
confidence, flags, voxels and weights), the tissue's contrast to noise, the motion found, the
baseline and the time per stage."""


def _preprocess_summary(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: meta[k] for k in PREPROCESS_KEYS if k in meta}
    if "motion" in out:  # the per-frame parameters are in motion.tsv of perfusion preprocess
        out["motion"] = {k: v for k, v in out["motion"].items() if k != "params"}
    return out


def _summary(prepared, cfg, maps, usable, masks, masked, wall, fit, case_dir) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "method": cfg.method,
        "case": str(case_dir),
        "input_digest": input_digest(case_dir),
        "wall_time_s": wall,
        "tmax_convention": TMAX_CONVENTIONS.get(cfg.method, TMAX_CONVENTION),
        "note": NOTE,
        "units": {"cbf": "ml/100g/min", "cbv": "ml/100g", "mtt": "s", "tmax": "s", "delay": "s"},
        "scan_to_standard": prepared.scan_to_standard,
        "bolus_arrival_s": prepared.bolus_arrival_s,
        "unphysical_voxels": masked["unphysical"],
        "unexplained_voxels": masked["unexplained"],
        "brain_voxels": int(prepared.brain.sum()),
        "tissue_voxels": int(prepared.tissue.sum()),
        "medians_in_tissue": {n: median_or_nan(maps[n][usable]) for n in MAP_NAMES},
        "defuse3": mask_summary(masks, prepared.voxel_volume_ml),
        "preprocess": _preprocess_summary(prepared.meta),
    }
    summary["affected_side"] = summary["defuse3"]["affected_side"]
    # volumes kept for research; no eligibility from noise, a cut-off bolus or a failed fit
    summary["defuse3"]["verdict_withheld"] = withheld_verdict(summary)
    if summary["defuse3"]["verdict_withheld"]:
        summary["defuse3"]["defuse3_target_mismatch"] = None
    if fit is not None:
        summary.update(
            steps=fit.steps,
            loss_variant=cfg.loss.variant,
            loss_norm=cfg.loss.norm,
            losses=fit.losses,
            history=HISTORY_CSV,
            fitqc=(
                "mean |Eq. (1) prediction - data| over frames (ΔHU) per tissue voxel"
                if cfg.loss.variant == "direct"
                else "mean |f_TAC - data| over frames (ΔHU) per tissue voxel"
            ),
            **fit.info,
        )
    else:
        summary.update(steps=0, losses={}, fitqc="mean |Eq. (1) prediction - data| (ΔHU)")
    return summary


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """Per-step losses (unit attenuation) and residual RMS (ΔHU) as CSV, one row per step."""
    keys = list(dict.fromkeys(["step", *(k for row in history for k in row)]))
    lines = [",".join(keys)]
    lines += [",".join(_cell(row.get(k)) for k in keys) for row in history]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_history(fit_dir: str | Path) -> list[dict[str, float]]:
    """The per-step rows of a fit folder's history.csv (empty when there is none)."""
    path = Path(fit_dir) / HISTORY_CSV
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    keys = lines[0].split(",")
    rows = (zip(keys, line.split(","), strict=True) for line in lines[1:])
    return [{k: float(v) for k, v in row if v} for row in rows]


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _log_summary(logger: Any, summary: dict[str, Any], out_dir: Path) -> None:
    """Summary numbers and the report image to the run's logger (W&B)."""
    numbers = {
        f"summary/{k}": v for k, v in summary["defuse3"].items() if isinstance(v, int | float)
    }
    numbers["summary/wall_time_s"] = summary["wall_time_s"]
    numbers["summary/unexplained_voxels"] = summary["unexplained_voxels"]
    logger.log_metrics(numbers)
    report = out_dir / "report.png"
    if report.is_file() and hasattr(logger, "log_image"):
        logger.log_image(key="maps/report", images=[str(report)])
