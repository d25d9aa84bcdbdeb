"""The offline sweep driver: claim the next trial, run it like ``wandb agent``, record the result.

``wandb sweep`` needs W&B's server as coordinator; this driver plays that role on one machine
with the same YAML. Each loop, under the sweep folder's lock, it (1) takes over a stale trial
(its process died), else (2) claims the reference trial (the program's defaults), else (3)
proposes trial ``i`` (:mod:`perfusion.sweeps.proposal`) until the folder holds ``count``
numbered trials (at most the YAML's ``run_cap``), the grid is exhausted or the metric's
``target`` is reached. It then runs the
trial's command (:mod:`perfusion.sweeps.launch`) outside the lock, watching its reported metric
for hyperband (:mod:`perfusion.sweeps.hyperband`), and writes ``result.json``. Several drivers
may share a folder; rerunning one resumes it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from filelock import FileLock

from perfusion.sweeps import hyperband, trials
from perfusion.sweeps.cases import check_case_parameters, ensure_case
from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.launch import expand_command, run_trial_process, trial_env
from perfusion.sweeps.objective import trial_metrics
from perfusion.sweeps.proposal import propose, proposer_name
from perfusion.sweeps.spec import SweepSpec
from perfusion.sweeps.trials import REFERENCE_ID, Trial

log = logging.getLogger(__name__)


def sweep_dir_for(spec: SweepSpec, cfg: SweepRunConfig) -> Path:
    """The sweep folder: ``cfg.dir`` or ``runs/sweeps/<name>``."""
    return Path(cfg.dir) if cfg.dir else Path("runs") / "sweeps" / spec.name


def reference_config(spec: SweepSpec) -> dict[str, Any]:
    """The reference trial passes only the sweep's constants: the program's own defaults."""
    return {
        n: b["value"] for n, b in sorted(spec.parameters.items()) if b["distribution"] == "constant"
    }


def metric_value(spec: SweepSpec, trial: Trial) -> float | None:
    """A finished or stopped trial's sweep metric, or None."""
    value = (trial.result or {}).get("metric")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def next_trial(spec: SweepSpec, sweep_dir: Path, cfg: SweepRunConfig) -> Trial | None:
    """Claim the next trial to run, or None when the sweep is complete (see module docstring)."""
    with FileLock(str(sweep_dir / "sweep.lock")):
        known = trials.list_trials(sweep_dir)
        stale = [t for t in known if trials.is_stale(t)]
        if stale:
            log.info("taking over trial %s (its process is gone)", stale[0].trial_id)
            return trials.take_over(stale[0])
        if cfg.reference and not (trials.trials_dir(sweep_dir) / REFERENCE_ID).exists():
            return trials.claim(sweep_dir, REFERENCE_ID, reference_config(spec))
        if _target_reached(spec, known):
            return None
        numbered = _numbered_folders(sweep_dir)
        if len(numbered) >= min(cfg.count, spec.run_cap or cfg.count):  # W&B's run_cap also caps
            return None
        index = max(numbered, default=-1) + 1
        finished = [(t.config, metric_value(spec, t)) for t in known if t.result is not None]
        config = propose(spec, index, finished, cfg.seed)
        if config is None:
            return None
        return trials.claim(sweep_dir, f"{index:03d}", config)


def run_sweep(spec: SweepSpec, cfg: SweepRunConfig) -> list[Trial]:
    """Run trials until the sweep is complete; return every trial in the folder."""
    sweep_dir = sweep_dir_for(spec, cfg)
    trials.check_sweep_dir(sweep_dir, spec.raw)
    log.info("sweep %s: %s, folder %s", spec.name, proposer_name(spec), sweep_dir)
    with FileLock(str(sweep_dir / "sweep.lock")):
        prepare_case(spec, sweep_dir, cfg)
    while (trial := next_trial(spec, sweep_dir, cfg)) is not None:
        run_one(spec, trial, sweep_dir, cfg)
    return trials.list_trials(sweep_dir)


