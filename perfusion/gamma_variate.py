"""Gamma-variate bolus curves (Thompson 1964; Madsen 1992) and their least-squares fit.

``c(t) = peak * ((t - t0) / (alpha * beta))**alpha * exp(alpha - (t - t0) / beta)`` for t > t0,
zero before: a curve that rises at ``t0``, peaks at ``t0 + alpha * beta`` with value ``peak``.
Its area is analytic: ``peak * beta * Gamma(alpha + 1) * (e / alpha)**alpha``, and its running
integral is the regularised lower incomplete gamma function, which the tests use as closed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import gammainc, gammaln


@dataclass(frozen=True)
class GammaVariate:
    """Parameters: ``t0_s`` arrival (s), ``alpha`` shape (-), ``beta_s`` scale (s), ``peak_hu``."""

    t0_s: float
    alpha: float
    beta_s: float
    peak_hu: float

    @property
    def time_to_peak_s(self) -> float:
        return self.t0_s + self.alpha * self.beta_s

    def __call__(self, time_s: np.ndarray) -> np.ndarray:
        return gamma_variate(np.asarray(time_s, dtype=np.float64), self)

    def area(self) -> float:
        """Integral over all t, in HU·s."""
        return float(self.peak_hu * self.beta_s * np.exp(_log_norm(self.alpha)))

    def cumulative(self, time_s: np.ndarray) -> np.ndarray:
        """Integral from -inf to ``time_s`` (HU·s), analytic."""
        x = np.clip((np.asarray(time_s, dtype=np.float64) - self.t0_s) / self.beta_s, 0.0, None)
        return self.area() * gammainc(self.alpha + 1.0, x)


def _log_norm(alpha: float) -> float:
    # area / (peak * beta) = Gamma(alpha + 1) * (e / alpha)**alpha
    return float(gammaln(alpha + 1.0) + alpha * (1.0 - np.log(alpha)))


def gamma_variate(time_s: np.ndarray, p: GammaVariate) -> np.ndarray:
    """Evaluate the gamma variate ``p`` at ``time_s`` (s); returns HU, zero before arrival."""
    x = np.clip((time_s - p.t0_s) / (p.alpha * p.beta_s), 0.0, None)
    with np.errstate(divide="ignore"):
        log_c = p.alpha * (np.log(x) + 1.0 - x)
    return np.where(x > 0, p.peak_hu * np.exp(log_c), 0.0)


def fit_gamma_variate(
    time_s: np.ndarray, curve_hu: np.ndarray, first_pass_only: bool = True
) -> GammaVariate:
    """Least-squares gamma-variate fit to a baseline-subtracted bolus curve.

    With ``first_pass_only`` the fit uses samples from the start up to where the curve falls
    below 40 % of its peak after the peak, so recirculation and truncation do not bias it.

    Args:
        time_s: (T,) sample times in s.
        curve_hu: (T,) enhancement above baseline in HU.
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    curve = np.asarray(curve_hu, dtype=np.float64)
    i_peak = int(np.argmax(curve))
    peak, t_peak = float(curve[i_peak]), float(time_s[i_peak])
    end = len(curve)
    if first_pass_only:
        after = np.nonzero(curve[i_peak:] < 0.4 * peak)[0]
        end = i_peak + int(after[0]) + 1 if after.size else len(curve)
    rising = np.nonzero(curve[: i_peak + 1] < 0.1 * peak)[0]
    t0_guess = float(time_s[rising[-1]]) if rising.size else float(time_s[0]) - 1.0
    rise = max(t_peak - t0_guess, 1.0)
    start = np.array([t0_guess, 3.0, rise / 3.0, peak])
    lower = np.array([time_s[0] - 30.0, 1.0, 0.1, 0.1 * peak])
    upper = np.array([t_peak, 20.0, 30.0, 3.0 * peak])
    start = np.clip(start, lower + 1e-6, upper - 1e-6)

    def residual(theta: np.ndarray) -> np.ndarray:
        model = gamma_variate(time_s[:end], GammaVariate(*theta))
        return model - curve[:end]

    result = least_squares(residual, start, bounds=(lower, upper), method="trf")
    return GammaVariate(*map(float, result.x))
