"""The exported initialisation: weights plus everything a fit needs to reuse them safely.

``checkpoints/<name>.ckpt`` is a ``torch.save`` dict read by
:func:`perfusion.fitting.init.load_init`:

- ``state_dict``: PerfusionFields weights (the initialisation phi);
- ``architecture``: ``PerfusionFields.architecture()``; a fit with other fields is refused;
- ``domain``: the fixed Domain scales, and ``frame``: the standard frame the patients were
  aligned to (an initialisation is an anatomical prior, valid only in that frame);
- ``fit``: the inner loop's settings (steps, batch, optimiser, loss, AIF pre-fit,
  preprocessing) that ``perfusion fit init=...`` repeats;
- ``fit_config``: the whole inner-loop FitConfig (plain dict), to rebuild the same fields;
- ``meta``: how it was made (outer steps, meta-batch, cohort, machine, time);
  ``sha256`` of the weights.

It is read with ``weights_only=True`` (:func:`perfusion.fitting.init.load_torch_file`), so the
payload holds tensors and plain values only (dicts, lists, str, int, float, bool, None).
"""

from __future__ import annotations

import hashlib
import io
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from perfusion.domain import Domain
from perfusion.io import write_bytes_atomic
from perfusion.meta.config import MetaConfig

FORMAT = "perfusion-init/1"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the weights in key order (detects a corrupted or edited file)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def inner_fit_settings(cfg: MetaConfig) -> dict[str, Any]:
    """The FitConfig keys a fit from this initialisation must repeat (``key.path: value``)."""
    fit = OmegaConf.to_container(OmegaConf.structured(cfg.fit), resolve=True)
    settings = {
        "steps": int(cfg.n_inner),
        "ode_prefit_voxels": fit["ode_prefit_voxels"],
        "ode_prefit_schedule": fit["ode_prefit_schedule"],
        "aif_prefit_steps": fit["aif_prefit_steps"],
        "aif_prefit_lr": fit["aif_prefit_lr"],
        "ode_prefit_steps": fit["ode_prefit_steps"],
        "ode_prefit_lr": fit["ode_prefit_lr"],
        "ode_prefit_eps": fit["ode_prefit_eps"],
        "ode_prefit_median": fit["ode_prefit_median"],
        "ode_prefit_median_times": fit["ode_prefit_median_times"],
        "ode_prefit_prior_iterations": fit["ode_prefit_prior_iterations"],
        "ode_prefit_tmax": fit["ode_prefit_tmax"],
        "ode_prefit_prior_block": fit["ode_prefit_prior_block"],
        "ode_prefit_prior_block_mm": fit["ode_prefit_prior_block_mm"],
        "ode_prefit_prior_share": fit["ode_prefit_prior_share"],
        "ode_prefit_prior_floor": fit["ode_prefit_prior_floor"],
        "baseline_refit": fit["baseline_refit"],
        "baseline_refit_centred": fit["baseline_refit_centred"],
    }
    settings.update({f"optim.{k}": v for k, v in fit["optim"].items()})
    settings["stop.rule"] = "none"  # Reptile's inner loop runs n_inner steps, always,
    settings["stop.average"] = 0.0  # and goes on from its last weights, not from an average
    for section in ("loss", "sampling", "preprocess", "fields", "domain"):
        settings.update(flatten(fit[section], section))
    return settings


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` under ``p`` -> ``{"p.a.b": 1}``, under ``""`` -> ``{"a.b": 1}``
    (lists and None stay values)."""
    if not isinstance(values, dict):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def export_init(
    fields: nn.Module, cfg: MetaConfig, path: str | Path, outer_steps: int, cohort: list[str]
) -> Path:
    """Write the initialisation file atomically; ``cfg`` is the MetaConfig dataclass object."""
    state = {k: v.detach().cpu().clone() for k, v in fields.state_dict().items()}
    fit = cfg.fit
    payload = {
        "format": FORMAT,
        "state_dict": state,
        "architecture": fields.architecture(),
        "domain": Domain.from_config(fit.domain).scales(),
        "frame": {
            "standard_frame": bool(fit.preprocess.standard_frame),
            "frame_shape": list(fit.preprocess.frame_shape),
            "frame_spacing_mm": list(fit.preprocess.frame_spacing_mm),
        },
        "fit": inner_fit_settings(cfg),
        "fit_config": OmegaConf.to_container(OmegaConf.structured(fit), resolve=True),
        "meta": {
            "name": cfg.name,
            "outer_steps": int(outer_steps),
            "n_outer": int(cfg.n_outer),
            "n_inner": int(cfg.n_inner),
            "meta_batch": int(cfg.meta_batch),
            "outer": asdict(cfg.outer),
            "cohort": cohort,
            "cohort_config": asdict(cfg.cohort),
            "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "sha256": weights_digest(state),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomic(path, buffer.getvalue())
