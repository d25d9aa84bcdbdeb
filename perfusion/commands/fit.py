"""``perfusion fit CASE_DIR out=DIR [key=value ...]``: perfusion maps for one case.

CASE_DIR is a case folder (preprocessed on the fly) or a preprocessed folder. Options are
:class:`~perfusion.fitting.config.FitConfig` keys over ``configs/fit.yaml``; ``config=model/sppinn``
selects the SPPINN preset; ``method=bsvd|nlr`` the classical baselines. Writes the output
contract of :mod:`perfusion.fitting.run` into ``out``, and the W&B run files into ``out/wandb``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from perfusion.commands.outputs import wrote_line
from perfusion.config import load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig, check_fit_config
from perfusion.help import Options
from perfusion.io import CTP_FILE
from perfusion.prepared import TISSUE_FILE
from perfusion.resources import check_memory, check_out_dir

USAGE = "usage: perfusion fit CASE_DIR out=DIR [key=value ...]"


@dataclass
class FitOutput:
    """Where ``perfusion fit`` writes (a key of the command, not of FitConfig's config.yaml)."""

    out: str = ""
    """Output folder (required): maps, summary.json, history.csv, report.png, config.yaml."""


OPTIONS = Options(FitConfig, ("fit.yaml",), own=FitOutput)


def main(argv: list[str]) -> None:
    started = time.time()
    positionals, overrides = split_args(argv)
    if len(positionals) != 1:
        raise PerfusionError(f"expected one case folder, got {len(positionals)}. {USAGE}")
    own, overrides = OPTIONS.split(overrides)
    out = load_config(FitOutput, overrides=own).out
    if not out:
        raise PerfusionError(f"missing out=DIR. {USAGE}")
    case_dir = Path(positionals[0]).absolute()
    if not case_dir.is_dir():
        raise PerfusionError("case folder not found", case_dir)
    out_dir = check_out_dir(out)
    prepared_scan = case_dir / TISSUE_FILE
    check_memory("fit", prepared_scan if prepared_scan.is_file() else case_dir / CTP_FILE)
    check_fit_config(OPTIONS.load(overrides))  # keys, types, method, steps: still torch-free

    from perfusion.fitting.init import build_fit_config  # torch from here on
    from perfusion.fitting.run import fit_case

    cfg = build_fit_config(
        overrides, warn=lambda line: print(f"perfusion fit: warning: {line}", file=sys.stderr)
    )
    logger = _logger(cfg, case_dir, out_dir)
    try:
        summary = fit_case(case_dir, cfg, out_dir, logger=logger)
        from perfusion.sweeps.objective import record_trial_metrics  # eval/* keys for sweeps

        summary.update(record_trial_metrics(case_dir, out_dir, logger))
    finally:
        from perfusion.tracking import finish

        finish(logger)
    d = summary["defuse3"]
    side = (
        f"affected side {d['affected_side']}"
        if d.get("affected_side")
        else "no perfusion lesion found"
    )
    print(
        f"{summary['method']}: {summary['wall_time_s']:.0f} s; core {d['core_volume_ml']:.1f} ml, "
        f"Tmax>6s {d['tmax_gt_6s_volume_ml']:.1f} ml, {side}"
    )
    print(wrote_line(out_dir, started))


def _logger(cfg, case_dir: Path, out_dir: Path):
    """W&B logger for the run (None when tracking is off or ``WANDB_MODE=disabled``).

    Its files go to ``<out>/wandb/`` unless ``tracking.save_dir`` names another folder.
    """
    from perfusion.fitting.config import CLASSICAL_METHODS

    if not cfg.tracking.enabled or cfg.method in CLASSICAL_METHODS:
        return None
    from omegaconf import OmegaConf

    from perfusion.tracking import make_logger

    return make_logger(
        name=f"{case_dir.name}-{cfg.method}",
        save_dir=cfg.tracking.save_dir or str(out_dir),
        project=cfg.tracking.project,
        group=cfg.tracking.group,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
