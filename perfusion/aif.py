"""Arterial and venous input functions: automatic selection, user ROIs, partial-volume
correction and quality flags.

Automatic AIF selection (:func:`select_aif_vof`) uses the cluster-based method of Mouridsen et
al. (MRM 2006;56:1114) to find the arterial shape among high-area, high-peak voxels: k-means
(k = 5) on unit-area curves, twice keeping the cluster with the smallest first moment (earliest
bolus). Voxels are then weighted by peak and likeness to that shape, smoothly around the
``n_voxels``-th best (highest peak = least partial volume), so that the curve changes little when
the data change a little; the selection reports how far the chosen voxels lead the runners-up.

The VOF (superior sagittal sinus, as RAPID does; Straka, JMRI 2010) is the weighted mean of the
largest-area voxels whose bolus peaks after the AIF's and whose first moment is later
(:func:`venous_shape_ok`), their areas weighted by how much each curve looks like an outflow of
the AIF (:func:`venous_likeness`); it may be searched in a region of its own, beyond the brain.

All curves are enhancement above baseline (ΔHU); times in s, frames may be non-uniform.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perfusion.errors import PerfusionError
from perfusion.gamma_variate import fit_gamma_variate

LOW_PEAK_HU = 15.0
"""An AIF peaking below this is flagged (OpenPerfusion's rule, field.md section 3)."""


@dataclass(frozen=True)
class CurveFeatures:
    """Per-curve shape features, each an (N,) float64 array.

    peak_hu: maximum enhancement; ttp_s: time of that maximum; arrival_s: time the curve first
    rises through 10 % of its peak before the peak; fwhm_s: full width at half maximum (the fall
    is taken at the last frame when the curve never falls back); area_hus: trapezoid area of the
    positive part (HU·s); m1_s: first moment of the positive part (s); falls_back: whether the
    curve drops below half its peak after it; trough_after_peak: its lowest value after the
    peak, as a fraction of the peak.
    """

    peak_hu: np.ndarray
    ttp_s: np.ndarray
    arrival_s: np.ndarray
    fwhm_s: np.ndarray
    area_hus: np.ndarray
    m1_s: np.ndarray
    falls_back: np.ndarray
    trough_after_peak: np.ndarray


@dataclass
class AifSelection:
    """Chosen input curves and where they came from.

    Attributes:
        aif_hu: (T,) float64 arterial enhancement (ΔHU), not yet partial-volume corrected.
        vof_hu: (T,) float64 venous enhancement (ΔHU), or None when no venous voxel qualified.
        aif_voxels, vof_voxels: (K, 3) int64 voxel indices (i, j, k) averaged into each curve.
        aif_weights, vof_weights: (K,) weights (sum 1) of those voxels; None = equal.
        scores: numbers worth reporting (candidate counts, peaks, times, widths).
        flags: quality warnings from :func:`quality_flags` (empty when all is well).
        source: "auto" or "roi".
    """

    aif_hu: np.ndarray
    vof_hu: np.ndarray | None
    aif_voxels: np.ndarray
    vof_voxels: np.ndarray
    scores: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    source: str = "auto"
    aif_weights: np.ndarray | None = None
    vof_weights: np.ndarray | None = None


def curve_features(time_s: np.ndarray, curves_hu: np.ndarray) -> CurveFeatures:
    """Shape features of many curves at once.

    Args:
        time_s: (T,) increasing frame times in s.
        curves_hu: (N, T) enhancement curves (ΔHU).
    """
    t = np.asarray(time_s, dtype=np.float64)
    c = np.asarray(curves_hu, dtype=np.float64).reshape(-1, t.size)
    rows, index = np.arange(c.shape[0]), np.arange(t.size)
    i_peak = np.argmax(c, axis=1)
    peak = c[rows, i_peak]
    positive = np.clip(c, 0.0, None)
    area = np.trapezoid(positive, t, axis=1)
    m1 = np.trapezoid(positive * t, t, axis=1) / np.maximum(area, 1e-12)
    rise_half = _rise_crossing(t, c, i_peak, 0.5 * peak)
    below_half = (c < 0.5 * peak[:, None]) & (index > i_peak[:, None])
    i_fall = np.where(below_half, index, t.size).min(axis=1)
    falls_back = i_fall < t.size
    after = np.where(index >= i_peak[:, None], c, np.inf).min(axis=1)
    i_fall = np.clip(i_fall, 1, t.size - 1)
    c_hi, c_lo = c[rows, i_fall - 1], c[rows, i_fall]
    frac = np.where(falls_back, (c_hi - 0.5 * peak) / np.maximum(c_hi - c_lo, 1e-12), 1.0)
    fall_half = t[i_fall - 1] + np.clip(frac, 0.0, 1.0) * (t[i_fall] - t[i_fall - 1])
    return CurveFeatures(
        peak_hu=peak,
        ttp_s=t[i_peak],
        arrival_s=_rise_crossing(t, c, i_peak, 0.1 * peak),
        fwhm_s=fall_half - rise_half,
        area_hus=area,
        m1_s=m1,
        falls_back=falls_back,
        trough_after_peak=after / np.maximum(peak, 1e-12),
    )


def _rise_crossing(
    t: np.ndarray, c: np.ndarray, i_peak: np.ndarray, level: np.ndarray
) -> np.ndarray:
    """Time (N,) the curve last rises through ``level`` before its peak, linearly interpolated."""
    rows, index = np.arange(c.shape[0]), np.arange(t.size)
    below = (c < level[:, None]) & (index < i_peak[:, None])
    i_low = np.where(below, index, -1).max(axis=1)
    found = i_low >= 0
    i_low = np.clip(i_low, 0, t.size - 2)
    c_lo, c_hi = c[rows, i_low], c[rows, i_low + 1]
    frac = np.clip((level - c_lo) / np.maximum(c_hi - c_lo, 1e-12), 0.0, 1.0)
    return np.where(found, t[i_low] + frac * (t[i_low + 1] - t[i_low]), t[0])


def smooth_in_time(delta_hu: np.ndarray, times: np.ndarray, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing along time with row-normalised weights exp(-(t_i - t_j)^2 / 2 sigma^2).

    Works on any array whose last axis is time ((X, Y, Z, T) volumes or (N, T) curves). Exact
    for non-uniform frame times (the kernel uses the actual times) and leaves a constant curve
    unchanged (weights sum to 1). ``sigma_s`` <= 0 returns the input.
    """
    if sigma_s <= 0:
        return delta_hu
    t = np.asarray(times, dtype=np.float64)
    weights = np.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma_s) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    curves = np.asarray(delta_hu, dtype=np.float32)
    # one (voxels, T) x (T, T) product, not a batch of small ones over the leading axes
    flat = curves.reshape(-1, curves.shape[-1], order="A")
    out = flat @ weights.T.astype(np.float32)
    return out.reshape(curves.shape, order="A")


ARTERIAL_TROUGH = 0.75
"""An arterial curve falls to this fraction of its peak within the scan. A step (bone or air
moving into a voxel) stays up; a first pass cut off by the scan's end has begun to fall."""


def arterial_shape_ok(
    feat: CurveFeatures,
    time_s: np.ndarray,
    min_peak_hu: float = LOW_PEAK_HU,
    max_fwhm_s: float = 30.0,
) -> np.ndarray:
    """Bool (N,): curves shaped like an arterial bolus.

    A peak of at least ``min_peak_hu``, reached after the first frame and at least 5 s before the
    last, falling to :data:`ARTERIAL_TROUGH` of it inside the scan (a late bolus in a short scan
    may not fall below half before the scan ends: the flag ``truncated_bolus`` then says so),
    FWHM between one frame and
    ``max_fwhm_s`` (RAPID's ISLES 2018 AIFs reach 28 s: a loose sanity bound; the clustering
    does the discriminating).
    """
    t = np.asarray(time_s, dtype=np.float64)
    min_width = float(np.min(np.diff(t)))
    return (
        (feat.peak_hu >= min_peak_hu)
        & (feat.ttp_s > t[0])
        & (feat.ttp_s <= t[-1] - 5.0)
        & (feat.trough_after_peak <= ARTERIAL_TROUGH)
        & (feat.fwhm_s >= min_width)
        & (feat.fwhm_s <= max_fwhm_s)
    )


MAX_VENOUS_LAG_S = 20.0
"""Latest venous peak after the arterial one (s): 3-14 s in the 62 RAPID AIF/VOF pairs of ISLES
2018 (median 7 s; their venous arrival is 1.9-7.7 s after the arterial; tests/test_aif.py)."""
VENOUS_TROUGH = 0.75
"""A venous curve falls to this fraction of its peak within the scan: the 62 RAPID VOFs of ISLES
2018 (42-60 s scans) all fall to 0.70 or below, 57 of them below half (tests/test_aif.py)."""


def venous_shape_ok(
    aif: CurveFeatures, feat: CurveFeatures, min_peak_hu: float = LOW_PEAK_HU
) -> np.ndarray:
    """Bool (N,): curves shaped like a venous outflow given the AIF's features (index 0 used).

    The venous bolus arrives and peaks later than the arterial one, at most
    :data:`MAX_VENOUS_LAG_S` after its peak, and its first moment is later: blood leaves the brain
    after it enters. Its peak must clear ``min_peak_hu``, and it must pass within the scan: after
    its peak the curve falls to :data:`VENOUS_TROUGH` of it or below. (A voxel that bone moves
    into, or that resampling after motion correction mixes with bone, rises whenever the head
    moves and stays up: a step with the largest area of all, not a bolus.)
    """
    return (
        (feat.peak_hu >= min_peak_hu)
        & (feat.arrival_s > aif.arrival_s[0])
        & (feat.ttp_s > aif.ttp_s[0])
        & (feat.ttp_s <= aif.ttp_s[0] + MAX_VENOUS_LAG_S)
        & (feat.m1_s > aif.m1_s[0])
        & (feat.trough_after_peak <= VENOUS_TROUGH)
    )


VENOUS_DELAYS_S = np.arange(0.0, 12.5, 1.0)
"""Delays (s) of the venous outflow models in :func:`venous_likeness`."""
VENOUS_DISPERSIONS_S = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 12.0])
"""Time constants (s) of their exponential dispersion."""


