"""Whether a finished fit folder can stand for a new fit: the cached-result rule for fits.

A fit folder holds the ``config.yaml`` it ran with. It is reused only when the digest
(:func:`perfusion.cache.digest`) of its effective settings, completed with today's defaults
for keys added since (a new key's default keeps the old behaviour), equals the digest of the
wanted config, and, for a fit started from a checkpoint, of that checkpoint's weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from perfusion import cache
from perfusion.fitting.config import CLASSICAL_METHODS


def effective_settings(fit_cfg: Any) -> dict[str, Any]:
    """The FitConfig keys that can change a fit's maps: a classical method reads only its
    preprocessing; the noise target and margin matter only to the noise rule; no stop setting
    but the rule matters when the fit runs its ``steps``; logging, display, thread counts and
    the device never do (a device changes a fit by float rounding only)."""
    settings = OmegaConf.to_container(OmegaConf.structured(fit_cfg), resolve=True)
    for key in ("progress_bar", "report", "tracking", "threads", "device"):
        settings.pop(key, None)
    settings["preprocess"].pop("threads", None)
    if settings["method"] in CLASSICAL_METHODS:
        return {"method": settings["method"], "preprocess": settings["preprocess"]}
    stop = settings["stop"]
    if stop["rule"] == "none":
        settings["stop"] = {"rule": "none"}
    elif stop["rule"] == "heldout":
        stop.pop("target"), stop.pop("margin")
    return settings


def fit_digest(fit_cfg: Any) -> str:
    """Digest of what shapes a fit's maps: its effective settings and its start weights."""
    from perfusion.fitting.init import read_init

    settings = effective_settings(fit_cfg)
    init = settings.get("init")
    weights = read_init(init).get("sha256") if init and Path(init).is_file() else None
    return cache.digest(settings, weights)


def saved_config(fit_dir: Path) -> Any | None:
    """The FitConfig a fit folder ran with, completed with today's defaults; None when absent."""
    from perfusion.fitting.config import FitConfig

    path = Path(fit_dir) / "config.yaml"
    if not path.is_file():
        return None
    return OmegaConf.merge(OmegaConf.structured(FitConfig), OmegaConf.load(path))


def input_digest(source: str | Path) -> str:
    """Digest of what a fit read: name, size and modification time of the case file, or of
    every file directly in the case (or prepared) folder. A fit is reused only for the same."""
    source = Path(source)
    files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    return cache.digest([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def finished_fit(
    fit_dir: str | Path, fit_cfg: Any, source: str | Path | None = None
) -> dict[str, Any] | None:
    """The summary of the fit in ``fit_dir`` when it ran what ``fit_cfg`` asks and, given the
    ``source`` case (or prepared folder), read that same input (its ``input_digest``; a fit
    written before inputs were recorded is taken as is); else None."""
    fit_dir = Path(fit_dir)
    summary_path = fit_dir / "summary.json"
    saved = saved_config(fit_dir)
    if saved is None or not summary_path.is_file() or fit_digest(saved) != fit_digest(fit_cfg):
        return None
    summary = json.loads(summary_path.read_text())
    recorded = summary.get("input_digest")
    if source is not None and recorded is not None and recorded != input_digest(source):
        return None
    return summary
