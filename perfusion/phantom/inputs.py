"""True arterial and venous input functions (ΔHU) of a phantom patient, on a fine time grid.

Parametric (default): the AIF is a gamma variate (Thompson 1964) plus a recirculation gamma
variate and a slowly rising equilibrium level; the VOF is the AIF passed through a gamma-shaped
transit-time kernel (mean ~6 s), so it is later, lower and broader with the same area, as tracer
conservation demands. Real: a case of a TSV with columns ``case, t_s, aif_hu, vof_hu`` (e.g.
RAPID's ISLES 2018 curves): the file's AIF is itself partial-volume diluted, so the true AIF is
that curve scaled to the VOF's first-pass area by :func:`perfusion.aif.correct_partial_volume`,
the correction preprocessing applies (one rule for the truth and the measurement).
Every curve is 0 before its first sample and before t = 0, so Eq. (1) can look back before the
first frame (t - t_d - MTT reaches -35 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammainc

from perfusion.aif import correct_partial_volume
from perfusion.errors import PerfusionError
from perfusion.gamma_variate import GammaVariate

FINE_STEP_S = 0.02
"""Step (s) of the fine grid on which curves are defined and integrated."""
LOOKBACK_S = 60.0
"""The fine grid starts this long before the first frame (curves are 0 there)."""


@dataclass
class InputFunctions:
    """Curves on the fine grid ``time_s`` (from -LOOKBACK_S, step FINE_STEP_S) and the frames.

    Attributes:
        time_s: float64 (M,) fine times (s).
        aif_hu: float64 (M,) true (partial-volume-free) arterial enhancement (ΔHU).
        vof_hu: float64 (M,) true venous enhancement (ΔHU).
        frame_times_s: float64 (T,) acquisition times (s).
        meta: how the curves were made (source, case, parameters, scale).
    """

    time_s: np.ndarray
    aif_hu: np.ndarray
    vof_hu: np.ndarray
    frame_times_s: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def aif_at(self, time_s: np.ndarray) -> np.ndarray:
        return np.interp(time_s, self.time_s, self.aif_hu)

    def vof_at(self, time_s: np.ndarray) -> np.ndarray:
        return np.interp(time_s, self.time_s, self.vof_hu)


def fine_grid(last_s: float) -> np.ndarray:
    """Fine times from -LOOKBACK_S to ``last_s`` (inclusive) in steps of FINE_STEP_S."""
    n = int(np.ceil((last_s + LOOKBACK_S) / FINE_STEP_S)) + 1
    return -LOOKBACK_S + FINE_STEP_S * np.arange(n)


def frame_times(n_frames: int, interval_s: float, truncate_s: float = 0.0) -> np.ndarray:
    """Frame times k * interval (s), cut after ``truncate_s`` when that is > 0."""
    times = interval_s * np.arange(n_frames, dtype=np.float64)
    return times[times <= truncate_s + 1e-9] if truncate_s > 0 else times


def parametric_inputs(rng: np.random.Generator, times_s: np.ndarray, cfg) -> InputFunctions:
    """Gamma-variate AIF with recirculation and equilibrium; VOF by a gamma transit kernel."""
    first = GammaVariate(
        t0_s=float(rng.uniform(*cfg.aif_arrival_s)), alpha=float(rng.uniform(2.5, 4.0)),
        beta_s=float(rng.uniform(1.1, 1.8)), peak_hu=float(rng.uniform(*cfg.aif_peak_hu)),
    )  # fmt: skip
    recirc = GammaVariate(
        t0_s=first.time_to_peak_s + float(rng.uniform(6.0, 10.0)), alpha=3.0,
        beta_s=float(rng.uniform(2.0, 3.0)), peak_hu=first.peak_hu * float(rng.uniform(0.08, 0.15)),
    )  # fmt: skip
    plateau_hu = first.peak_hu * float(rng.uniform(0.03, 0.06))
    grid = fine_grid(float(times_s[-1]))
    rise = gammainc(3.0, np.clip((grid - first.t0_s - 4.0) / 4.0, 0.0, None))
    aif = first(grid) + recirc(grid) + plateau_hu * rise
    transit_mean = float(rng.uniform(5.0, 7.5))
    vof = _transit(aif, transit_mean, shape=4.0)
    meta = {
        "source": "parametric", "first_pass": first.__dict__, "recirculation": recirc.__dict__,
        "plateau_hu": plateau_hu, "vof_transit_mean_s": transit_mean, "vof_transit_shape": 4.0,
    }  # fmt: skip
    return InputFunctions(grid, aif, vof, times_s, meta)


def _transit(curve: np.ndarray, mean_s: float, shape: float) -> np.ndarray:
    """Convolve a fine-grid curve with a unit-area gamma density (mean ``mean_s``)."""
    tau = np.arange(0.0, 6.0 * mean_s, FINE_STEP_S)
    scale = mean_s / shape
    kernel = (tau / scale) ** (shape - 1.0) * np.exp(-tau / scale)
    kernel /= kernel.sum()
    return fftconvolve(curve, kernel)[: curve.size]


def load_curve_table(path: str | Path) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read a curve TSV (case, t_s, aif_hu, vof_hu) into {case: (t_s, aif_hu, vof_hu)}."""
    path = Path(path)
    if not path.is_file():
        raise PerfusionError("AIF file not found (use aif_source=parametric)", path)
    try:
        table = np.genfromtxt(path, delimiter="\t", names=True, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise PerfusionError(f"unreadable TSV ({exc})", path) from None
    names = table.dtype.names or ()
    for column in ("case", "t_s", "aif_hu", "vof_hu"):
        if column not in names:
            raise PerfusionError(f"missing column '{column}' (have {', '.join(names)})", path)
    out = {}
    for case in np.unique(table["case"]).astype(int):
        rows = table[table["case"] == case]
        out[int(case)] = (rows["t_s"], rows["aif_hu"], rows["vof_hu"])
    return out


def real_inputs(
    rng: np.random.Generator, path: str | Path, case: int, interval_s: float, n_frames: int,
    truncate_s: float = 0.0,
) -> InputFunctions:  # fmt: skip
    """True AIF/VOF from one case of a curve TSV (``case`` 0: drawn with ``rng``).

    The acquisition ends with the file's curves (ISLES 2018: 43-49 s), so there are at most
    ``n_frames`` frames within the file's time span.
    """
    table = load_curve_table(path)
    if case == 0:
        case = int(rng.choice(sorted(table)))
    if case not in table:
        raise PerfusionError(f"no case {case} in the AIF file", path)
    t, aif, vof = table[case]
    last = min(float(t[-1]), interval_s * (n_frames - 1))
    times_s = frame_times(int(np.floor(last / interval_s + 1e-9)) + 1, interval_s, truncate_s)
    aif, vof = aif - aif[0], vof - vof[0]  # ΔHU, as preprocessing measures them
    _, scale = correct_partial_volume(t, aif, vof)  # the preprocessing's own factor (>= 1)
    grid = fine_grid(float(times_s[-1]))
    true_aif = scale * np.interp(grid, t, aif, left=0.0)
    true_vof = np.interp(grid, t, vof, left=0.0)
    meta = {
        "source": str(path),
        "case": case,
        "vof_scale": scale,
        "file_aif_peak_hu": float(aif.max()),
    }
    return InputFunctions(grid, true_aif, true_vof, times_s, meta)
