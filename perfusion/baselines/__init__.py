"""Classical perfusion baselines: block-circulant SVD and box-model nonlinear regression.

``fit_bsvd(prepared)`` / ``fit_nlr(prepared)`` take a PreparedCase, ``bsvd_maps`` / ``nlr_maps``
plain arrays.
Each returns a dict of float32 maps {cbf, cbv, mtt, tmax, delay} in physical units on the input
grid (CBF ml/100g/min, CBV ml/100g, times s), zero outside the mask.
Names load on first use (perfusion.lazy): the NLR imports torch, the fit's configuration
(which holds BsvdConfig) must not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from perfusion.errors import PerfusionError
from perfusion.lazy import lazy_exports

if TYPE_CHECKING:
    from perfusion.baselines.bsvd import BsvdConfig, bsvd_maps, fit_bsvd
    from perfusion.baselines.nlr import NlrConfig, fit_nlr, nlr_maps

__all__ = ["BsvdConfig", "NlrConfig", "bsvd_maps", "fit_bsvd", "fit_nlr", "nlr_maps"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"bsvd": ("BsvdConfig", "bsvd_maps", "fit_bsvd"), "nlr": ("NlrConfig", "fit_nlr", "nlr_maps")},
)


def voxel_curves(
    method: str,
    tissue_hu: np.ndarray,
    aif_hu: np.ndarray,
    times: np.ndarray,
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A baseline's input: the bool ``mask`` (None: every voxel) and the (V, T) float64 curves of
    its voxels in (..., T) ``tissue_hu``; refused, naming ``method``, when the AIF never rises."""
    if np.trapezoid(np.clip(aif_hu, 0, None), times) <= 0:
        raise PerfusionError(f"{method}: the AIF never rises above baseline")
    shape = tissue_hu.shape[:-1]
    mask = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return mask, np.asarray(tissue_hu)[mask].astype(np.float64)


def voxel_maps(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """A baseline's output: each map's (V,) values on ``mask``'s grid as float32, 0 elsewhere."""
    maps = {}
    for name, v in values.items():
        maps[name] = np.zeros(mask.shape, dtype=np.float32)
        maps[name][mask] = v
    return maps
