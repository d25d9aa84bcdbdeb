"""Delay-insensitive block-circulant SVD deconvolution (Wu et al., MRM 2003;50:164).

The tissue curve is the AIF convolved with the flow-scaled residue, ``c = A (F R)``. Padding both
curves with zeros to ``L = 2N`` and making ``A`` circulant lets a tissue curve that lags the AIF
(or leads it) wrap around instead of being cut off, so CBF does not depend on the delay. A
circulant matrix is diagonalised by the DFT: its singular values are the moduli ``|â_k|`` of the
AIF's DFT and its singular vectors are Fourier modes, so truncating singular values below
``P * max |â_k|`` is the same as zeroing those frequencies; we compute it that way, for all voxels
at once. The matrix uses Wu's weighting of the AIF, ``dt * (a_{k-1} + 4 a_k + a_{k+1}) / 6``,
which treats the curves as linear between samples.

Regularisation: a fixed threshold ``P``, or oSVD (Wu 2003): per voxel the smallest threshold of
``thresholds`` whose oscillation index ``OI = sum_k |f_k - 2 f_{k-1} + f_{k-2}| / (L max f)`` is at
most ``oi_target`` (0.095 for CT, field.md section 5), else the largest threshold. Where the OI crosses the target
between two thresholds, the residue is interpolated between theirs at the crossing (linear in
OI) instead of taking the larger threshold's: Wu's rule flips voxels from one threshold to the
next when the data change by a fraction of a HU (rounding a scan to whole HU); interpolated,
the residue changes continuously with the data. For the same reason the cut can have a smooth
edge (``BsvdConfig.taper``): a hard cut flips a frequency in or out when the AIF changes by a
fraction of a HU.

Maps (field.md section 5; units as in perfusion/units.py):
- CBF = max of the residue ``F R`` (1/s) converted by :func:`perfusion.units.flow_to_cbf`.
- CBV = area ratio ``int c / int a`` converted the same way (``F * MTT`` is that ratio), divided
  by 60, so that CBV = CBF * MTT / 60 holds with the same density and hematocrit factor.
- MTT = 60 * CBV / CBF.
- Tmax = time of the residue maximum (s, relative to the AIF; parabolic sub-frame refinement);
  it wraps to negative values when the tissue leads the AIF.
- delay = Tmax - MTT / 2: the box-model convention (:func:`perfusion.units.tmax_box`), which makes
  ``tmax = delay + mtt/2`` hold for every method; for a box residue the regularised residue peaks
  at its centre. The delay/MTT split is not well determined by SVD; Tmax is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perfusion.baselines import voxel_curves, voxel_maps
from perfusion.prepared import PreparedCase
from perfusion.units import flow_to_cbf

OI_TARGET_CT = 0.095
"""Oscillation-index target for CT (field.md section 5; Wu 2003 used 0.035 for MRI)."""

TMAX_CONVENTION = "tmax = argmax of the bSVD residue (parabolic refinement); delay = tmax - mtt/2"


@dataclass
class BsvdConfig:
    """Block-circulant SVD options."""

    threshold: float | None = None
    """Fixed truncation threshold as a fraction of the largest singular value; None = oSVD."""
    oi_target: float = OI_TARGET_CT
    """oSVD oscillation-index target."""
    thresholds: list[float] = field(
        default_factory=lambda: [round(0.05 * k, 2) for k in range(1, 11)]
    )
    """oSVD thresholds tried in increasing order (Wu 2003: 0.05 ... 0.5)."""
    dt_s: float | None = None
    """Uniform resampling step (s); None = the smallest frame interval."""
    chunk: int = 16384
    """Voxels deconvolved at once (memory bound: chunk * 2N complex values)."""
    taper: float = 0.0
    """Half-width of the cut's edge, as a fraction of the threshold: a frequency's weight rises
    from 0 to 1 (raised cosine) as its singular value goes from ``(1 - taper) P`` to
    ``(1 + taper) P`` times the largest. 0 (this default, the behaviour before the key) is
    Wu's hard cut, which flips a frequency in or out when the AIF changes by a fraction of a
    HU; configs/fit.yaml's 0.1 moves it gradually."""


