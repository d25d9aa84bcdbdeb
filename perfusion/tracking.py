"""Experiment tracking: Lightning's WandbLogger, offline unless ``WANDB_MODE`` says otherwise.

``WANDB_MODE`` unset with no API key makes ``wandb.init`` fail, and ``online`` without a network
hangs for 90 s, so the default is ``offline`` (files under
``<save_dir>/wandb/`` for a later ``wandb sync``); tests run with ``disabled``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

MODES = ("online", "offline", "disabled")
HISTORY_ENV = "PERFUSION_SWEEP_HISTORY"
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
"""Their INFO lines (GPU/TPU/HPU available, LOCAL_RANK, the litlogger tip) say nothing to a user."""
LIGHTNING_WARNING = ".*LeafSpec.*"
"""Lightning's own pytree use under torch >= 2.13: a deprecation only Lightning can act on."""


def quiet_lightning() -> None:
    """Silence Lightning's banners and its LeafSpec deprecation; call after importing Lightning.

    Lightning sets its loggers to INFO when imported, so the level is set here, afterwards.
    """
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=LIGHTNING_WARNING)


def make_logger(
    name: str,
    save_dir: str | Path,
    project: str = "perfusion",
    group: str | None = None,
    job_type: str | None = None,
    config: dict[str, Any] | None = None,
) -> WandbLogger | None:
    """A WandbLogger for one run, or None when ``WANDB_MODE=disabled``.

    Args:
        name: run name (e.g. the case and method).
        save_dir: folder that receives ``wandb/`` run files.
        project, group, job_type: W&B grouping (a benchmark sets group; folds/seeds job_type).
        config: the resolved run config (plain dict) recorded with the run.
    """
    mode = os.environ.setdefault("WANDB_MODE", "offline")
    if mode not in MODES:
        mode = "offline"
    if mode == "disabled":
        return None
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return HistoryWandbLogger(
        name=name,
        save_dir=str(save_dir),
        project=project,
        group=group,
        job_type=job_type,
        mode=mode,
        config=config,
    )


class HistoryWandbLogger(WandbLogger):
    """A WandbLogger that also appends each logged dict as a JSON line to ``$PERFUSION_SWEEP_HISTORY``.

    The offline sweep driver (perfusion.sweeps) sets that variable for each trial and reads the
    file for hyperband early termination, as W&B's server reads the run history online.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None, which wandb (0.31 here) answers with "The anonymous
        # setting has no effect" on every run; left out, wandb's default applies and is silent.
        self._wandb_init.pop("anonymous", None)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        path = os.environ.get(HISTORY_ENV)
        if path:
            numbers = {k: float(v) for k, v in metrics.items() if _is_scalar(v)}  # no images
            record = {"step": step, **numbers}
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def _is_scalar(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def finish(logger: WandbLogger | None) -> None:
    """Close the run (flushes offline files); a no-op for None."""
    if logger is not None:
        import wandb

        logger.finalize("success")
        wandb.finish()
