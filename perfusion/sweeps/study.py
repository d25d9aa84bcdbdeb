"""A sweep as an Optuna study: sampler, pruner and the journal file several processes share.

- grid -> GridSampler over every parameter's values (trial i takes grid point i);
- random -> RandomSampler;
- bayes -> TPESampler or GPSampler (``bayes_sampler`` in configs/sweep.yaml);
- ``early_terminate: hyperband`` -> HyperbandPruner on the metric's reports (W&B counts
  iterations as reports, so a trial's n-th report is step n).

The study lives in ``<sweep dir>/journal.log`` (Optuna's JournalStorage with a file backend,
safe for several processes, or machines on a shared file system). Its name is the sweep's name
and :func:`perfusion.cache.digest` of the YAML's content, so an edited file starts a new study
in the same folder while a rerun of the same file resumes the old one. The reference trial (the
program's defaults) is kept in a study of its own (name + ``-ref``): it has no parameters, so
the samplers never see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna

from perfusion.cache import digest
from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.spec import SweepSpec, grid_values

JOURNAL = "journal.log"


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its stop at the last grid point (which needs
    ``study.optimize``); the driver stops once every grid point has been handed out."""

    def after_trial(self, *args: Any) -> None:
        pass


def study_name(spec: SweepSpec) -> str:
    """``<name>-<digest of the YAML>``: an edited sweep file names another study."""
    return f"{spec.name}-{digest(spec.raw)}"


def grid_size(spec: SweepSpec) -> int:
    """Points of a grid sweep (its trials at most)."""
    return int(np.prod([len(grid_values(d)) for d in spec.distributions.values()]))


def make_sampler(spec: SweepSpec, cfg: SweepRunConfig, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that proposes trial ``number``; seeded by (seed, number), so every process
    draws the same proposal for that trial given the same finished trials. The grid's order
    (shuffled by its seed) must be the same for every trial: its seed is ``seed`` alone."""
    if spec.method == "grid":
        space = {n: grid_values(d) for n, d in spec.distributions.items()}
        return GridSampler(space, seed=cfg.seed)
    seed = int(np.random.SeedSequence([cfg.seed, number]).generate_state(1)[0])
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.bayes_sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials)


def describe(spec: SweepSpec, cfg: SweepRunConfig) -> str:
    """The sampler and pruner that run this sweep, for the results table."""
    pruner = ", HyperbandPruner" if spec.hyperband else ""
    return type(make_sampler(spec, cfg, 0)).__name__ + pruner


def open_study(
    spec: SweepSpec, sweep_dir: Path, cfg: SweepRunConfig, reference: bool = False
) -> optuna.Study:
    """The sweep's study in ``<sweep_dir>/journal.log`` (created or resumed)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL))
    pruner = (
        optuna.pruners.HyperbandPruner(**spec.hyperband)
        if spec.hyperband and not reference
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        storage=optuna.storages.JournalStorage(backend),
        study_name=study_name(spec) + ("-ref" if reference else ""),
        direction=spec.goal,
        sampler=optuna.samplers.RandomSampler() if reference else make_sampler(spec, cfg, 0),
        pruner=pruner,
        load_if_exists=True,
    )
