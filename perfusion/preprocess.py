"""Preprocessing from a raw :class:`~perfusion.io.Case` to a fit-ready
:class:`~perfusion.prepared.PreparedCase`: motion correction, standard frame, masks, baseline
subtraction, smoothing and AIF/VOF handling. Each step is configurable (:class:`PreprocessConfig`).

Order (:func:`prepare_case`): motion correction -> brain mask on the pre-contrast frames ->
bolus arrival of the whole-brain curve -> provisional baseline subtraction -> AIF/VOF (user ROI,
``aif.tsv`` or automatic) -> bolus arrival of the AIF -> final baseline subtraction -> CSF and
large-vessel masks -> VOF partial-volume correction -> temporal and in-plane smoothing ->
standard frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from perfusion.aif import (
    correct_partial_volume,
    curve_features,
    quality_flags,
    roi_curve,
    select_aif_vof,
)
from perfusion.errors import PerfusionError
from perfusion.io import Case
from perfusion.masks import brain_mask, csf_mask, vessel_mask
from perfusion.prepared import PreparedCase
from perfusion.registration import centring_transform, estimate_standard_frame, motion_correct

Progress = Callable[[str], None] | None


@dataclass
class PreprocessConfig:
    """Preprocessing options; on by default where clinical software does the step."""

    motion_correction: bool = True
    """Rigidly register every frame to ``reference_frame`` (SimpleITK)."""
    reference_frame: int = 0
    """Index of the frame the others are registered to."""
    standard_frame: bool = True
    """Estimate the rigid map into the standard frame (mid-sagittal plane from symmetry)."""
    frame_shape: list[int] = field(default_factory=lambda: [256, 256, 32])
    """Standard-frame grid (voxels), paper Section 2.6."""
    frame_spacing_mm: list[float] = field(default_factory=lambda: [0.91, 0.91, 5.0])
    """Standard-frame voxel size (mm)."""
    baseline_frames: int = 0
    """Frames averaged as the pre-contrast baseline; 0 = all frames before bolus arrival."""
    smooth_sigma_mm: float = 2.7
    """In-plane Gaussian smoothing sigma (mm) of the tissue curves (within the tissue mask), for
    every method; 0 = off. 2.7 mm is 1.5 voxels of the 1.8 mm phantom grid (bench/results/
    smoothing measures it on and off for every method)."""
    temporal_sigma_s: float = 0.0
    """Temporal Gaussian smoothing sigma (s); 0 = off."""
    vof_correction: bool = True
    """Scale the AIF to the VOF's first-pass area (gamma-variate fits) for partial volume."""
    aif_voxel: list[int] | None = None
    """User AIF voxel (i, j, k) overriding automatic selection; a small ROI around it is used."""
    vof_voxel: list[int] | None = None
    """User VOF voxel (i, j, k) overriding automatic selection."""
    roi_radius_vox: int = 1
    """Half-width in voxels of the ROI around a user-given AIF/VOF voxel."""
    motion_iterations: int = 100
    """Most optimiser steps of each frame's rigid registration."""
    motion_sampling: float = 1.0
    """Fraction of the masked bone-image voxels each frame's registration compares (below 1, a
    fixed random subset per frame of at least 5000 voxels: faster, less accurate)."""
    motion_bone_hu: float = 300.0
    """Motion correction registers the skull: HU above this (bone; contrast reaches it only in
    vessel voxels). A reference with < 0.5 % such voxels registers the clipped head instead."""
    motion_coarse_mm: float = 3.6
    """Voxel size (mm, block-averaged per axis) of the bone images motion correction compares;
    the found transform resamples the full-resolution frame."""
    threads: int = 2
    """Threads SimpleITK may use."""
    brain_hu: list[float] = field(default_factory=lambda: [-15.0, 100.0])
    """Pre-contrast HU range of intracranial soft tissue and CSF for the computed brain mask."""
    bone_min_hu: float = 150.0
    """Pre-contrast HU above which a voxel is bone (kept out of the brain mask)."""
    csf_max_hu: float = 15.0
    """CSF: pre-contrast HU (in-plane smoothed, sigma 0.7 voxel) below this (perfusion.masks) ..."""
    csf_enhancement_fraction: float = 0.35
    """... and mean post-arrival enhancement below this fraction of the brain's median."""
    vessel_min_hu: float = 60.0
    """Large vessel: peak enhancement (ΔHU) at least this ..."""
    vessel_aif_fraction: float = 0.2
    """... and at least this fraction of the (corrected) AIF peak."""
    aif_n_voxels: int = 10
    """Voxels averaged into an automatically selected AIF/VOF."""
    max_vof_scale: float = 20.0
    """A VOF partial-volume factor above this is implausible (truncated or noisy curves make
    the gamma-variate areas run off): the AIF is then left unscaled and flagged. Real factors
    are large: on the 62 ISLES 2018 RAPID AIF/VOF pairs they ran from 0.95 to 17 (median ~4),
    and a 3.6 x 3.6 x 10 mm phantom grid needs ~4; a cap of 3 left such AIFs 4x too low."""


