"""The box-model physics of the ReSPPINN paper as pure torch functions (tensors in, tensors out).

Eq. (1): ``dC/dt = F [A(t - t_d) - A(t - t_d - MTT)]`` (Bennink et al. 2016), whose solution for
a tissue at rest before the bolus is ``C(t) = F [cumA(t - t_d) - cumA(t - t_d - MTT)]``
(``cumA`` the running integral of the AIF). Eq. (4) is its residual with neural fields, and
Table 3's losses are L1 norms, equally weighted (Eq. (5)).

All functions work in any consistent units; the fit uses :class:`perfusion.domain.Domain` units.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
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


class CumulativeAif:
    """``cumA(t)``: the running integral of an AIF from the first frame (0 before it), and the AIF.

    The one tabulated AIF of Eq. (1): the neural fits (f_AIF or the measured AIF), box-model NLR
    (:class:`perfusion.baselines.nlr.BoxModel`) and the fit-quality map
    (:func:`perfusion.fitting.maps.box_model_fitqc`) all read their AIF and ``cumA`` here.

    The AIF is evaluated on a fine uniform grid over ``[t_start, t_end]`` (``n`` points),
    integrated by the trapezoid rule, and read by linear interpolation, which is differentiable in
    the query time (its slope is the AIF) and in f_AIF's weights. Rebuild it after every
    optimiser step when the AIF is a field (it changes).

    Conventions: before the first frame the AIF is 0 (the subtracted pre-contrast baseline: the
    scan starts before the bolus). After the last frame it is held at its last value, so ``cumA``
    grows linearly there. The AIF after the scan is unknown, but it is not 0: by then the bolus
    has recirculated and the blood holds a slowly falling equilibrium level of contrast, which
    the last frame measures. A drop to 0 would make every voxel with a negative delay (SVD and
    NLR allow t_d < 0) lose inflow it really has (tests/test_physics.py pins both ends).
    """

    def __init__(
        self, aif: AifFn, t_start: float, t_end: float, n: int, device=None, dtype=None
    ) -> None:
        grid = torch.linspace(t_start, t_end, int(n), device=device, dtype=dtype).unsqueeze(1)
        values = aif(grid).squeeze(1)
        # the spacing from the floats: reading it off the grid would sync a GPU every step
        self.t_start, self.step = float(t_start), (float(t_end) - float(t_start)) / (int(n) - 1)
        steps = 0.5 * (values[1:] + values[:-1]) * self.step
        self.cumulative = torch.cat([values.new_zeros(1), torch.cumsum(steps, 0)])
        self.values = values
        self.last = values[-1]

    @classmethod
    def from_samples(
        cls, t: Tensor, values: Tensor, points_per_interval: int = 16, step_s: float | None = None
    ) -> CumulativeAif:
        """``cumA`` of a measured AIF: ``values`` (T,) at frame times ``t`` (T,), read between
        frames by :func:`aif_between_frames` (built once per fit: a measured AIF is fixed).

        The fine grid holds ``points_per_interval`` points per mean frame interval, or, with
        ``step_s``, is ``step_s`` apart (then it may end a fraction of a step past the last
        frame, where the AIF is held). The grid has ``values``' dtype.
        """
        times = t.detach().cpu().double().numpy()
        samples = values.detach().cpu().double().numpy()
        start = float(times[0])
        if step_s is None:
            n, end = points_per_interval * (len(times) - 1) + 1, float(times[-1])
        else:
            n = int(np.ceil((float(times[-1]) - start) / step_s - 1e-9)) + 1
            end = start + step_s * (n - 1)

        def aif(grid: Tensor) -> Tensor:
            fine = aif_between_frames(grid.detach().cpu().double().numpy(), times, samples)
            return torch.as_tensor(fine, dtype=values.dtype, device=t.device)

        return cls(aif, start, end, n, t.device, values.dtype)

    def __call__(self, t: Tensor) -> Tensor:
        return self._read(t, with_aif=False)[0]

    def aif_at(self, t: Tensor) -> Tensor:
        """The tabulated AIF at any times: 0 before the first frame, the last value after."""
        return self._read(t, with_aif=True)[1]

    def both(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(cumA(t), A(t))`` from one table lookup (NLR's Jacobian needs both)."""
        return self._read(t, with_aif=True)

    def _read(self, t: Tensor, with_aif: bool) -> tuple[Tensor, Tensor | None]:
        position = (t - self.t_start) / self.step
        n = self.cumulative.numel()
        index = position.detach().floor().clamp(0, n - 2).long()
        weight = position - index
        beyond, before = position > n - 1, position < 0
        inside = self.cumulative[index] * (1 - weight) + self.cumulative[index + 1] * weight
        past = self.cumulative[-1] + self.last * (position - (n - 1)) * self.step
        inside = torch.where(beyond, past, inside)
        cumulative = torch.where(before, torch.zeros_like(inside), inside)
        if not with_aif:
            return cumulative, None
        aif = self.values[index] * (1 - weight) + self.values[index + 1] * weight
        aif = torch.where(beyond, self.last.expand_as(aif), aif)
        return cumulative, torch.where(before, torch.zeros_like(aif), aif)


def aif_between_frames(query: np.ndarray, t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A sampled AIF between its frames: monotone cubic (PCHIP) interpolation of ``values`` at
    increasing ``t``, 0 (the baseline) before the first frame and the last value after the last.

    PCHIP neither overshoots nor makes new extrema. Between 2 s frames of a sharp bolus, linear
    interpolation misplaces enough of the AIF's area in time that the box model (Eq. (1)) misfits
    a grey-matter curve by ~4 % RMS, and a fit then trades MTT for flow; PCHIP misfits by ~1 %
    (tests/test_physics.py).
    """
    from scipy.interpolate import PchipInterpolator

    q = np.asarray(query, dtype=np.float64)
    inside = PchipInterpolator(t, values, extrapolate=False)(np.clip(q, t[0], t[-1]))
    return np.where(q < t[0], 0.0, np.where(q > t[-1], values[-1], inside))


def l1(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference (Table 3's L1 losses)."""
    return (prediction - target).abs().mean()


def l2(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference (``loss.norm=l2``)."""
    return (prediction - target).square().mean()


def total_loss(tac: Tensor, aif: Tensor, ode: Tensor) -> Tensor:
    """Eq. (5): equal weights."""
    return tac + aif + ode
