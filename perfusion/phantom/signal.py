"""Tissue enhancement curves from the true AIF: Eq. (1) and two other residue shapes.

C(t) = F * integral_0^inf AIF(t - t_d - tau) R(tau) dtau with F in 1/s (``units.cbf_to_flow``):

- ``box``: R = 1 for tau < MTT: C = F [A(t - t_d) - A(t - t_d - MTT)], A the running integral
  of the AIF (Eq. (1), Bennink 2016: :func:`perfusion.physics.box_model_tac`). The true AIF is
  known on the whole fine grid (:mod:`perfusion.phantom.inputs`), so no convention after the
  last frame is needed beyond the grid's end, where A is held (reached only by a negative delay).
- ``linear``: R = 1 - tau / (2 MTT) for tau < 2 MTT (area MTT): by parts,
  C = F [A(s) - (B(s) - B(s - 2 MTT)) / (2 MTT)] with s = t - t_d and B the running integral of A.
- ``exponential``: R = exp(-tau / MTT): a first-order recursion on the fine grid per MTT of a
  log-spaced table, interpolated in log MTT (the only shape without a closed-form lookup).

True Tmax (documented in ``truth/meta.json``): t_d + the residue's centroid
integral(tau R) / integral(R): MTT/2 for the box (= ``units.tmax_box``, Eq. (1) convention),
2 MTT/3 for the linear and MTT for the exponential residue. The argmax of R(t - t_d) would be t_d
for all three (flat box), so it cannot serve as a definition; SVD's Tmax sits near the centroid
for boxes and ~2 s after t_d for exponential residues.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from perfusion.errors import PerfusionError
from perfusion.phantom.inputs import InputFunctions
from perfusion.physics import box_model_tac

RESIDUES = ("box", "linear", "exponential")
CENTROID_FRACTION = {"box": 0.5, "linear": 2.0 / 3.0, "exponential": 1.0}
"""Residue centroid / MTT; true Tmax = delay + fraction * MTT."""
TMAX_CONVENTIONS = {
    "box": "tmax = delay + mtt/2 (box-residue centre, Eq. (1))",
    "linear": "tmax = delay + 2*mtt/3 (centroid of R = 1 - tau/(2 mtt))",
    "exponential": "tmax = delay + mtt (centroid of R = exp(-tau/mtt))",
}
_CHUNK = 40_000


def true_tmax(residue: str, delay_s: np.ndarray, mtt_s: np.ndarray) -> np.ndarray:
    """True Tmax (s) = delay + centroid of the residue (see the module docstring)."""
    check_residue(residue)
    return delay_s + CENTROID_FRACTION[residue] * mtt_s


def check_residue(residue: str) -> None:
    if residue not in RESIDUES:
        raise PerfusionError(f"residue '{residue}' unknown (choose {', '.join(RESIDUES)})")


def running_integral(values: np.ndarray, step: float) -> np.ndarray:
    """Trapezoid running integral on a uniform grid, 0 at the first sample."""
    out = np.zeros_like(values)
    np.cumsum(0.5 * step * (values[1:] + values[:-1]), out=out[1:])
    return out


def _lookup(table: np.ndarray, t0: float, step: float, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of a uniform-grid table (start ``t0``, ``step``), clamped at its ends."""
    pos = (times - np.float32(t0)) * np.float32(1.0 / step)
    np.clip(pos, 0.0, table.size - 1.001, out=pos)
    i = pos.astype(np.int64)
    w = pos - i
    low = table[i]
    return low + w * (table[i + 1] - low)


def tissue_curves(
    inputs: InputFunctions, flow_per_s: np.ndarray, mtt_s: np.ndarray, delay_s: np.ndarray,
    residue: str = "box",
) -> np.ndarray:  # fmt: skip
    """Enhancement (N, T) float32 ΔHU of N voxels with flow (1/s), MTT (s) and delay (s) (N,)."""
    check_residue(residue)
    out = np.empty((flow_per_s.size, inputs.frame_times_s.size), dtype=np.float32)
    step, t0 = float(inputs.time_s[1] - inputs.time_s[0]), float(inputs.time_s[0])
    cum_a = running_integral(inputs.aif_hu, step)
    cum_b = running_integral(cum_a, step) if residue == "linear" else None
    table = _exponential_table(inputs, mtt_s) if residue == "exponential" else None
    times = inputs.frame_times_s.astype(np.float32)
    for lo in range(0, flow_per_s.size, _CHUNK):
        sl = slice(lo, lo + _CHUNK)
        # float32 is ample: positions to 1e-3 of a fine step, integrals to ~1e-3 HU s
        delay = delay_s[sl, None].astype(np.float32)
        s = times[None, :] - delay
        mtt = mtt_s[sl, None].astype(np.float32)
        if residue == "box":  # Eq. (1) itself; flow applied below
            value = box_model_tac(lambda q: _lookup(cum_a, t0, step, q), times, 1.0, mtt, delay)
        elif residue == "linear":
            width = 2.0 * mtt
            inner = _lookup(cum_b, t0, step, s) - _lookup(cum_b, t0, step, s - width)
            value = _lookup(cum_a, t0, step, s) - inner / width
        else:
            value = _exponential_lookup(table, t0, step, s, mtt)
        out[sl] = flow_per_s[sl, None] * value
    return out


def _exponential_table(inputs: InputFunctions, mtt_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-MTT nodes (K,), E (K, M)) with E = integral AIF(s - tau) exp(-tau/MTT) dtau."""
    low, high = float(np.min(mtt_s)) * 0.99, float(np.max(mtt_s)) * 1.01
    nodes = np.linspace(np.log(max(low, 0.05)), np.log(max(high, low + 0.1)), 160)
    step = float(inputs.time_s[1] - inputs.time_s[0])
    table = np.empty((nodes.size, inputs.aif_hu.size))
    for k, log_mtt in enumerate(nodes):
        q = np.exp(-step / np.exp(log_mtt))
        # trapezoid recursion E[n] = q E[n-1] + step/2 (a[n] + q a[n-1])
        table[k] = lfilter([0.5 * step, 0.5 * step * q], [1.0, -q], inputs.aif_hu)
    return nodes, table


def _exponential_lookup(
    table: tuple[np.ndarray, np.ndarray], t0: float, step: float, s: np.ndarray, mtt: np.ndarray
) -> np.ndarray:
    nodes, values = table
    pos = np.clip((np.log(mtt) - nodes[0]) / (nodes[1] - nodes[0]), 0.0, nodes.size - 1.000001)
    k = pos.astype(np.int64)[:, 0]
    w = pos - k[:, None]
    tpos = np.clip((s - t0) / step, 0.0, values.shape[1] - 1.001)
    i = tpos.astype(np.int64)
    v = tpos - i
    lower = values[k[:, None], i] * (1 - v) + values[k[:, None], i + 1] * v
    upper = values[k[:, None] + 1, i] * (1 - v) + values[k[:, None] + 1, i + 1] * v
    return lower * (1 - w) + upper * w