@dataclass
class _Curves:
    """AIF/VOF (ΔHU at frame times) with where they came from."""

    aif_hu: np.ndarray
    vof_hu: np.ndarray | None
    source: str
    aif_voxels: np.ndarray | None = None
    vof_voxels: np.ndarray | None = None
    raw: tuple[np.ndarray, np.ndarray | None] | None = None  # file curves (HU) at frame times


def prepare_case(case: Case, cfg: PreprocessConfig, progress: Progress = None) -> PreparedCase:
    """Turn a read case into the fit-ready :class:`PreparedCase` (see the module docstring).

    Args:
        case: a validated case (``perfusion.io.read_case``).
        cfg: options (dataclass or structured DictConfig).
        progress: optional callback receiving one-line progress messages.

    Raises:
        PerfusionError: naming the case folder, e.g. for an empty brain mask.
    """
    say = progress or (lambda message: None)
    start, times, spacing = time.perf_counter(), case.frame_times_s, case.spacing_mm
    meta: dict[str, Any] = {"case": str(case.path)}
    clock = _StageClock()
    ctp = _motion(case, cfg, meta, say)
    clock.lap("motion correction")
    brain = case.brainmask
    if brain is None:
        pre = ctp[..., : min(3, ctp.shape[3])].mean(axis=-1)  # pre-contrast in any protocol
        brain = brain_mask(pre, spacing, tuple(cfg.brain_hu), cfg.bone_min_hu, case.path)
    clock.lap("brain mask")
    # provisional baseline from the whole-brain curve, then the AIF's (earlier) arrival
    arrival = bolus_arrival_s(times, ctp[brain].mean(axis=0))
    delta, baseline = subtract_baseline(ctp, baseline_count(times, arrival, cfg.baseline_frames))
    clock.lap("baseline")
    say("selecting the arterial and venous input functions")
    curves = _input_curves(case, delta, brain, cfg)
    clock.lap("AIF and VOF")
    arrival = bolus_arrival_s(times, curves.aif_hu)
    n_base = baseline_count(times, arrival, cfg.baseline_frames)
    delta, baseline = subtract_baseline(ctp, n_base)
    clock.lap("baseline")
    aif, vof = _correct_aif(_rebase(curves, delta, n_base), times, cfg, meta)
    clock.lap("AIF and VOF")
    csf, vessels = _csf_and_vessels(delta, baseline, times, arrival, brain, float(aif.max()), cfg)
    clock.lap("CSF and vessel masks")
    tissue = smooth_in_time(delta, times, cfg.temporal_sigma_s)
    tissue = smooth_in_plane(tissue, brain & ~csf & ~vessels, spacing, cfg.smooth_sigma_mm)
    clock.lap("smoothing")
    to_standard = _standard_frame(baseline, case, brain, cfg, meta, say)
    clock.lap("standard frame")
    meta["timings_s"] = clock.laps
    meta.update(
        baseline_frames=n_base,
        brain_ml=float(brain.sum()) * case.voxel_volume_ml,
        csf_ml=float(csf.sum()) * case.voxel_volume_ml,
        vessels_ml=float(vessels.sum()) * case.voxel_volume_ml,
        runtime_s=round(time.perf_counter() - start, 2),
    )
    return PreparedCase(
        tissue_hu=tissue.astype(np.float32),
        frame_times_s=times,
        aif_hu=aif,
        vof_hu=vof,
        affine=case.affine,
        brain=brain,
        csf=csf,
        vessels=vessels,
        scan_to_standard=to_standard,
        bolus_arrival_s=float(arrival),
        meta=meta,
    )


