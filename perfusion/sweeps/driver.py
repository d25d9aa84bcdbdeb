"""The offline sweep driver: W&B's coordinator role played by an Optuna study on disk.

``wandb sweep`` needs W&B's server as coordinator; this driver plays that role with the same
YAML (:mod:`perfusion.sweeps.study`). Each loop, under the sweep folder's lock, it (1) takes
over a running trial whose process died (same host, pid gone) with the configuration it was
given, else (2) asks the reference study for trial ``ref`` (the program's defaults), else (3)
asks the study for a new trial, until the study holds ``count`` trials (at most the YAML's
``run_cap`` or the grid's size) or the metric's ``target`` is reached. Outside the lock it runs
the trial's command like ``wandb agent`` (:mod:`perfusion.sweeps.launch`), reporting every value
of the metric the program appends to its history file to the trial (the pruner may stop it),
then tells the study the result. A trial's record (id, configuration, state, stable metrics) is
in its user attributes; its files in ``<sweep dir>/<study name>/<trial id>/``. Several drivers
may share a folder; rerunning one resumes it.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from perfusion.sweeps.cases import check_case_parameters, ensure_case
from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.launch import expand_command, read_history, run_trial_process, trial_env
from perfusion.sweeps.objective import trial_metrics
from perfusion.sweeps.spec import SweepSpec
from perfusion.sweeps.study import grid_size, make_sampler, open_study, study_name

log = logging.getLogger(__name__)
REFERENCE_ID = "ref"


def sweep_dir_for(spec: SweepSpec, cfg: SweepRunConfig) -> Path:
    """The sweep folder: ``cfg.dir`` or ``runs/sweeps/<name>``."""
    return Path(cfg.dir) if cfg.dir else Path("runs") / "sweeps" / spec.name


def run_sweep(spec: SweepSpec, cfg: SweepRunConfig) -> list[FrozenTrial]:
    """Run trials until the sweep is complete; return the study's trials, ``ref`` first."""
    sweep_dir = sweep_dir_for(spec, cfg)
    studies = (open_study(spec, sweep_dir, cfg, reference=True), open_study(spec, sweep_dir, cfg))
    log.info("sweep %s: %s, study %s in %s", spec.name, spec.method, study_name(spec), sweep_dir)
    with FileLock(str(sweep_dir / "sweep.lock")):
        prepare_case(spec, sweep_dir, cfg)
    while (claimed := next_trial(spec, studies, sweep_dir, cfg)) is not None:
        run_one(spec, *claimed, sweep_dir, cfg)
    return [t for study in studies for t in study.get_trials(deepcopy=False)]


def next_trial(
    spec: SweepSpec,
    studies: tuple[optuna.Study, optuna.Study],
    sweep_dir: Path,
    cfg: SweepRunConfig,
) -> tuple[optuna.Study, optuna.Trial] | None:
    """Claim the next trial to run, or None when the sweep is complete (see module docstring)."""
    reference, main = studies
    with FileLock(str(sweep_dir / "sweep.lock")):
        for study in studies:
            stale = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if _is_stale(t)]
            if stale:
                log.info("taking over trial %s (its process is gone)", stale[0].user_attrs["id"])
                trial = optuna.Trial(study, stale[0]._trial_id)
                trial.set_user_attr("pid", os.getpid())
                return study, trial
        if cfg.reference and not reference.get_trials(deepcopy=False):
            return reference, _claim(reference.ask(), REFERENCE_ID, spec)
        known = main.get_trials(deepcopy=False)
        limit = min(cfg.count, spec.run_cap or cfg.count)
        if spec.method == "grid":
            limit = min(limit, grid_size(spec))
        if len(known) >= limit or _target_reached(spec, known):
            return None
        main.sampler = make_sampler(spec, cfg, len(known))
        trial = main.ask(spec.distributions)
        return main, _claim(trial, f"{trial.number:03d}", spec)


