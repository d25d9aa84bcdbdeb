"""Whether a finished fit folder can stand for a new fit: the cached-result rule for fits.

A fit folder holds the ``config.yaml`` it ran with. It is reused only when the digest
(:func:`perfusion.cache.digest`) of its effective settings, completed with today's defaults
for keys added since (a new key's default keeps the old behaviour), equals the digest of the
wanted config, and, for a fit started from a checkpoint, the weights it recorded starting
from (``summary.json`` ``init.sha256``) are those of the checkpoint asked for now.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from perfusion import cache
from perfusion.baselines.bsvd import BsvdConfig
from perfusion.fitting.config import BEFORE_ADDED, CLASSICAL_METHODS, start_grid

ADDED_KEYS: dict[str, Any] = {
    **BEFORE_ADDED,
    # the section's defaults are the behaviour before it (its chunk size is never in a digest)
    "bsvd": {k: v for k, v in dataclasses.asdict(BsvdConfig()).items() if k != "chunk"},
}
"""FitConfig keys added after fits were cached (:data:`~perfusion.fitting.config.BEFORE_ADDED`
and the ``bsvd`` section): at their former value a key is left out of the digest, so adding
a key does not make every cached fit look different. (A saved configuration without the key
is completed with the dataclass default, which is that value.)"""
FLAG_ONLY_PREPROCESS_KEYS = ("min_tissue_cnr",)
"""PreprocessConfig keys that only flag a scan and change no data: out of every digest that
decides whether a cached fit or prepared case can be reused."""


def effective_settings(fit_cfg: Any, spacing_mm: Any = None) -> dict[str, Any]:
    """The FitConfig keys that can change a fit's maps: a classical method reads only its
    preprocessing (and bSVD its ``bsvd`` section, but for the chunk size); the noise target and
    margin matter only to the noise rule; no stop setting but the rule and the weight average
    matter when the fit runs its ``steps``, and the average not under the held-out rules
    (they keep their best step); logging, display, thread counts, bSVD's chunk size, the
    tissue-contrast flag's threshold and the device never do (a device changes a fit by float
    rounding only); nor do the f_ODE pre-fit's settings when it does not run (its grid start
    still feeds the anchor); a key of :data:`ADDED_KEYS` at its former behaviour is left out.
    Given the case's voxel size ``spacing_mm``, the start prior's block is its voxel count
    there (:func:`~perfusion.fitting.config.start_grid`, voxels of the start's grid),
    so a block given in mm and the same block given in voxels are the same fit; likewise
    ``ode_prefit_start_mm`` is the voxels it merges there, None (no key: the behaviour before
    it) when it merges none."""
    settings = OmegaConf.to_container(OmegaConf.structured(fit_cfg), resolve=True)
    if spacing_mm is not None:
        merge, block = start_grid(fit_cfg, spacing_mm)
        settings["ode_prefit_start_mm"] = None if all(n == 1 for n in merge) else merge
        settings["ode_prefit_prior_block"] = block
        settings["ode_prefit_prior_block_mm"] = None
    for key in ("progress_bar", "report", "tracking", "threads", "device"):
        settings.pop(key, None)
    for key in ("threads", *FLAG_ONLY_PREPROCESS_KEYS):
        settings["preprocess"].pop(key, None)
    settings["bsvd"].pop("chunk", None)
    for key, before in ADDED_KEYS.items():
        *sections, name = key.split(".")
        holder = functools.reduce(dict.get, sections, settings)
        if holder.get(name) == before:
            holder.pop(name)
    if not settings.get("baseline_refit"):  # no offsets to centre
        settings.pop("baseline_refit_centred", None)
    blocks = ("ode_prefit_prior_block", "ode_prefit_prior_block_mm")
    if not settings.get("ode_prefit_prior_iterations"):  # no learnt prior to make local
        for key in (*blocks, "ode_prefit_prior_floor"):
            settings.pop(key, None)
    if not any(key in settings for key in blocks):
        settings.pop("ode_prefit_prior_share", None)
    bsvd = settings.pop("bsvd", None)
    if settings["method"] in CLASSICAL_METHODS:
        kept = {"method": settings["method"], "preprocess": settings["preprocess"]}
        return {**kept, "bsvd": bsvd} if bsvd and settings["method"] == "bsvd" else kept
    if settings["ode_prefit_steps"] == 0:
        for key in ("ode_prefit_voxels", "ode_prefit_lr", "ode_prefit_schedule", "ode_prefit_eps"):
            settings.pop(key, None)
        if settings["loss"]["anchor"] == 0:
            settings.pop("ode_prefit_median")
            settings.pop("ode_prefit_median_times", None)
            settings.pop("ode_prefit_start_mm", None)
            settings.pop("ode_prefit_prior_iterations", None)
            settings.pop("ode_prefit_tmax", None)
            for key in (*blocks, "ode_prefit_prior_share", "ode_prefit_prior_floor"):
                settings.pop(key, None)
    stop = settings["stop"]
    if stop["rule"] == "none":  # the steps all run; the average of their weights still counts
        settings["stop"] = {k: v for k, v in stop.items() if k in ("rule", "average")}
    elif stop["rule"] == "heldout":
        stop.pop("target"), stop.pop("margin")
    if stop["rule"] in ("heldout", "both"):
        stop.pop("average", None)  # the best held-out step is kept, not the average
    return settings


UNRECORDED = "unrecorded"
"""The start weights of a saved fit that did not record their digest: matches no checkpoint."""


def init_weights(path: str | Path | None) -> str | None:
    """The ``sha256`` of the start checkpoint's weights (None without one or when missing),
    read once per file version."""
    if not path or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return _weights_sha(str(Path(path).absolute()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _weights_sha(path: str, mtime_ns: int, size: int) -> str | None:
    from perfusion.fitting.init import read_init

    return read_init(path).get("sha256")


def fit_digest(fit_cfg: Any, weights: str | None = None, spacing_mm: Any = None) -> str:
    """Digest of what shapes a fit's maps: its effective settings (on a case of ``spacing_mm``
    voxels, when given) and its start weights (``weights``, else those of the checkpoint
    ``fit_cfg.init`` names today)."""
    settings = effective_settings(fit_cfg, spacing_mm)
    if weights is None:
        weights = init_weights(settings.get("init"))
    return cache.digest(settings, weights)


def saved_config(fit_dir: Path) -> Any | None:
    """The FitConfig a fit folder ran with, completed with today's defaults; None when absent
    or when it holds a key or value today's FitConfig does not know (another version's fit)."""
    from omegaconf.errors import OmegaConfBaseException

    from perfusion.fitting.config import FitConfig

    path = Path(fit_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        return OmegaConf.merge(OmegaConf.structured(FitConfig), OmegaConf.load(path))
    except OmegaConfBaseException:
        return None


def fit_spacing_mm(fit_dir: Path) -> tuple[float, ...] | None:
    """The voxel size (mm, scan axes) of the maps in ``fit_dir``: its tissue mask's header;
    None without one."""
    import nibabel as nib

    from perfusion.io import voxel_spacing_mm

    path = Path(fit_dir) / "tissuemask.nii.gz"
    if not path.is_file():
        return None
    return tuple(float(v) for v in voxel_spacing_mm(nib.load(path).affine))


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
    if saved is None or not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    # the weights the fit started from, as it recorded them (the file may have changed since)
    started = (summary.get("init") or {}).get("sha256", UNRECORDED) if saved.init else None
    spacing = fit_spacing_mm(fit_dir)
    if fit_digest(saved, started, spacing) != fit_digest(fit_cfg, spacing_mm=spacing):
        return None
    recorded = summary.get("input_digest")
    if source is not None and recorded is not None and recorded != input_digest(source):
        return None
    return summary
