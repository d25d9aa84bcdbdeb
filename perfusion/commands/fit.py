"""``perfusion fit CASE_DIR [out=DIR] [key=value ...]``: perfusion maps for one case.

CASE_DIR is a case folder (preprocessed on the fly) or a preprocessed folder. Options are
:class:`~perfusion.fitting.config.FitConfig` keys over ``configs/fit.yaml``; ``config=model/sppinn``
selects the SPPINN preset; ``method=bsvd|nlr`` the classical baselines. Writes the output
contract of :mod:`perfusion.fitting.run` into ``out`` (default ``CASE_DIR/fits/<method>``, where
``perfusion segment`` looks for the maps), and the W&B run files into ``out/wandb``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from perfusion.clinical import map_warnings
from perfusion.commands.outputs import case_maps_folder, wrote_line
from perfusion.config import load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.fitting.config import FitConfig, check_fit_config
from perfusion.help import Options, one_positional
from perfusion.prepared import scan_file
from perfusion.resources import check_memory, check_out_dir


@dataclass
class FitOutput:
    """Where ``perfusion fit`` writes (a key of the command, not of FitConfig's config.yaml)."""

    out: str = ""
    """Output folder: maps, summary.json, history.csv, report.png, config.yaml. Empty:
    ``CASE_DIR/fits/<method>``."""


OPTIONS = Options(FitConfig, ("fit.yaml",), own=FitOutput)


def main(argv: list[str]) -> None:
    started = time.time()
    positionals, overrides = split_args(argv)
    own, overrides = OPTIONS.split(overrides)
    output = load_config(FitOutput, overrides=own)
    case_dir = Path(one_positional(__doc__, positionals)).absolute()
    if not case_dir.is_dir():
        raise PerfusionError("case folder not found", case_dir)
    fit_cfg = OPTIONS.load(overrides)
    check_fit_config(fit_cfg)  # keys, types, method, steps: still torch-free
    out_dir = _out_dir(output.out, case_dir, fit_cfg.method)
    check_memory("fit", scan_file(case_dir))

    from perfusion.fitting.init import build_fit_config  # torch from here on
    from perfusion.fitting.tracked import fit_tracked
    from perfusion.sweeps.objective import record_trial_metrics  # eval/* keys for sweeps

    cfg = build_fit_config(
        overrides, warn=lambda line: print(f"perfusion fit: warning: {line}", file=sys.stderr)
    )
    summary = fit_tracked(case_dir, cfg, out_dir, after=record_trial_metrics)
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
    for finding, advice in map_warnings(summary):
        print(f"warning: {out_dir}: {finding}: {advice}", file=sys.stderr)
    print(wrote_line(out_dir, started))


def _out_dir(out: str, case_dir: Path, method: str) -> Path:
    """``out``, else :func:`case_maps_folder`; a refusal of that default says to give out=."""
    if out:
        return check_out_dir(out)
    try:
        return check_out_dir(case_maps_folder(case_dir, method))
    except PerfusionError as exc:
        raise PerfusionError(f"{exc.fault}; give out=DIR elsewhere", exc.path) from None