class _StageClock:
    """Seconds per preprocessing stage (``meta["timings_s"]``), summed when a stage recurs."""

    def __init__(self) -> None:
        self.last, self.laps = time.perf_counter(), {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(self.laps.get(stage, 0.0) + now - self.last, 3)
        self.last = now


# ---------------------------------------------------------------------------------------------
# Timing and baseline


def bolus_arrival_s(times: np.ndarray, curve_hu: np.ndarray) -> float:
    """Bolus arrival (s): where the curve first rises through 10 % of its enhancement peak.

    The curve may be raw HU or ΔHU: it is first referred to the median of the frames before
    its half-rise (a provisional baseline), then :func:`perfusion.aif.curve_features` finds the
    10 % rise crossing, linearly interpolated between frames.
    """
    curve = np.asarray(curve_hu, dtype=np.float64)
    i_peak = int(np.argmax(curve))
    half = curve[0] + 0.5 * (curve[i_peak] - curve[0])
    rising = np.nonzero(curve[: i_peak + 1] >= half)[0]
    i_half = int(rising[0]) if rising.size else i_peak
    base = float(np.median(curve[: max(1, i_half - 1)]))
    return float(curve_features(times, (curve - base)[None]).arrival_s[0])


def baseline_count(times: np.ndarray, arrival_s: float, requested: int = 0) -> int:
    """Frames in the baseline: ``requested`` if > 0, else all frames before arrival (>= 1)."""
    if requested > 0:
        return min(int(requested), len(times))
    return max(1, int(np.sum(times < arrival_s)))


def subtract_baseline(ctp_hu: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(ΔHU (X, Y, Z, T) float32, baseline image (X, Y, Z) HU): mean of the first ``n_frames``."""
    baseline = ctp_hu[..., :n_frames].mean(axis=-1, dtype=np.float64).astype(np.float32)
    delta = np.empty_like(ctp_hu, dtype=np.float32)  # the input's memory order: one pass
    np.subtract(ctp_hu, baseline[..., None], out=delta)
    return delta, baseline


# ---------------------------------------------------------------------------------------------
# Smoothing


def smooth_in_time(delta_hu: np.ndarray, times: np.ndarray, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing along time with row-normalised weights exp(-(t_i - t_j)^2 / 2 sigma^2).

    Exact for non-uniform frame times (the kernel uses the actual times) and leaves a constant
    curve unchanged (weights sum to 1). ``sigma_s`` <= 0 returns the input.
    """
    if sigma_s <= 0:
        return delta_hu
    t = np.asarray(times, dtype=np.float64)
    weights = np.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma_s) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    return (delta_hu @ weights.T.astype(np.float32)).astype(np.float32)


def smooth_in_plane(
    delta_hu: np.ndarray, mask: np.ndarray, spacing_mm: np.ndarray, sigma_mm: float
) -> np.ndarray:
    """In-plane Gaussian (sigma in mm) of (X, Y, Z, T) within ``mask``, normalised by the
    smoothed mask so that edges do not darken (normalised convolution); voxels outside the
    mask keep their values. ``sigma_mm`` <= 0 returns the input.
    """
    if sigma_mm <= 0:
        return delta_hu
    sigma = (sigma_mm / spacing_mm[0], sigma_mm / spacing_mm[1], 0.0)
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    out = np.array(delta_hu, dtype=np.float32, copy=True)
    inside = mask & (weight > 1e-6)
    for t in range(delta_hu.shape[3]):
        smoothed = ndimage.gaussian_filter(
            np.where(mask, delta_hu[..., t], 0.0).astype(np.float32), sigma
        )
        out[..., t][inside] = smoothed[inside] / weight[inside]
    return out


# ---------------------------------------------------------------------------------------------
# AIF / VOF and the standard frame


def _input_curves(
    case: Case, delta: np.ndarray, brain: np.ndarray, cfg: PreprocessConfig
) -> _Curves:
    """AIF/VOF: user ROI (``aif_voxel``) first, then ``aif.tsv``, then automatic selection.

    An explicit command-line voxel beats a file; a missing VOF is taken from the file, else
    from the automatic selection (when it finds one).
    """
    times, r = case.frame_times_s, cfg.roi_radius_vox
    vof = vof_vox = None
    if cfg.vof_voxel is not None:
        vof, vof_vox = roi_curve(delta, list(cfg.vof_voxel), r)
    if cfg.aif_voxel is not None:
        aif, aif_vox = roi_curve(delta, list(cfg.aif_voxel), r)
        if vof is None:
            vof, vof_vox = _auto_vof(delta, times, brain, cfg)
        return _Curves(aif, vof, "roi", aif_vox, vof_vox)
    if case.curves is not None:
        c = case.curves
        raw_aif = np.interp(times, c.time_s, c.aif_hu)
        raw_vof = None if c.vof_hu is None else np.interp(times, c.time_s, c.vof_hu)
        if vof is not None:  # a user VOF ROI beats the file's VOF
            raw_vof = None
        curves = _Curves(raw_aif, vof, "file", vof_voxels=vof_vox, raw=(raw_aif, raw_vof))
        return _rebase(curves, delta, baseline_count(times, bolus_arrival_s(times, raw_aif)))
    sel = select_aif_vof(delta, times, brain, n_voxels=cfg.aif_n_voxels)
    if vof is None:
        vof, vof_vox = sel.vof_hu, sel.vof_voxels
    return _Curves(sel.aif_hu, vof, "auto", sel.aif_voxels, vof_vox)


def _auto_vof(delta: np.ndarray, times: np.ndarray, brain: np.ndarray, cfg: PreprocessConfig):
    try:
        sel = select_aif_vof(delta, times, brain, n_voxels=cfg.aif_n_voxels)
    except PerfusionError:
        return None, None
    return sel.vof_hu, sel.vof_voxels


def _rebase(curves: _Curves, delta: np.ndarray, n_base: int) -> _Curves:
    """Curves re-derived after the baseline changed: voxel means of ``delta``, or the file's
    curves minus the mean of their first ``n_base`` frames."""

    def voxel_mean(vox: np.ndarray | None, fallback: np.ndarray | None) -> np.ndarray | None:
        if vox is None or len(vox) == 0:
            return fallback
        return delta[vox[:, 0], vox[:, 1], vox[:, 2]].astype(np.float64).mean(axis=0)

    aif = voxel_mean(curves.aif_voxels, curves.aif_hu)
    vof = voxel_mean(curves.vof_voxels, curves.vof_hu)
    if curves.raw is not None:
        raw_aif, raw_vof = curves.raw
        aif = raw_aif - raw_aif[:n_base].mean()
        if raw_vof is not None:
            vof = raw_vof - raw_vof[:n_base].mean()
    return _Curves(aif, vof, curves.source, curves.aif_voxels, curves.vof_voxels, curves.raw)


def _correct_aif(curves: _Curves, times: np.ndarray, cfg: PreprocessConfig, meta: dict) -> tuple:
    """VOF partial-volume correction (when configured and a VOF exists); fills ``meta``."""
    aif, scale = curves.aif_hu, 1.0
    flags = quality_flags(times, curves.aif_hu, curves.vof_hu)
    if cfg.vof_correction and curves.vof_hu is not None:
        aif, scale = correct_partial_volume(times, curves.aif_hu, curves.vof_hu)
        if scale > cfg.max_vof_scale:
            flags.append(
                f"vof_scale_implausible ({scale:.2f} > {cfg.max_vof_scale:g}, not applied)"
            )
            aif, scale = curves.aif_hu, 1.0
    if curves.vof_hu is None:
        flags.append("no_vof")
    meta["aif"] = {
        "source": curves.source,
        "vof_scale": scale,
        "flags": flags,
        "peak_hu_measured": float(curves.aif_hu.max()),
        "peak_hu": float(aif.max()),
        "aif_voxels": None if curves.aif_voxels is None else curves.aif_voxels.tolist(),
        "vof_voxels": None if curves.vof_voxels is None else curves.vof_voxels.tolist(),
    }
    return np.asarray(aif, dtype=np.float64), curves.vof_hu


def _motion(
    case: Case, cfg: PreprocessConfig, meta: dict, say: Callable[[str], None]
) -> np.ndarray:
    """Motion-corrected frames (or the scan as is); per-frame parameters go into ``meta``."""
    if not cfg.motion_correction:
        return case.ctp_hu
    say(f"motion correction of {case.ctp_hu.shape[3]} frames")
    motion = motion_correct(
        case.ctp_hu,
        case.spacing_mm,
        reference_frame=cfg.reference_frame,
        iterations=cfg.motion_iterations,
        sampling=cfg.motion_sampling,
        threads=cfg.threads,
        progress=say,
        bone_hu=cfg.motion_bone_hu,
        coarse_mm=cfg.motion_coarse_mm,
    )
    meta["motion"] = {**motion.summary(), "params": motion.params.round(4).tolist()}
    return motion.frames


def _csf_and_vessels(
    delta: np.ndarray,
    baseline: np.ndarray,
    times: np.ndarray,
    arrival_s: float,
    brain: np.ndarray,
    aif_peak_hu: float,
    cfg: PreprocessConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """CSF and large-vessel masks (perfusion.masks) from the baseline and the enhancement."""
    enhancement = delta[..., times > arrival_s].mean(axis=-1)
    csf = csf_mask(baseline, enhancement, brain, cfg.csf_max_hu, cfg.csf_enhancement_fraction)
    # one-frame temporal smoothing before the peak keeps noise spikes out of the vessel mask
    peak = smooth_in_time(delta, times, float(np.median(np.diff(times)))).max(axis=-1)
    vessels = vessel_mask(
        peak, brain & ~csf, aif_peak_hu, cfg.vessel_min_hu, cfg.vessel_aif_fraction
    )
    return csf, vessels


def _standard_frame(
    baseline, case: Case, brain, cfg: PreprocessConfig, meta: dict, say
) -> np.ndarray:
    """Symmetry-based standard frame, or a centring translation when it is switched off."""
    if not cfg.standard_frame:
        return centring_transform(case.affine, brain)
    say("standard frame: mid-sagittal plane from symmetry")
    matrix, info = estimate_standard_frame(baseline, case.affine, brain)
    meta["standard_frame"] = info
    return matrix
