"""Physical constants and unit conversions, each named once with its source.

Maps use CBF ml/100g/min, CBV ml/100g, MTT/Tmax/delay s. The ODE of Eq. (1) in
The ReSPPINN paper works with a flow ``F`` in 1/s (tissue ΔHU per second per arterial ΔHU).
"""

from __future__ import annotations

import numpy as np

TISSUE_DENSITY_G_PER_ML = 1.04
"""Brain tissue density (Rempp et al., Radiology 1994), as in the foundation issue."""

HEMATOCRIT_FACTOR = 0.73
"""(1 - Hct_large) / (1 - Hct_small) = (1 - 0.45) / (1 - 0.25) ≈ 0.73 (Rempp 1994)."""

SECONDS_PER_MINUTE = 60.0
ML_PER_100G = 100.0


def flow_to_cbf(
    flow_per_s: np.ndarray | float,
    density_g_per_ml: float = TISSUE_DENSITY_G_PER_ML,
    hematocrit_factor: float = HEMATOCRIT_FACTOR,
) -> np.ndarray | float:
    """F [1/s] -> CBF [ml/100g/min] = F * 6000 * k_H / rho."""
    return flow_per_s * SECONDS_PER_MINUTE * ML_PER_100G * hematocrit_factor / density_g_per_ml


def cbf_to_flow(
    cbf_ml_100g_min: np.ndarray | float,
    density_g_per_ml: float = TISSUE_DENSITY_G_PER_ML,
    hematocrit_factor: float = HEMATOCRIT_FACTOR,
) -> np.ndarray | float:
    """CBF [ml/100g/min] -> F [1/s]; inverse of :func:`flow_to_cbf`."""
    return (
        cbf_ml_100g_min * density_g_per_ml / (SECONDS_PER_MINUTE * ML_PER_100G * hematocrit_factor)
    )


def cbv_from_cbf_mtt(cbf_ml_100g_min: np.ndarray | float, mtt_s: np.ndarray | float):
    """CBV [ml/100g] = CBF [ml/100g/min] * MTT [s] / 60 (central volume theorem)."""
    return cbf_ml_100g_min * mtt_s / SECONDS_PER_MINUTE


def tmax_box(delay_s: np.ndarray | float, mtt_s: np.ndarray | float):
    """Tmax [s] = t_d + MTT/2: the centre of the box residue (Eq. (1); SPPINN's truth convention)."""
    return delay_s + 0.5 * mtt_s


TMAX_CONVENTION = "tmax = delay + mtt/2 (box-residue centre, Eq. (1))"
