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

from perfusion.lazy import lazy_exports

if TYPE_CHECKING:
    from perfusion.baselines.bsvd import BsvdConfig, bsvd_maps, fit_bsvd
    from perfusion.baselines.nlr import NlrConfig, fit_nlr, nlr_maps

__all__ = ["BsvdConfig", "NlrConfig", "bsvd_maps", "fit_bsvd", "fit_nlr", "nlr_maps"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"bsvd": ("BsvdConfig", "bsvd_maps", "fit_bsvd"), "nlr": ("NlrConfig", "fit_nlr", "nlr_maps")},
)
