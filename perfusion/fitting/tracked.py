"""One fit with its W&B run: the path ``perfusion fit`` and ``perfusion fit-cohort`` share.

:func:`fit_logger` opens the run (none for the classical methods, with ``tracking.enabled=false``
or ``WANDB_MODE=disabled``), :func:`fit_tracked` runs :func:`~perfusion.fitting.run.fit_case`,
then an optional ``after`` hook (the command's sweep metrics), and always closes the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from perfusion.fitting.config import CLASSICAL_METHODS

AfterFit = Callable[[Path, Path, Any], dict[str, Any]]
"""``after(case_dir, out_dir, logger) -> dict``: extra keys merged into the returned summary."""


def fit_logger(cfg: Any, case_dir: Path, out_dir: Path) -> Any:
    """W&B logger for the fit of ``case_dir`` (None when tracking is off or the method has no
    neural fit). Its files go to ``<out>/wandb/`` unless ``tracking.save_dir`` names another
    folder; ``tracking.group`` groups runs (fit-cohort sets one per cohort)."""
    if not cfg.tracking.enabled or cfg.method in CLASSICAL_METHODS:
        return None
    from perfusion.tracking import make_logger

    return make_logger(
        name=f"{Path(case_dir).name}-{cfg.method}",
        save_dir=cfg.tracking.save_dir or str(out_dir),
        project=cfg.tracking.project,
        group=cfg.tracking.group,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def fit_tracked(
    case_dir: Path, cfg: Any, out_dir: Path, after: AfterFit | None = None
) -> dict[str, Any]:
    """Fit ``case_dir`` into ``out_dir`` under ``cfg`` (a FitConfig DictConfig) with its W&B run;
    returns the summary (with ``after``'s keys)."""
    from perfusion.fitting.run import fit_case
    from perfusion.tracking import finish

    logger = fit_logger(cfg, case_dir, out_dir)
    try:
        summary = fit_case(case_dir, cfg, out_dir, logger=logger)
        if after is not None:
            summary.update(after(case_dir, out_dir, logger))
    finally:
        finish(logger)
    return summary