def venous_likeness(time_s: np.ndarray, aif_hu: np.ndarray, curves_hu: np.ndarray) -> np.ndarray:
    """(N,) how much each curve looks like venous outflow of this AIF: the best Pearson
    correlation with the AIF delayed by :data:`VENOUS_DELAYS_S` and dispersed by an exponential
    of time constant :data:`VENOUS_DISPERSIONS_S` (the outflow of a vascular bed is its input
    convolved with the bed's transit-time distribution).

    Scale-free, so a partial-volumed vein scores like a whole one; a voxel whose curve comes
    from motion (bone moving in and out of it) has no such shape. The models are built on a
    0.1 s grid and read at ``time_s``, so non-uniform frames are exact.
    """
    t = np.asarray(time_s, dtype=np.float64)
    step = 0.1
    fine = np.arange(t[0], t[-1] + step / 2, step)
    aif = np.interp(fine, t, np.asarray(aif_hu, dtype=np.float64))
    models = []
    for tau in VENOUS_DISPERSIONS_S:
        kernel = np.exp(-np.arange(0.0, 6.0 * tau, step) / tau)
        dispersed = np.convolve(aif, kernel / kernel.sum())[: fine.size]
        models += [np.interp(t - delay, fine, dispersed, left=0.0) for delay in VENOUS_DELAYS_S]
    curves = np.asarray(curves_hu, dtype=np.float64).reshape(-1, t.size)
    return np.max([_correlation(curves, m) for m in models], axis=0)


