"""What a sweep trial reports: stable summary keys against truth, wall time, size, label-free fit.

Keys (W&B run summary and ``result.json``; these names are a stable interface, so sweep YAMLs
and dashboards can rely on them):

========================  ==========================================================  ========
key                       meaning                                                     goal
========================  ==========================================================  ========
``eval/cbf_r``            Pearson r of fitted vs true CBF inside the tissue mask      maximize
``eval/cbf_mae``          mean |CBF - true CBF| in the tissue mask, ml/100g/min       minimize
``eval/tmax_mae_s``       mean |Tmax - true Tmax| in the tissue mask, s               minimize
``eval/rcbf30_dice``      Dice of rCBF < 30 % regions (fit vs the rule on true CBF)   maximize
``eval/tmax6_dice``       Dice of Tmax > 6 s regions (fit vs true)                    maximize
``eval/map_error``        mean of (1 - cbf_r, 1 - rcbf30_dice, 1 - tmax6_dice)        minimize
``time/wall_s``           fit wall time for the volume, s (the fit's own clock)       minimize
``model/n_params``        trainable parameters of the fields                          --
``val/rms_hu``            RMS (ΔHU) of the fit on held-out voxels (no truth)          minimize
========================  ==========================================================  ========

``eval/*`` exist only for cases with ``truth/`` (phantoms); ``eval/map_error`` weighs CBF
agreement and both clinical regions equally (Tmax MAE is in seconds, so it is reported beside
it, not folded in). The evaluation itself is ``perfusion.evaluation.evaluate_fit``; this module
only names its results and never selects anything on truth during a fit.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from perfusion.errors import PerfusionError
from perfusion.evaluation import evaluate_fit, map_error

log = logging.getLogger(__name__)

# stable key -> the key of perfusion.evaluation.evaluate_fit's result it reports
EVAL_KEYS: dict[str, str] = {
    "eval/cbf_r": "cbf_r",
    "eval/cbf_mae": "cbf_mae",
    "eval/tmax_mae_s": "tmax_mae",
    "eval/rcbf30_dice": "rcbf30_dice",
    "eval/tmax6_dice": "tmax6_dice",
}
LABEL_FREE_KEYS = ("val/rms_hu", "losses.val_rms_hu")


def eval_metrics(fit_dir: Path, truth_dir: Path) -> dict[str, float]:
    """The ``eval/*`` keys of one fit folder against a phantom's ``truth/`` folder."""
    found = evaluate_fit(fit_dir, truth_dir)
    out = {key: float(found[name]) for key, name in EVAL_KEYS.items() if _is_num(found.get(name))}
    error = map_error(out, prefix="eval/")
    if math.isfinite(error):
        out["eval/map_error"] = error
    return out


def trial_metrics(
    fit_dir: Path,
    case_dir: Path | None = None,
    wall_s: float | None = None,
    keep: tuple[str, ...] = (),
) -> dict[str, float]:
    """Every stable key available for a finished fit (see the module docstring).

    Keys already in ``summary.json`` are kept (the fit command may have added them); ``eval/*``
    are computed here when missing and ``case_dir/truth`` exists; ``time/wall_s`` falls back to
    the driver-measured ``wall_s``. Numeric summary keys named in ``keep`` (e.g. a sweep's own
    metric) are passed through as they are.
    """
    summary = read_summary(fit_dir)
    flat = _flatten(summary)
    out = {k: float(v) for k, v in flat.items() if (_is_stable(k) or k in keep) and _is_num(v)}
    if "time/wall_s" not in out:
        wall = summary.get("wall_time_s", wall_s)
        if _is_num(wall):
            out["time/wall_s"] = float(wall)
    if "val/rms_hu" not in out:
        value = _find_label_free(summary)
        if value is not None:
            out["val/rms_hu"] = value
    if "model/n_params" not in out:
        count = parameter_count(fit_dir, summary)
        if count is not None:
            out["model/n_params"] = float(count)
    truth = None if case_dir is None else Path(case_dir) / "truth"
    if (
        summary
        and truth is not None
        and truth.is_dir()
        and not any(k.startswith("eval/") for k in out)
    ):
        try:
            out.update(eval_metrics(fit_dir, truth))
        except (PerfusionError, OSError, ValueError) as exc:  # incomplete maps: no eval/*
            log.warning("no eval/* metrics for %s: %s", fit_dir, exc)
    return out


def read_summary(fit_dir: Path) -> dict[str, Any]:
    path = Path(fit_dir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def parameter_count(fit_dir: Path, summary: dict[str, Any]) -> int | None:
    """Trainable parameters: the summary's count, else rebuilt from the fit's ``config.yaml``."""
    for key in ("n_params", "model/n_params", "parameters"):
        if isinstance(summary.get(key), int):
            return int(summary[key])
    config = Path(fit_dir) / "config.yaml"
    if not config.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        from perfusion.fields import FieldsConfig, build_fields

        cfg = OmegaConf.load(config)
        fields_cfg = OmegaConf.merge(OmegaConf.structured(FieldsConfig), cfg.get("fields", {}))
        dims = 2 if cfg.get("slice_wise", False) else 3
        model = build_fields(fields_cfg, dims)
    except Exception:  # noqa: BLE001 - a count is informative only; never fail a trial on it
        return None
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _find_label_free(summary: dict[str, Any]) -> float | None:
    flat = _flatten(summary)
    for key in LABEL_FREE_KEYS:
        if _is_num(flat.get(key)):
            return float(flat[key])
    return None


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b": value}; keys containing "/" stay as they are."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _is_stable(key: str) -> bool:
    return key.split("/")[0] in ("eval", "time", "model") or key == "val/rms_hu"


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def record_trial_metrics(
    case_dir: str | Path, fit_dir: str | Path, logger: Any = None
) -> dict[str, float]:
    """Hook for ``perfusion fit``: add the stable keys to ``summary.json`` and the W&B run.

    Called after a fit, so a trial launched by ``wandb agent`` reports ``eval/*`` (when the case
    has ``truth/``), ``time/wall_s``, ``model/n_params`` and ``val/rms_hu`` in its W&B summary,
    where W&B's sweep controller reads the metric. ``logger`` is any object with
    ``log_metrics(dict)`` (Lightning's WandbLogger), or None.
    """
    from perfusion.io import write_json_atomic

    fit_dir = Path(fit_dir)
    # val/rms_hu is already in the run's history (the fit logs it); add only the summary-only keys
    metrics = {k: v for k, v in trial_metrics(fit_dir, Path(case_dir)).items() if k != "val/rms_hu"}
    summary = read_summary(fit_dir)
    if summary and any(summary.get(k) != v for k, v in metrics.items()):
        write_json_atomic(fit_dir / "summary.json", {**summary, **metrics})
    if logger is not None and metrics:
        logger.log_metrics(metrics)
    return metrics
