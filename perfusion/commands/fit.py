"""``perfusion fit CASE_DIR out=DIR [key=value ...]``: perfusion maps for one case.

CASE_DIR is a case folder (preprocessed on the fly) or a preprocessed folder. Options are
:class:`~perfusion.fitting.config.FitConfig` keys over ``configs/fit.yaml``; ``config=model/sppinn``
selects the SPPINN preset; ``method=bsvd|nlr`` the classical baselines. Writes the output
contract of :mod:`perfusion.fitting.run` into ``out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from perfusion.config import load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig
from perfusion.fitting.init import with_init_settings
from perfusion.fitting.run import fit_case

USAGE = "usage: perfusion fit CASE_DIR out=DIR [key=value ...]"


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if len(positionals) != 1:
        raise PerfusionError(f"expected one case folder, got {len(positionals)}. {USAGE}")
    out = [o.split("=", 1)[1] for o in overrides if o.startswith("out=")]
    if not out or not out[0]:
        raise PerfusionError(f"missing out=DIR. {USAGE}")
    overrides = [o for o in overrides if not o.startswith("out=")]
    overrides, warnings = with_init_settings(overrides)
    for line in warnings:
        print(f"perfusion fit: warning: {line}", file=sys.stderr)
    cfg = load_config(FitConfig, ["fit.yaml"], overrides)
    out_dir = Path(out[0])
    logger = _logger(cfg, positionals[0], out_dir)
    try:
        summary = fit_case(positionals[0], cfg, out_dir, logger=logger)
        from perfusion.sweeps.objective import record_trial_metrics  # eval/* keys for sweeps

        summary.update(record_trial_metrics(positionals[0], out_dir, logger))
    finally:
        from perfusion.tracking import finish

        finish(logger)
    d = summary["defuse3"]
    print(
        f"{summary['method']}: maps in {out_dir} ({summary['wall_time_s']:.0f} s); "
        f"core {d['core_volume_ml']:.1f} ml, Tmax>6s {d['tmax_gt_6s_volume_ml']:.1f} ml, "
        f"affected side {d['affected_side']}"
    )


def _logger(cfg, case_dir: str, out_dir: Path):
    """W&B logger for the run (None when tracking is off or ``WANDB_MODE=disabled``)."""
    if not cfg.tracking.enabled or cfg.method in ("bsvd", "nlr"):
        return None
    from omegaconf import OmegaConf

    from perfusion.tracking import make_logger

    save_dir = cfg.tracking.save_dir or str(out_dir.parent / "wandb-runs")
    return make_logger(
        name=f"{Path(case_dir).name}-{cfg.method}",
        save_dir=save_dir,
        project=cfg.tracking.project,
        group=cfg.tracking.group,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