def _kmeans_earliest(curves: np.ndarray, m1: np.ndarray, k: int, iters: int = 20) -> np.ndarray:
    """Indices of the k-means cluster (unit-area curves) with the smallest mean first moment.

    Deterministic: centroids start from k groups of candidates ordered by first moment.
    """
    if len(curves) <= k:
        return np.arange(len(curves))
    order = np.argsort(m1, kind="stable")
    centroids = np.stack([curves[g].mean(axis=0) for g in np.array_split(order, k)])
    for _ in range(iters):
        # squared distances by expansion: no (N, k, T) temporary on large brains
        d2 = (centroids**2).sum(1)[None] - 2.0 * curves @ centroids.T
        labels = np.argmin(d2, axis=1)
        new = np.stack(
            [curves[labels == j].mean(0) if np.any(labels == j) else centroids[j] for j in range(k)]
        )
        if np.allclose(new, centroids):
            break
        centroids = new
    cluster_m1 = [m1[labels == j].mean() if np.any(labels == j) else np.inf for j in range(k)]
    return np.nonzero(labels == int(np.argmin(cluster_m1)))[0]


def select_aif_vof(
    enhancement_hu: np.ndarray,
    frame_times_s: np.ndarray,
    brain: np.ndarray,
    vessels: np.ndarray | None = None,
    csf: np.ndarray | None = None,
    n_voxels: int = 10,
    area_fraction: float = 0.10,
    peak_fraction: float = 0.01,
    n_clusters: int = 5,
    baseline_hu: np.ndarray | None = None,
    min_baseline_hu: float | None = None,
    venous_region: np.ndarray | None = None,
) -> AifSelection:
    """Automatic AIF and VOF: Mouridsen 2006 clusters find the arterial shape, soft weights
    pick the voxels.

    1. Features of each curve lightly smoothed in time (one-frame Gaussian: noise spikes do not
       set peaks), for the upper ``area_fraction`` by area (arteries, sinus, large vessels).
       Arterial candidates: arterial shape (:func:`arterial_shape_ok`) and a peak in the upper
       ``peak_fraction`` of the region (at least ``5 * n_voxels`` voxels), not tissue whose
       noise peaks early.
    2. Mouridsen's k-means passes keep the earliest cluster; the mean unit-area curve of its
       ``n_voxels`` highest peaks is the arterial shape.
    3. Each candidate scores its peak times how well its shape matches (correlation 0.8 -> 0,
       1 -> 1); the AIF is the weighted mean with weights rising smoothly around the
       ``n_voxels``-th best score (a logistic step 5 % of that score wide). A small change of the
       data (rounding, another noise draw) moves weights a little instead of swapping voxels.
    4. The VOF: among the upper ``area_fraction`` by area of ``venous_region`` (default: the
       AIF's region), curves that peak after the AIF with a later first moment
       (:func:`venous_shape_ok`), each scoring its area times how well it matches the AIF's
       outflow (:func:`venous_likeness`, 0.8 -> 0, 1 -> 1), weighted the same way; no VOF
       when no curve has that shape.

    ``scores`` report ``confidence``: 1 - (mean score of the runners-up, ranks n+1..2n) / (mean
    score of the chosen n), and ``runner_up_r``: the correlation of the runners-up's mean curve
    with the AIF. A small lead matters only when the runners-up look different:
    :func:`selection_confident`.

    Args:
        enhancement_hu: (X, Y, Z, T) baseline-subtracted enhancement (ΔHU).
        frame_times_s: (T,) frame times in s (non-uniform allowed).
        brain: bool (X, Y, Z) search region; ``vessels`` (added) and ``csf`` (removed) optional.
        venous_region: bool (X, Y, Z) where the VOF is searched, when not in ``brain``: the
            dural sinuses lie outside the brain, along the skull. ``csf`` and
            ``min_baseline_hu`` apply to it too.
        n_voxels: effective number of voxels averaged into each curve.
        baseline_hu: (X, Y, Z) image subtracted from ``enhancement_hu`` first (then raw HU may
            be given: no baseline-subtracted copy of the whole scan is needed).
        min_baseline_hu: with ``baseline_hu``, voxels whose baseline is below it (air or fat,
            not a vessel's lumen) are left out: after motion, a voxel at the edge of air
            "enhances" by hundreds of HU as tissue moves into it.

    Raises:
        PerfusionError: no voxel has an arterial shape.
    """
    t = np.asarray(frame_times_s, dtype=np.float64)
    region = np.asarray(brain, dtype=bool).copy()
    if vessels is not None:
        region |= np.asarray(vessels, dtype=bool)
    venous = region if venous_region is None else np.asarray(venous_region, dtype=bool)
    # one read of the scan for both searches; each keeps its own voxels, in raster order
    voxels, every, smoothed, area = _region_curves(
        enhancement_hu, t, region | venous, csf, baseline_hu, min_baseline_hu
    )
    at = tuple(voxels.T)
    arterial, venous_part = np.nonzero(region[at])[0], np.nonzero(venous[at])[0]
    n_high = max(int(np.ceil(peak_fraction * arterial.size)), 5 * n_voxels)
    high = _top(smoothed[arterial].max(axis=1), n_high)
    # shape features only where an artery or the sinus can be: the upper area_fraction by area
    upper = _upper(area[arterial], area_fraction)
    sub, high = arterial[upper], high[upper]
    curves = every[sub].astype(np.float64)
    feat = curve_features(t, smoothed[sub])
    cand = np.nonzero(arterial_shape_ok(feat, t) & high)[0]
    if cand.size == 0:
        raise PerfusionError("automatic AIF selection: no voxel with an arterial bolus shape")
    keep = _earliest_cluster(curves, feat, cand, n_voxels, n_clusters)
    best = keep[np.argsort(-feat.peak_hu[keep], kind="stable")[:n_voxels]]
    shape = (curves[best] / feat.area_hus[best, None]).mean(axis=0)
    likeness = _likeness_weight(_correlation(curves[cand], shape))
    aif_idx, aif_w, lead, runners = _soft_top(cand, feat.peak_hu[cand] * likeness, n_voxels)
    aif = aif_w @ curves[aif_idx]
    aif_feat = curve_features(t, aif[None])
    sub_v = venous_part[_upper(area[venous_part], area_fraction)]
    feat_v = curve_features(t, smoothed[sub_v])
    late = np.nonzero(venous_shape_ok(aif_feat, feat_v) & (feat_v.area_hus > 0))[0]
    outflow = _likeness_weight(venous_likeness(t, aif, smoothed[sub_v[late]]))
    late, outflow = late[outflow > 0], outflow[outflow > 0]  # no outflow shape, no VOF
    vof = None
    vof_idx, vof_w = np.zeros(0, dtype=np.int64), np.zeros(0)
    if late.size:
        vof_idx, vof_w, _, _ = _soft_top(late, feat_v.area_hus[late] * outflow, n_voxels)
        vof = vof_w @ every[sub_v[vof_idx]].astype(np.float64)
    runner_up_r = (
        1.0
        if runners.size == 0
        else float(_correlation(curves[runners].mean(axis=0)[None], aif)[0])
    )
    scores = {
        "n_candidates": float(cand.size),
        "n_final_cluster": float(keep.size),
        "aif_peak_hu": float(aif_feat.peak_hu[0]),
        "aif_ttp_s": float(aif_feat.ttp_s[0]),
        "aif_fwhm_s": float(aif_feat.fwhm_s[0]),
        "n_venous_candidates": float(late.size),
        "confidence": lead,
        "runner_up_r": runner_up_r,
    }
    return AifSelection(
        aif_hu=aif,
        vof_hu=vof,
        aif_voxels=voxels[sub[aif_idx]].astype(np.int64),
        vof_voxels=voxels[sub_v[vof_idx]].astype(np.int64).reshape(-1, 3),
        scores=scores,
        flags=quality_flags(t, aif, vof),
        aif_weights=aif_w,
        vof_weights=vof_w,
    )


