"""Fitting perfusion maps to a case: ReSPPINN/SPPINN neural fields and the classical baselines.

Lightning appears only in ``module.py`` (FieldFitModule), ``data.py`` (CaseDataModule) and the
driver ``neural.py``; the maths (``steps.py``, ``sampling.py``, :mod:`perfusion.physics`) is plain
torch so Reptile's inner loop reuses it. The names below load on first use
(:mod:`perfusion.lazy`), so ``perfusion.fitting.config`` is importable without torch.
"""

from typing import TYPE_CHECKING

from perfusion.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ("FitConfig", "LossConfig", "OptimConfig", "SamplingConfig", "resolve_steps"),
        "sampling": ("CaseSamples", "FitBatch"),
        "steps": (
            "FeatureSource",
            "LossTerms",
            "anchor_weight",
            "compute_losses",
            "make_optimizer",
            "optimizer_groups",
            "prefit_aif",
            "train_step",
        ),
    },
)
