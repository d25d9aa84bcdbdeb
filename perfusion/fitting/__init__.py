"""Fitting perfusion maps to a case: ReSPPINN/SPPINN neural fields and the classical baselines.

Lightning appears only in ``module.py`` (FieldFitModule), ``data.py`` (CaseDataModule) and the
driver ``neural.py``; the maths (``steps.py``, ``sampling.py``, :mod:`perfusion.physics`) is plain
torch so Reptile's inner loop reuses it.
"""

from perfusion.fitting.config import (
    FitConfig,
    LossConfig,
    OptimConfig,
    SamplingConfig,
    resolve_steps,
)
from perfusion.fitting.sampling import CaseSamples, FitBatch
from perfusion.fitting.steps import (
    FeatureSource,
    LossTerms,
    anchor_weight,
    compute_losses,
    make_optimizer,
    optimizer_groups,
    prefit_aif,
    train_step,
)

__all__ = [
    "CaseSamples",
    "FeatureSource",
    "FitBatch",
    "FitConfig",
    "LossConfig",
    "LossTerms",
    "OptimConfig",
    "SamplingConfig",
    "anchor_weight",
    "compute_losses",
    "make_optimizer",
    "optimizer_groups",
    "prefit_aif",
    "resolve_steps",
    "train_step",
]