def run_one(
    spec: SweepSpec, study: optuna.Study, trial: optuna.Trial, sweep_dir: Path, cfg: SweepRunConfig
) -> None:
    """Run one claimed trial to its end (or until pruned) and tell the study its result."""
    trial_id, config = trial.user_attrs["id"], trial.user_attrs["config"]
    folder = sweep_dir / study_name(spec) / trial_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.jsonl").unlink(missing_ok=True)  # a taken-over trial reports afresh
    argv = expand_command(spec.command, spec.program, config, folder / "args.json")
    case_dir = fit_case_dir(argv)
    if case_dir is not None:  # one output folder per trial, whatever out= the YAML gives agents
        argv = [w for w in argv if not w.startswith("out=")] + [f"out={folder / 'out'}"]
    env = trial_env(spec.name, trial_id, folder)
    log.info("trial %s: %s", trial_id, config)
    check = _pruning(spec, trial, folder / "history.jsonl") if spec.hyperband else None
    code, stopped, wall_s = run_trial_process(argv, env, folder / "log.txt", check, cfg.poll_s)
    metrics = trial_metrics(folder / "out", case_dir, wall_s, (spec.metric,))
    reported = read_history(folder / "history.jsonl", spec.metric)
    value = metrics.get(spec.metric, reported[-1] if reported else None)
    state = "stopped" if stopped else ("finished" if code == 0 else "failed")
    record = {"state": state, "returncode": code, "metrics": metrics, "command": argv}
    for key, item in {**record, "folder": str(folder)}.items():
        trial.set_user_attr(key, item)
    if stopped:
        study.tell(trial, state=TrialState.PRUNED)  # its value: the last one reported
    elif state == "finished" and value is not None:
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.FAIL)
    log.info("trial %s %s: %s = %s", trial_id, state, spec.metric, value)


def fit_case_dir(argv: list[str]) -> Path | None:
    """The case folder of a ``perfusion fit CASE ...`` command, else None."""
    for i, word in enumerate(argv[:-1]):
        if Path(word).name == "perfusion" and argv[i + 1] == "fit":
            rest = [w for w in argv[i + 2 :] if "=" not in w and not w.startswith("-")]
            return Path(rest[0]) if rest else None
    return None


def prepare_case(spec: SweepSpec, sweep_dir: Path, cfg: SweepRunConfig) -> None:
    """Make the case a ``perfusion fit`` sweep needs, if missing (:mod:`perfusion.sweeps.cases`)."""
    argv = expand_command(spec.command, spec.program, spec.constants, sweep_dir / "args.json")
    case = fit_case_dir(argv)
    if case is None:
        return
    check_case_parameters(case, [*spec.distributions, *spec.constants])
    ensure_case(case, list(cfg.phantom), trial_env(spec.name, "phantom", sweep_dir))


def _claim(trial: optuna.Trial, trial_id: str, spec: SweepSpec) -> optuna.Trial:
    """Record who runs ``trial`` and the configuration passed to the program."""
    config = dict(sorted({**spec.constants, **trial.params}.items()))
    attrs = {"id": trial_id, "config": config, "host": socket.gethostname(), "pid": os.getpid()}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial


def _pruning(spec: SweepSpec, trial: optuna.Trial, history: Path) -> Callable[[], bool]:
    """A check for the launcher: report the metric's new values (step n = n-th report, as W&B
    counts iterations) and ask the pruner whether the trial should stop now."""
    sent = 0

    def check() -> bool:
        nonlocal sent
        values = read_history(history, spec.metric)
        if len(values) == sent:
            return False
        with warnings.catch_warnings():  # steps a dead process already reported are kept
            warnings.simplefilter("ignore")
            for step in range(sent + 1, len(values) + 1):
                trial.report(values[step - 1], step)
        sent = len(values)
        return trial.should_prune()

    return check


def _target_reached(spec: SweepSpec, known: list[FrozenTrial]) -> bool:
    if spec.target is None:
        return False
    sign = -1.0 if spec.goal == "maximize" else 1.0
    done = [t.value for t in known if t.state == TrialState.COMPLETE]
    return any(sign * v <= sign * spec.target for v in done)


def _is_stale(trial: FrozenTrial) -> bool:
    """A running trial claimed on this host by a process that no longer exists."""
    attrs: dict[str, Any] = trial.user_attrs
    if attrs.get("host") != socket.gethostname() or "pid" not in attrs:
        return False  # another machine's process: we cannot tell, leave it alone
    try:
        os.kill(int(attrs["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
