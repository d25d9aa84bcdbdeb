"""``perfusion sweep FILE [count=N] [dir=DIR] [key=value ...]``: run a W&B sweep YAML offline.

Reads FILE (naming any key the local driver cannot run), runs Optuna trials until the sweep's
study holds ``count`` of them (resuming a folder that already has some), then writes
``bench/results/sweep-<name>/`` (README.md, trials.json, speed_accuracy.png) and the best
configuration ``configs/fit/best-<name>.yaml``. Driver settings: configs/sweep.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path

from perfusion.config import split_args, to_object
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.sweeps.config import SweepRunConfig

USAGE = (
    "usage: perfusion sweep configs/sweeps/NAME.yaml [count=N] [dir=DIR] [seed=S] [reference=false]"
)
OPTIONS = Options(SweepRunConfig, ("sweep.yaml",))


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    if len(positionals) != 1:
        raise PerfusionError(USAGE)
    from perfusion.sweeps.driver import run_sweep, sweep_dir_for
    from perfusion.sweeps.report import log_report, write_report
    from perfusion.sweeps.spec import load_spec
    from perfusion.sweeps.study import describe

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = load_spec(Path(positionals[0]))
    cfg = to_object(OPTIONS.load(overrides))
    if cfg.count < 0:
        raise PerfusionError(f"config key 'count': expected >= 0, got {cfg.count}")
    if cfg.bayes_sampler not in ("tpe", "gp"):
        raise PerfusionError(f"config key 'bayes_sampler': tpe or gp, not {cfg.bayes_sampler!r}")
    known = run_sweep(spec, cfg)
    if not known:  # count=0 reference=false: only the case was prepared
        print(f"sweep {spec.name}: no trials run, nothing to report")
        return
    command = " ".join(["perfusion", "sweep", *argv])
    paths = write_report(
        spec, known, Path(cfg.results_dir), Path(cfg.best_config_dir), describe(spec, cfg), command
    )
    if cfg.log_wandb:
        log_report(spec, paths, cfg.project, sweep_dir_for(spec, cfg))
    done = sum(1 for t in known if t.state.is_finished())
    print(f"sweep {spec.name}: {done} trials done; " + ", ".join(str(p) for p in paths.values()))
