"""W&B sweeps over the fit's hyperparameters, run offline by Optuna from the same YAML.

- :mod:`~perfusion.sweeps.spec`: read a standard W&B sweep YAML into Optuna distributions.
- :mod:`~perfusion.sweeps.study`: the Optuna study (sampler, hyperband pruner, journal file).
- :mod:`~perfusion.sweeps.launch`: run a trial command like ``wandb agent``, offline.
- :mod:`~perfusion.sweeps.driver`: the claim-run-tell loop shared by several processes.
- :mod:`~perfusion.sweeps.objective`: the stable summary keys a trial reports.
- :mod:`~perfusion.sweeps.report`: table, best config, speed/accuracy figure.
"""
