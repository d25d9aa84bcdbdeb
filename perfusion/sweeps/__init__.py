"""W&B sweeps over the fit's hyperparameters, runnable offline with a local driver.

- :mod:`~perfusion.sweeps.spec`: read and validate a standard W&B sweep YAML.
- :mod:`~perfusion.sweeps.proposal`: grid/random built in, bayes through the optional ``sweeps``.
- :mod:`~perfusion.sweeps.hyperband`: W&B's hyperband early-termination rule.
- :mod:`~perfusion.sweeps.trials`: the sweep folder, atomic claims, resume.
- :mod:`~perfusion.sweeps.launch`: run a trial command like ``wandb agent``, offline.
- :mod:`~perfusion.sweeps.driver`: the claim-run-record loop.
- :mod:`~perfusion.sweeps.objective`: the stable summary keys a trial reports.
- :mod:`~perfusion.sweeps.report`: table, best config, speed/accuracy figure.
"""

from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.driver import run_sweep
from perfusion.sweeps.proposal import grid_points, propose, proposer_name, sample_parameter
from perfusion.sweeps.spec import Metric, SweepSpec, load_spec, parse_spec, wandb_schema_errors

__all__ = [
    "Metric",
    "SweepRunConfig",
    "SweepSpec",
    "grid_points",
    "load_spec",
    "parse_spec",
    "propose",
    "proposer_name",
    "run_sweep",
    "sample_parameter",
    "wandb_schema_errors",
]
