"""The noise level of tissue curves, estimated from the data alone (no labels).

CT noise is independent from frame to frame, so the difference of two frames of a voxel whose
signal has not changed has variance 2 sigma^2. Before the bolus reaches the tissue the signal
is flat: ``sigma = sqrt(mean(diff^2) / 2)`` over the pre-bolus frames of every tissue voxel
(field.md section 7). The curves are read as the fit sees them (after preprocessing and any
spatial smoothing), so the estimate is the noise of the data as fitted, whatever the texture.

With fewer than :data:`MIN_PRE_BOLUS_FRAMES` pre-bolus frames, a temporal high-pass takes over:
second differences (the local curvature, scaled to the noise's variance for the actual frame
spacing) over the whole curve, read through their median absolute value, which the few
frames where the bolus bends the curve do not move much. It over-reads when the frames are
sparse against the bolus (curvature), so it comes with a warning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CONTRAST_VOXELS = 20000
"""At most this many tissue voxels (spread evenly in memory order) give :func:`tissue_contrast`
its mean curve and noise SD: the mean's noise is then under 1 % of one voxel's, the SD's
relative error ~1e-3, far below any threshold on their ratio."""
MIN_PRE_BOLUS_FRAMES = 3
"""Frames before the bolus needed for the frame-difference estimate (two differences)."""
UNIFORM_TOLERANCE = 0.01
"""Relative spread of the frame intervals beyond which the sampling counts as changing."""
_GAUSS_MAD = 0.6744897501960817
"""Median absolute value of a standard normal variable."""


@dataclass
class NoiseEstimate:
    """Noise SD of the tissue curves as fitted, and how it was found.

    Attributes:
        sd_hu: per-frame noise SD (ΔHU).
        method: ``pre-bolus frame differences`` or ``temporal second differences``.
        frames: frames the estimate used.
        warnings: why the estimate may be less reliable (one line each).
    """

    sd_hu: float
    method: str
    frames: int
    warnings: list[str] = field(default_factory=list)

    def residual_rms_hu(self, n_frames: int, baseline_frames: float) -> float:
        """RMS over all frames that a perfect fit leaves on baseline-subtracted curves.

        Subtracting the mean of the first ``n_b`` frames adds that mean's error, SD sigma /
        sqrt(n_b), to every later frame and removes it from the baseline frames, so the mean
        squared residual is ``sigma^2 (1 + 1/n_b - 2/T)`` rather than ``sigma^2``. A weighted
        baseline counts its effective frames (``PreparedCase.meta["baseline_frames"]``).
        """
        n_b, n_t = max(float(baseline_frames), 1.0), max(int(n_frames), 1)
        return self.sd_hu * float(np.sqrt(max(1.0 + 1.0 / n_b - 2.0 / n_t, 0.0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_noise(
    curves_hu: np.ndarray,
    frame_times_s: np.ndarray,
    arrival_s: float,
    min_pre_frames: int = MIN_PRE_BOLUS_FRAMES,
) -> NoiseEstimate:
    """Noise SD of ``curves_hu`` (V, T) ΔHU at ``frame_times_s`` (T,) s.

    ``arrival_s`` is the bolus arrival in the arterial input (scan clock); tissue enhances
    later, so frames up to one frame interval before it count as pre-bolus. With at least
    ``min_pre_frames`` of them the SD comes from their differences, else from temporal second
    differences.
    """
    curves = np.asarray(curves_hu, dtype=np.float64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    warnings: list[str] = []
    intervals = np.diff(times)
    if intervals.size and np.ptp(intervals) > UNIFORM_TOLERANCE * np.median(intervals):
        warnings.append(
            f"the frame interval changes during the scan ({intervals.min():.2g}-"
            f"{intervals.max():.2g} s): the noise may differ between its phases"
        )
    step = float(np.median(intervals)) if intervals.size else 0.0
    pre = int(np.sum(times <= arrival_s - step))
    least = max(int(min_pre_frames), 2)  # one difference per voxel at the fewest
    if pre >= least and curves.size:
        diffs = np.diff(curves[:, :pre], axis=1)
        sd = float(np.sqrt(np.mean(diffs**2) / 2.0))
        return NoiseEstimate(sd, "pre-bolus frame differences", pre, warnings)
    warnings.append(
        f"{pre} pre-bolus frames (< {least}): noise from temporal second "
        "differences, which read the bolus's curvature as noise where frames are sparse"
    )
    return NoiseEstimate(
        _second_difference_sd(curves, times), "temporal second differences", len(times), warnings
    )


def fit_noise(
    curves_hu: np.ndarray, frame_times_s: np.ndarray, arrival_s: float, baseline_frames: float
) -> tuple[NoiseEstimate, float]:
    """:func:`estimate_noise` of ``curves_hu`` (V, T) and the RMS residual a perfect fit leaves
    on them (:meth:`NoiseEstimate.residual_rms_hu`, ``baseline_frames`` effective frames)."""
    noise = estimate_noise(curves_hu, frame_times_s, arrival_s)
    return noise, noise.residual_rms_hu(len(frame_times_s), baseline_frames)


def _second_difference_sd(curves: np.ndarray, times: np.ndarray) -> float:
    """Robust noise SD from second differences on any frame spacing (NaN with < 3 frames).

    For spacings h1, h2: ``d = (x3 - x2) / h2 - (x2 - x1) / h1`` has noise variance
    ``sigma^2 (1/h2^2 + (1/h1 + 1/h2)^2 + 1/h1^2)`` when the frames' noise is independent.
    """
    if curves.shape[1] < 3 or curves.shape[0] == 0:
        return float("nan")
    h = np.diff(times)
    h1, h2 = h[:-1], h[1:]
    d = (curves[:, 2:] - curves[:, 1:-1]) / h2 - (curves[:, 1:-1] - curves[:, :-2]) / h1
    scale = np.sqrt(1.0 / h2**2 + (1.0 / h1 + 1.0 / h2) ** 2 + 1.0 / h1**2)
    return float(np.median(np.abs(d / scale)) / _GAUSS_MAD)


def tissue_contrast(
    tissue_hu: np.ndarray, tissue: np.ndarray, frame_times_s: np.ndarray, arrival_s: float
) -> dict[str, float | None]:
    """How far the tissue's bolus stands above one voxel's noise.

    ``peak_hu``: the peak of the mean curve of the ``tissue`` voxels (bool, X, Y, Z) of
    ``tissue_hu`` (X, Y, Z, T) ΔHU (the mean removes the noise, not the bolus); ``noise_sd_hu``:
    :func:`estimate_noise` of the voxels' curves (both over ``CONTRAST_VOXELS`` of them);
    ``cnr``: their ratio (None without tissue or noise). Below 1 a voxel's bolus is smaller
    than its noise.
    """
    flat = np.flatnonzero(tissue)
    if flat.size == 0:
        return {"peak_hu": None, "noise_sd_hu": None, "cnr": None}
    subset = flat[np.linspace(0, flat.size - 1, min(flat.size, CONTRAST_VOXELS)).astype(np.int64)]
    curves = tissue_hu[np.unravel_index(subset, tissue.shape)]  # any memory order, no copy
    sd = estimate_noise(curves, frame_times_s, arrival_s).sd_hu
    peak = float(curves.mean(axis=0, dtype=np.float64).max())
    return {
        "peak_hu": round(peak, 3),
        "noise_sd_hu": round(sd, 3),
        "cnr": round(peak / sd, 3) if sd > 0 else None,
    }


def below_min_cnr(cnr: float | None, min_cnr: float) -> bool:
    """Whether a contrast to noise (:func:`tissue_contrast`'s ``cnr``) is below ``min_cnr``
    (``preprocess.min_tissue_cnr``); an unknown one (None: no tissue or no noise) is not."""
    return cnr is not None and cnr < min_cnr
