"""Experiment tracking: Lightning's WandbLogger, offline unless ``WANDB_MODE`` says otherwise.

``WANDB_MODE`` unset with no API key makes ``wandb.init`` fail, and ``online`` without a network
hangs for 90 s (field.md section 6), so the default is ``offline`` (files under
``<save_dir>/wandb/`` for a later ``wandb sync``); tests run with ``disabled``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

MODES = ("online", "offline", "disabled")
HISTORY_ENV = "PERFUSION_SWEEP_HISTORY"


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
