"""A tiny noiseless box-model case for the fitting tests, built analytically.

Tissue curves are the closed-form solution of Eq. (1), ``C(t) = F [cumA(t - t_d) - cumA(t - t_d
- MTT)]``, with a gamma-variate AIF whose running integral is analytic
(``GammaVariate.cumulative``), so the true parameters are known exactly.
"""

from __future__ import annotations

import numpy as np

from perfusion.gamma_variate import GammaVariate
from perfusion.prepared import PreparedCase
from perfusion.units import cbf_to_flow

AIF = GammaVariate(t0_s=4.0, alpha=3.0, beta_s=1.5, peak_hu=300.0)
SPACING_MM = (6.0, 6.0, 10.0)
TISSUES = {  # name: (CBF ml/100g/min, MTT s, delay s)
    "grey": (60.0, 4.0, 1.0),
    "white": (25.0, 5.0, 1.0),
    "lesion": (12.0, 8.0, 3.0),
}


def tissue_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """0 outside the brain disc, 1 grey (outer ring), 2 white (inside), 3 lesion (a left block)."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    r = np.hypot(x - cx, y - cy) / (min(shape[:2]) / 2)
    labels2d = np.where(r < 0.95, 1, 0) + np.where(r < 0.6, 1, 0)
    labels2d[(labels2d > 0) & (x < cx - 1) & (y > cy)] = 3
    return np.repeat(labels2d[:, :, None], shape[2], axis=2)


def truth_volumes(labels: np.ndarray) -> dict[str, np.ndarray]:
    """True CBF, MTT and delay volumes (0 outside the brain)."""
    out = {k: np.zeros(labels.shape) for k in ("cbf", "mtt", "delay")}
    for index, (cbf, mtt, delay) in enumerate(TISSUES.values(), start=1):
        out["cbf"][labels == index] = cbf
        out["mtt"][labels == index] = mtt
        out["delay"][labels == index] = delay
    return out


def box_tac(time_s: np.ndarray, cbf: float, mtt: float, delay: float) -> np.ndarray:
    """Eq. (1) solved in closed form (ΔHU) for one voxel."""
    flow = cbf_to_flow(cbf)
    return flow * (AIF.cumulative(time_s - delay) - AIF.cumulative(time_s - delay - mtt))


def make_prepared(
    shape=(16, 16, 4), n_frames: int = 20, interval_s: float = 2.0, spacing_mm=SPACING_MM
) -> PreparedCase:
    """The tiny noiseless case as a PreparedCase on its scan grid (standard frame = scan centred)."""
    times = np.arange(n_frames) * interval_s
    labels = tissue_labels(shape)
    truth = truth_volumes(labels)
    tissue = np.zeros((*shape, n_frames), dtype=np.float32)
    for index in range(1, len(TISSUES) + 1):
        cbf, mtt, delay = list(TISSUES.values())[index - 1]
        tissue[labels == index] = box_tac(times, cbf, mtt, delay)
    affine = np.diag([*spacing_mm, 1.0])
    centre = (np.asarray(shape) - 1) / 2 * np.asarray(spacing_mm)
    to_standard = np.eye(4)
    to_standard[:3, 3] = -centre
    brain = labels > 0
    assert truth["cbf"][brain].min() > 0
    return PreparedCase(
        tissue_hu=tissue,
        frame_times_s=times,
        aif_hu=AIF(times),
        affine=affine,
        brain=brain,
        csf=np.zeros(shape, dtype=bool),
        vessels=np.zeros(shape, dtype=bool),
        scan_to_standard=to_standard,
        bolus_arrival_s=AIF.t0_s,
        vof_hu=1.5 * AIF(times),
    )
