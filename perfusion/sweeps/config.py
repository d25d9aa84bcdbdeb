"""Configuration of the offline sweep driver (``configs/sweep.yaml``; ``perfusion sweep FILE key=value``).

The sweep itself (parameters, method, metric, command) is the W&B YAML given as the positional
argument; these are the driver's own settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SweepRunConfig:
    """How the local driver runs a W&B sweep YAML."""

    count: int = 5
    """Trials the sweep's study should hold in total (finished, pruned, failed or running,
    across every driver sharing the folder); a grid stops earlier when exhausted. A rerun with
    the same folder and YAML resumes: finished trials are kept, the rest are run."""
    dir: str | None = None
    """Sweep folder (Optuna journal, trial folders); null = ``runs/sweeps/<sweep name>``."""
    seed: int = 0
    """Seed of the samplers; trial i is proposed by a sampler seeded with (seed, i)."""
    bayes_sampler: str = "tpe"
    """Optuna sampler for ``method: bayes``: ``tpe`` (TPESampler) or ``gp`` (GPSampler)."""
    startup_trials: int = 4
    """Random trials before ``method: bayes`` starts modelling the metric."""
    reference: bool = True
    """Also run the program's defaults for the swept keys (trial ``ref``; for the fit this is
    the paper's Table 2 configuration), highlighted in the figure."""
    poll_s: float = 1.0
    """Seconds between checks of a running trial's reported metric (hyperband pruning)."""
    results_dir: str = "bench/results"
    """Where the folder ``sweep-<name>/`` (README.md, trials.json, speed_accuracy.png) is written."""
    best_config_dir: str = "configs/fit"
    """Where the best configuration is written as ``best-<name>.yaml`` (``config=`` accepts it)."""
    phantom: list[str] = field(
        default_factory=lambda: ["n=1", "seed=0", "noise_hu=10", "shape=[64,64,16]", "n_frames=40"]
    )
    """``perfusion phantom`` overrides used when the trial command's case folder
    (``.../patient-NNN``) does not exist yet: the driver writes that phantom first (and, for a
    ``.../prepared/patient-NNN`` path, preprocesses it once; see perfusion/sweeps/cases.py), so
    a fresh clone can run the shipped sweeps. Empty list: never (a missing case is an error)."""
    log_wandb: bool = True
    """Log the results table and figure to a W&B run (offline unless WANDB_MODE says otherwise)."""
    project: str = "perfusion"
    """W&B project of that run."""
