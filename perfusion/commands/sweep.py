"""``perfusion sweep FILE [count=N] [dir=DIR] [key=value ...]``: run a W&B sweep YAML offline.

Validates FILE (built-in checks, plus W&B's JSON schema when the optional ``sweeps`` package is
installed), runs trials until the sweep folder holds ``count`` of them (resuming a folder that
already has some), then writes ``bench/results/sweep-<name>.{md,json,png}`` and the best
configuration ``configs/fit/best-<name>.yaml``. Driver settings: configs/sweep.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path

from perfusion.config import split_args, to_object
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.sweeps import (
    SweepRunConfig,
    load_spec,
    proposer_name,
    run_sweep,
    wandb_schema_errors,
)
from perfusion.sweeps.driver import sweep_dir_for
from perfusion.sweeps.report import log_report, write_report

USAGE = (
    "usage: perfusion sweep configs/sweeps/NAME.yaml [count=N] [dir=DIR] [seed=S] [reference=false]"
)
OPTIONS = Options(SweepRunConfig, ("sweep.yaml",))


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if len(positionals) != 1:
        raise PerfusionError(USAGE)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = load_spec(Path(positionals[0]))
    violations = wandb_schema_errors(spec.raw)
    if violations:
        raise PerfusionError(f"W&B sweep schema: {violations[0]}", spec.path)
    cfg = to_object(OPTIONS.load(overrides))
    if cfg.count < 0:
        raise PerfusionError(f"config key 'count': expected >= 0, got {cfg.count}")
    known = run_sweep(spec, cfg)
    if not known:  # count=0 reference=false: only the case was prepared
        print(f"sweep {spec.name}: no trials run, nothing to report")
        return
    paths = write_report(
        spec, known, Path(cfg.results_dir), Path(cfg.best_config_dir), proposer_name(spec)
    )
    if cfg.log_wandb:
        log_report(spec, paths, cfg.project, sweep_dir_for(spec, cfg))
    done = sum(1 for t in known if t.result is not None)
    print(f"sweep {spec.name}: {done} trials done; " + ", ".join(str(p) for p in paths.values()))