def resample_uniform(
    frame_times_s: np.ndarray, curves: np.ndarray, dt_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of (..., T) curves onto a uniform grid from the first frame.

    Returns:
        (times (N,) s, curves (..., N)), with N the number of steps ``dt_s`` that fit.
    """
    t = np.asarray(frame_times_s, dtype=np.float64)
    step = float(np.min(np.diff(t))) if dt_s is None else float(dt_s)
    grid = t[0] + step * np.arange(int(np.floor((t[-1] - t[0]) / step + 1e-9)) + 1)
    hi = np.clip(np.searchsorted(t, grid, side="right"), 1, t.size - 1)
    w = (grid - t[hi - 1]) / (t[hi] - t[hi - 1])
    curves = np.asarray(curves)
    return grid, curves[..., hi - 1] * (1.0 - w) + curves[..., hi] * w


def circulant_spectrum(aif_hu: np.ndarray, dt_s: float) -> np.ndarray:
    """DFT (L = 2N,) of the first column of Wu's zero-padded circulant AIF matrix."""
    a = np.concatenate([np.asarray(aif_hu, dtype=np.float64), np.zeros(len(aif_hu))])
    weighted = dt_s * (np.roll(a, 1) + 4.0 * a + np.roll(a, -1)) / 6.0
    return np.fft.fft(weighted)


def oscillation_index(residue: np.ndarray) -> np.ndarray:
    """Wu's OI of (..., L) residues: sum |second difference| / (L * max); 0 for a zero residue."""
    second = np.abs(residue[..., 2:] - 2.0 * residue[..., 1:-1] + residue[..., :-2]).sum(-1)
    peak = residue.max(-1)
    return np.where(peak > 0, second / (residue.shape[-1] * np.maximum(peak, 1e-12)), 0.0)


def cut_weights(relative: np.ndarray, threshold: float, taper: float) -> np.ndarray:
    """Weights in [0, 1] of frequencies whose singular values are ``relative`` to the largest:
    1 above ``threshold``, 0 below it (``taper`` 0), or a raised-cosine edge of half-width
    ``taper * threshold`` around it, so that a change of the AIF moves a frequency near the
    cut in or out gradually (see :class:`BsvdConfig`)."""
    if taper <= 0:
        return (relative >= threshold).astype(np.float64)
    low, high = threshold * (1.0 - taper), threshold * (1.0 + taper)
    x = np.clip((relative - low) / (high - low), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def deconvolve(tissue: np.ndarray, spectrum: np.ndarray, cfg: BsvdConfig) -> np.ndarray:
    """Residues (V, L) = F R(t) in 1/s of tissue curves (V, N) (uniform grid, ΔHU)."""
    n_pad = spectrum.size
    tissue_f = np.fft.fft(tissue, n=n_pad, axis=-1)
    modulus = np.abs(spectrum)
    safe = np.where(modulus > 0, spectrum, 1.0)

    def solve(p: float) -> np.ndarray:
        keep = cut_weights(modulus / modulus.max(), p, cfg.taper)
        return np.fft.ifft(tissue_f * (keep / safe), axis=-1).real

    if cfg.threshold is not None:
        return solve(cfg.threshold)
    out = solve(cfg.thresholds[-1])
    done = np.zeros(len(tissue), dtype=bool)
    previous, previous_oi = None, None
    for p in cfg.thresholds:  # the first threshold that meets the target, interpolated
        residue = solve(p)
        oi = oscillation_index(residue)
        meets = ~done & (oi <= cfg.oi_target)
        if previous is None:
            out[meets] = residue[meets]
        else:
            over = previous_oi[meets] - cfg.oi_target  # > 0: the previous threshold missed
            alpha = np.clip(over / np.maximum(previous_oi[meets] - oi[meets], 1e-12), 0.0, 1.0)
            out[meets] = previous[meets] + alpha[:, None] * (residue[meets] - previous[meets])
        done |= meets
        if done.all():
            break
        previous, previous_oi = residue, oi
    return out


def _peak(residue: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximum (V,) and its time (V,) s with a parabola through the peak and its neighbours."""
    n_pad = residue.shape[-1]
    i = np.argmax(residue, axis=-1)
    rows = np.arange(len(residue))
    left, mid, right = residue[rows, i - 1], residue[rows, i], residue[rows, (i + 1) % n_pad]
    curv = left - 2.0 * mid + right
    offset = np.where(curv < 0, 0.5 * (left - right) / np.where(curv < 0, curv, -1.0), 0.0)
    k = i + np.clip(offset, -0.5, 0.5)
    k = np.where(k >= n_pad / 2, k - n_pad, k)  # wrapped peaks: tissue ahead of the AIF
    return mid, k * dt_s


def bsvd_maps(
    tissue_hu: np.ndarray,
    aif_hu: np.ndarray,
    frame_times_s: np.ndarray,
    mask: np.ndarray | None = None,
    cfg: BsvdConfig | None = None,
) -> dict[str, np.ndarray]:
    """bSVD perfusion maps of (..., T) tissue curves (ΔHU) with the AIF (T,) (ΔHU).

    Args:
        tissue_hu: (X, Y, Z, T) or (V, T) enhancement above baseline.
        aif_hu: (T,) partial-volume-corrected arterial enhancement.
        frame_times_s: (T,) increasing times in s (non-uniform: resampled, see ``cfg.dt_s``).
        mask: bool (...) voxels to compute; the others are 0 in every map.

    Returns:
        {"cbf" ml/100g/min, "cbv" ml/100g, "mtt" s, "tmax" s, "delay" s}: float32 (...) arrays.
    """
    cfg = cfg or BsvdConfig()
    t = np.asarray(frame_times_s, dtype=np.float64)
    mask, curves = voxel_curves("bSVD", tissue_hu, aif_hu, t, mask)
    grid, aif_u = resample_uniform(t, aif_hu, cfg.dt_s)
    dt = float(grid[1] - grid[0])
    spectrum = circulant_spectrum(aif_u, dt)
    flow, tmax = np.zeros(len(curves)), np.zeros(len(curves))
    for s in range(0, len(curves), cfg.chunk):
        _, chunk_u = resample_uniform(t, curves[s : s + cfg.chunk], cfg.dt_s)
        flow[s : s + cfg.chunk], tmax[s : s + cfg.chunk] = _peak(
            deconvolve(chunk_u, spectrum, cfg), dt
        )
    ratio = np.trapezoid(curves, t, axis=-1) / np.trapezoid(aif_hu, t)
    cbf = flow_to_cbf(np.clip(flow, 0.0, None))
    cbv = flow_to_cbf(np.clip(ratio, 0.0, None)) / 60.0
    mtt = np.where(cbf > 0, 60.0 * cbv / np.where(cbf > 0, cbf, 1.0), 0.0)
    values = {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": tmax, "delay": tmax - 0.5 * mtt}
    return voxel_maps(values, mask)


def fit_bsvd(case: PreparedCase, cfg: BsvdConfig | None = None) -> dict[str, np.ndarray]:
    """bSVD maps of a prepared case (scan grid, 0 outside the brain); see :func:`bsvd_maps`."""
    return bsvd_maps(case.tissue_hu, case.aif_hu, case.frame_times_s, case.brain, cfg)
