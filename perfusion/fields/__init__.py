"""Neural fields of the fit: tcnn-compatible hash-grid encoding, SIRENs, and their composition.

The names below load on first use (:mod:`perfusion.lazy`), so ``perfusion.fields.config`` is
importable without torch.
"""

from typing import TYPE_CHECKING

from perfusion.lazy import lazy_exports

if TYPE_CHECKING:
    from perfusion.fields.config import (
        EncodingConfig,
        FieldsConfig,
        SirenConfig,
        sppinn_fields_config,
    )
    from perfusion.fields.encoding import GridPlan, HashGridEncoding, tcnn_status
    from perfusion.fields.grid import GridLevel, grid_levels, hashgrid_config, n_params
    from perfusion.fields.networks import ODE_OUTPUTS, PerfusionFields, build_fields
    from perfusion.fields.siren import SineLayer, Siren

__all__ = [
    "ODE_OUTPUTS",
    "EncodingConfig",
    "FieldsConfig",
    "GridLevel",
    "GridPlan",
    "HashGridEncoding",
    "PerfusionFields",
    "SineLayer",
    "Siren",
    "SirenConfig",
    "build_fields",
    "grid_levels",
    "hashgrid_config",
    "n_params",
    "sppinn_fields_config",
    "tcnn_status",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "config": ("EncodingConfig", "FieldsConfig", "SirenConfig", "sppinn_fields_config"),
        "encoding": ("GridPlan", "HashGridEncoding", "tcnn_status"),
        "grid": ("GridLevel", "grid_levels", "hashgrid_config", "n_params"),
        "networks": ("ODE_OUTPUTS", "PerfusionFields", "build_fields"),
        "siren": ("SineLayer", "Siren"),
    },
)
