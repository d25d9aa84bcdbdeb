"""Classical perfusion baselines: block-circulant SVD and box-model nonlinear regression.

``fit_bsvd(prepared)`` / ``fit_nlr(prepared)`` take a PreparedCase, ``bsvd_maps`` / ``nlr_maps``
plain arrays.
Each returns a dict of float32 maps {cbf, cbv, mtt, tmax, delay} in physical units on the input
grid (CBF ml/100g/min, CBV ml/100g, times s), zero outside the mask.
"""

from perfusion.baselines.bsvd import BsvdConfig, bsvd_maps, fit_bsvd
from perfusion.baselines.nlr import NlrConfig, fit_nlr, nlr_maps

__all__ = ["BsvdConfig", "NlrConfig", "bsvd_maps", "fit_bsvd", "fit_nlr", "nlr_maps"]
