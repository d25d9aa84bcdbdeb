"""The box-model physics of resppinn-paper.txt as pure torch functions (tensors in, tensors out).

Eq. (1): ``dC/dt = F [A(t - t_d) - A(t - t_d - MTT)]`` (Bennink et al. 2016), whose solution for
a tissue at rest before the bolus is ``C(t) = F [cumA(t - t_d) - cumA(t - t_d - MTT)]``
(``cumA`` the running integral of the AIF). Eq. (4) is its residual with neural fields, and
Table 3's losses are L1 norms, equally weighted (Eq. (5)).

All functions work in any consistent units; the fit uses :class:`perfusion.domain.Domain` units.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

AifFn = Callable[[Tensor], Tensor]
"""An AIF as a function of time: (N, 1) -> (N, 1)."""


def baseline_before(aif: AifFn, t: Tensor, t_start: float) -> Tensor:
    """``aif(t)`` where ``t >= t_start``, 0 (the subtracted baseline) before the first frame.

    The box model looks back ``t_d + MTT`` (up to ~20 s) before each time; before the scan
    started the arterial enhancement is the pre-contrast baseline, i.e. 0 ΔHU, while a neural
    f_AIF would extrapolate freely there. Args: ``t`` (N, 1); ``t_start`` first frame time.
    """
    return torch.where(t >= t_start, aif(t), torch.zeros_like(t))


def box_inflow(aif: AifFn, t: Tensor, mtt: Tensor, delay: Tensor, t_start: float) -> Tensor:
    """``A(t - t_d) - A(t - t_d - MTT)``, the bracket of Eq. (1); all (N, 1)."""
    shifted = t - delay
    return baseline_before(aif, shifted, t_start) - baseline_before(aif, shifted - mtt, t_start)


def ode_residual(
    dc_dt: Tensor, flow: Tensor, mtt: Tensor, delay: Tensor, aif: AifFn, t: Tensor, t_start: float
) -> Tensor:
    """Eq. (4): ``r = dC/dt - F [A(t - t_d) - A(t - t_d - MTT)]``, all (N, 1)."""
    return dc_dt - flow * box_inflow(aif, t, mtt, delay, t_start)


def box_model_tac(
    aif_cumulative: Callable[[Tensor], Tensor], t: Tensor, flow: Tensor, mtt: Tensor, delay: Tensor
) -> Tensor:
    """Closed-form solution of Eq. (1): ``C(t) = F [cumA(t - t_d) - cumA(t - t_d - MTT)]``.

    ``aif_cumulative(t)`` is the integral of the AIF from the start of time to ``t`` (zero before
    the bolus); shapes broadcast.
    """
    return flow * (aif_cumulative(t - delay) - aif_cumulative(t - delay - mtt))


def l1(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference (Table 3's L1 losses)."""
    return (prediction - target).abs().mean()


def total_loss(tac: Tensor, aif: Tensor, ode: Tensor) -> Tensor:
    """Eq. (5): equal weights."""
    return tac + aif + ode
