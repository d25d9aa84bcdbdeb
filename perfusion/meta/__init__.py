"""Reptile meta-learning of field initialisations (the ReSPPINN paper's Algorithm 1, Table 4).

The names below load on first use (:mod:`perfusion.lazy`), so ``perfusion.meta.config`` is
importable without torch or Lightning.
"""

from typing import TYPE_CHECKING

from perfusion.lazy import lazy_exports

if TYPE_CHECKING:
    from perfusion.meta.checkpoint import export_init, weights_digest
    from perfusion.meta.config import CohortConfig, MetaConfig, OuterConfig
    from perfusion.meta.reptile import (
        MetaReptileModule,
        adapt,
        outer_optimizer,
        reptile_gradients,
    )

__all__ = [
    "CohortConfig",
    "MetaConfig",
    "MetaReptileModule",
    "OuterConfig",
    "adapt",
    "export_init",
    "outer_optimizer",
    "reptile_gradients",
    "weights_digest",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "checkpoint": ("export_init", "weights_digest"),
        "config": ("CohortConfig", "MetaConfig", "OuterConfig"),
        "reptile": ("MetaReptileModule", "adapt", "outer_optimizer", "reptile_gradients"),
    },
)