def _region_curves(
    enhancement_hu: np.ndarray,
    t: np.ndarray,
    region: np.ndarray,
    csf: np.ndarray | None,
    baseline_hu: np.ndarray | None,
    min_baseline_hu: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices (N, 3), curves (N, T) float32, the curves smoothed over one frame in time
    (noise spikes do not set peaks) and their trapezoid areas, for ``region`` less ``csf`` and
    less voxels whose baseline is below ``min_baseline_hu``."""
    region = region.copy()
    if csf is not None:
        region &= ~np.asarray(csf, dtype=bool)
    if baseline_hu is not None and min_baseline_hu is not None:
        region &= np.asarray(baseline_hu) >= min_baseline_hu
    voxels = np.argwhere(region)
    data = np.asarray(enhancement_hu)
    # frame by frame: contiguous in NIfTI's order, and no float64 copy of the whole scan
    every = np.stack([data[..., k][region] for k in range(t.size)], axis=-1)
    every = every.astype(np.float32, copy=False)
    if baseline_hu is not None:
        every -= np.asarray(baseline_hu, dtype=np.float32)[region][:, None]
    smoothed = every if t.size < 3 else smooth_in_time(every, t, float(np.median(np.diff(t))))
    area = np.clip(smoothed, 0.0, None) @ _trapezoid_weights(t).astype(np.float32)
    return voxels, every, smoothed, area


def _upper(area: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the upper ``fraction`` of ``area``."""
    return np.nonzero(area >= np.quantile(area, 1.0 - fraction))[0]


def _likeness_weight(r: np.ndarray) -> np.ndarray:
    """A correlation turned into a weight: 0.8 or less -> 0, 1 -> 1, linear between."""
    return np.clip((r - 0.8) / 0.2, 0.0, 1.0)


MIN_LEAD = 0.05
"""Chosen AIF voxels scoring less than 5 % above the runners-up are a near tie ..."""
MIN_RUNNER_UP_R = 0.98
"""... which matters when the runners-up's curve correlates below this with the AIF."""


def selection_confident(scores: dict[str, float]) -> bool:
    """Whether an automatic selection is clear: a lead over the runners-up of at least
    :data:`MIN_LEAD`, or runners-up whose curve is the AIF's shape anyway."""
    return scores["confidence"] >= MIN_LEAD or scores["runner_up_r"] >= MIN_RUNNER_UP_R


def _trapezoid_weights(t: np.ndarray) -> np.ndarray:
    """(T,) weights w with ``curves @ w`` the trapezoid integral over ``t`` (one BLAS call)."""
    w = np.zeros(t.size)
    w[1:] += 0.5 * np.diff(t)
    w[:-1] += 0.5 * np.diff(t)
    return w


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Bool mask of the ``n`` largest ``values`` (ties broken by index)."""
    mask = np.zeros(values.shape, dtype=bool)
    mask[np.argsort(-values, kind="stable")[: max(n, 0)]] = True
    return mask


def _correlation(curves: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Pearson correlation (N,) of each curve with ``reference`` (0 for a flat curve)."""
    a = curves - curves.mean(axis=1, keepdims=True)
    b = reference - reference.mean()
    norm = np.linalg.norm(a, axis=1) * max(float(np.linalg.norm(b)), 1e-12)
    return np.where(norm > 0, a @ b / np.maximum(norm, 1e-12), 0.0)


def _soft_top(
    index: np.ndarray, score: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Voxels (indices into the curves), weights summing to 1, the lead of the chosen over the
    runners-up and the runners-up's indices, for a soft choice of the ``n`` best ``score``s.

    Weights are a logistic step in the score centred on the ``n``-th best, 5 % of it wide, so
    they change continuously with the data; weights below 1e-3 are dropped.
    """
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    if ranked[0] <= 0:  # nothing scores: equal weights on the n first by rank
        chosen = order[:n]
        return index[chosen], np.full(chosen.size, 1.0 / chosen.size), 0.0, index[order[n : 2 * n]]
    pivot = max(float(ranked[min(n, ranked.size) - 1]), 1e-3 * float(ranked[0]))
    weight = 1.0 / (1.0 + np.exp(np.clip(-(score - pivot) / (0.05 * pivot), -50.0, 50.0)))
    used = weight >= 1e-3
    top, runners = ranked[:n], ranked[n : 2 * n]
    lead = 1.0 - float(runners.mean()) / float(top.mean()) if runners.size else 1.0
    return index[used], weight[used] / weight[used].sum(), lead, index[order[n : 2 * n]]


def _earliest_cluster(
    curves: np.ndarray, feat: CurveFeatures, cand: np.ndarray, n_voxels: int, n_clusters: int
) -> np.ndarray:
    """Mouridsen's two k-means passes over the unit-area candidate curves; sorted indices.

    Fewer clusters on few candidates, and no second pass that would leave fewer than
    ``n_voxels``: splitting the arteries themselves by noise picks noise, not arteries.
    """
    unit = curves[cand] / feat.area_hus[cand, None]
    keep = cand
    for npass in range(2):
        k = min(n_clusters, max(2, keep.size // max(n_voxels, 1)))
        sub = keep[_kmeans_earliest(unit[np.searchsorted(cand, keep)], feat.m1_s[keep], k)]
        if npass > 0 and sub.size < n_voxels:
            break
        keep = sub
    return keep


def roi_curve(
    enhancement_hu: np.ndarray,
    center_ijk: tuple[int, int, int] | list[int],
    radius_vox: int = 1,
    baseline_hu: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean curve (T,) of the in-plane square ROI of half-width ``radius_vox`` around a voxel.

    The ROI stays in the voxel's slice (CTP slices are thick) and is clipped to the image.

    Returns:
        (curve_hu (T,), voxels (K, 3) int64).

    Raises:
        PerfusionError: the voxel lies outside the image.
    """
    shape = enhancement_hu.shape[:3]
    i, j, k = (int(v) for v in center_ijk)
    if not all(0 <= v < n for v, n in zip((i, j, k), shape, strict=True)):
        raise PerfusionError(f"ROI voxel {(i, j, k)} outside the image of shape {tuple(shape)}")
    ii = np.arange(max(i - radius_vox, 0), min(i + radius_vox + 1, shape[0]))
    jj = np.arange(max(j - radius_vox, 0), min(j + radius_vox + 1, shape[1]))
    grid = np.stack(np.meshgrid(ii, jj, [k], indexing="ij"), axis=-1).reshape(-1, 3)
    i_, j_, k_ = grid[:, 0], grid[:, 1], grid[:, 2]
    values = np.asarray(enhancement_hu[i_, j_, k_], dtype=np.float64)
    if baseline_hu is not None:  # raw HU given: subtract the baseline image's voxels
        values = values - np.asarray(baseline_hu, dtype=np.float64)[i_, j_, k_][:, None]
    curve = values.mean(0)
    return curve, grid.astype(np.int64)


def first_pass_area(time_s: np.ndarray, curve_hu: np.ndarray) -> float:
    """Area (HU·s) of the gamma-variate fitted to the curve's first pass (analytic, untruncated).

    Falls back to the trapezoid area of the positive curve when the fit fails or is degenerate.
    """
    t = np.asarray(time_s, dtype=np.float64)
    raw = float(np.trapezoid(np.clip(curve_hu, 0.0, None), t))
    try:
        area = fit_gamma_variate(t, np.asarray(curve_hu, dtype=np.float64)).area()
    except (ValueError, RuntimeError, FloatingPointError):
        return raw
    # A fit can run off to a huge tail when the fall is missing; more than 3x the raw area
    # (which includes recirculation) is not a first pass.
    return area if np.isfinite(area) and 0.0 < area <= 3.0 * max(raw, 1e-9) else raw


VOF_WEAKER_MAX_SCALE = 0.8
"""A VOF whose first-pass area is below this fraction of the AIF's is flagged as weaker than the
AIF (itself partial-volumed, or not a vein). Between it and 1 the two areas agree within what
their gamma-variate fits can tell (an AIF taken from the middle of a large artery has no partial
volume to correct); the AIF is left unscaled either way."""


def vof_scale(time_s: np.ndarray, aif_hu: np.ndarray, vof_hu: np.ndarray) -> float:
    """Partial-volume factor: first-pass area of the VOF over that of the AIF (gamma-variate fits).

    Both curves carry the same contrast bolus, so their first-pass areas should be equal; the
    (small) artery loses signal to partial volume, the (large) sinus much less.
    """
    return first_pass_area(time_s, vof_hu) / max(first_pass_area(time_s, aif_hu), 1e-9)


def correct_partial_volume(
    time_s: np.ndarray, aif_hu: np.ndarray, vof_hu: np.ndarray
) -> tuple[np.ndarray, float]:
    """Scale the AIF so its first-pass area equals the VOF's.

    A factor below 1 (VOF weaker than AIF) leaves the AIF unscaled (factor 1); well below it
    (:data:`VOF_WEAKER_MAX_SCALE`) the VOF itself suffers partial volume or is not a vein, and
    :func:`quality_flags` reports ``vof_weaker_than_aif``.

    Returns:
        (scaled AIF (T,) ΔHU, applied factor >= 1).
    """
    scale = max(vof_scale(time_s, aif_hu, vof_hu), 1.0)
    return np.asarray(aif_hu, dtype=np.float64) * scale, float(scale)


def quality_flags(
    time_s: np.ndarray,
    aif_hu: np.ndarray,
    vof_hu: np.ndarray | None = None,
    low_peak_hu: float = LOW_PEAK_HU,
    min_tail_s: float = 25.0,
    min_cnr: float = 10.0,
    min_vof_scale: float = VOF_WEAKER_MAX_SCALE,
) -> list[str]:
    """Warnings about an AIF (and VOF), each a short name.

    - ``truncated_bolus``: the AIF never falls below half its peak after it (first pass cut off).
    - ``late_arrival``: less than ``min_tail_s`` of scan after the AIF arrives (tissue passes and
      Tmax > 6 s delays need that time).
    - ``low_peak``: AIF peak below ``low_peak_hu``.
    - ``noisy_baseline``: fewer than 2 frames before arrival, or peak / baseline SD < ``min_cnr``.
    - ``vof_weaker_than_aif``: partial-volume factor below ``min_vof_scale`` (see
      :func:`correct_partial_volume`).
    """
    t = np.asarray(time_s, dtype=np.float64)
    aif = np.asarray(aif_hu, dtype=np.float64)
    feat = curve_features(t, aif[None])
    flags = []
    if not feat.falls_back[0]:
        flags.append("truncated_bolus")
    if t[-1] - feat.arrival_s[0] < min_tail_s:
        flags.append("late_arrival")
    if feat.peak_hu[0] < low_peak_hu:
        flags.append("low_peak")
    baseline = aif[t < feat.arrival_s[0] - 1e-9]
    if baseline.size < 2 or feat.peak_hu[0] < min_cnr * baseline.std(ddof=1):
        flags.append("noisy_baseline")
    if vof_hu is not None and vof_scale(t, aif, vof_hu) < min_vof_scale:
        flags.append("vof_weaker_than_aif")
    return flags
