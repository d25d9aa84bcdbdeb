"""Reptile meta-learning of field initialisations (resppinn-paper.txt Algorithm 1, Table 4)."""

from perfusion.meta.checkpoint import export_init, weights_digest
from perfusion.meta.config import CohortConfig, MetaConfig, OuterConfig
from perfusion.meta.reptile import MetaReptileModule, adapt, outer_optimizer, reptile_gradients

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