def run_one(spec: SweepSpec, trial: Trial, sweep_dir: Path, cfg: SweepRunConfig) -> Trial:
    """Run one claimed trial to its end (or hyperband stop) and record ``result.json``."""
    argv = expand_command(spec.command, spec.program, trial.config, trial.folder / "args.json")
    case_dir = fit_case_dir(argv)
    if case_dir is not None:  # one output folder per trial, whatever out= the YAML gives agents
        argv = [w for w in argv if not w.startswith("out=")] + [f"out={trial.out_dir}"]
    env = trial_env(spec.name, trial.trial_id, trial.folder)
    stop = _hyperband_check(spec, trial, sweep_dir) if spec.early_terminate else None
    log.info("trial %s: %s", trial.trial_id, trial.config)
    code, stopped, wall_s = run_trial_process(argv, env, trial.folder / "log.txt", stop, cfg.poll_s)
    keep = (spec.metric.name,) if spec.metric else ()
    metrics = trial_metrics(trial.out_dir, case_dir, wall_s, keep)
    value = _final_metric(spec, trial, metrics)
    state = "stopped" if stopped else ("finished" if code == 0 else "failed")
    result = {
        "id": trial.trial_id,
        "state": state,
        "returncode": code,
        "config": trial.config,
        "metric_name": spec.metric.name if spec.metric else None,
        "metric": value,
        "metrics": metrics,
        "driver_wall_s": wall_s,
        "command": argv,
    }
    log.info("trial %s %s: %s = %s", trial.trial_id, state, result["metric_name"], value)
    return trials.finish(trial, result)


def fit_case_dir(argv: list[str]) -> Path | None:
    """The case folder of a ``perfusion fit CASE ...`` command, else None."""
    for i, word in enumerate(argv[:-1]):
        if Path(word).name == "perfusion" and argv[i + 1] == "fit":
            rest = [w for w in argv[i + 2 :] if "=" not in w and not w.startswith("-")]
            return Path(rest[0]) if rest else None
    return None


def prepare_case(spec: SweepSpec, sweep_dir: Path, cfg: SweepRunConfig) -> None:
    """Make the case a ``perfusion fit`` sweep needs, if missing (:mod:`perfusion.sweeps.cases`)."""
    argv = expand_command(
        spec.command, spec.program, reference_config(spec), sweep_dir / "args.json"
    )
    case = fit_case_dir(argv)
    if case is None:
        return
    check_case_parameters(case, list(spec.parameters))
    ensure_case(case, list(cfg.phantom), trial_env(spec.name, "phantom", sweep_dir))


def _final_metric(spec: SweepSpec, trial: Trial, metrics: dict[str, float]) -> float | None:
    """The summary's metric, else the last reported value (W&B's summary of a killed run)."""
    if spec.metric is None:
        return None
    if spec.metric.name in metrics:
        return metrics[spec.metric.name]
    history = trials.read_history(trial.history_path, spec.metric.name)
    return history[-1] if history else None


def _hyperband_check(spec: SweepSpec, trial: Trial, sweep_dir: Path):  # noqa: ANN202
    """A closure for the launcher: should this running trial stop now?"""
    assert spec.metric is not None and spec.early_terminate is not None

    def check() -> bool:
        name = spec.metric.name
        mine = trials.read_history(trial.history_path, name)
        others = [trials.read_history(t.history_path, name) for t in trials.list_trials(sweep_dir)]
        return hyperband.should_stop(mine, others, spec.early_terminate, spec.metric.goal)

    return check


def _target_reached(spec: SweepSpec, known: list[Trial]) -> bool:
    if spec.metric is None or spec.metric.target is None:
        return False
    target = spec.metric.target
    values = [metric_value(spec, t) for t in known]
    return any(v is not None and not spec.metric.better(target, v) for v in values)


def _numbered_folders(sweep_dir: Path) -> list[int]:
    root = trials.trials_dir(sweep_dir)
    return [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
