"""Preprocessing from a raw :class:`~perfusion.io.Case` to a fit-ready
:class:`~perfusion.prepared.PreparedCase`: motion correction, standard frame, masks, baseline
subtraction, smoothing and AIF/VOF handling. Each step is configurable (:class:`PreprocessConfig`).

Order (:func:`prepare_case`): motion correction -> brain mask on the pre-contrast frames, less
the voxels that left the field of view in some frame -> bolus arrival of the whole-brain curve ->
provisional baseline, whose sharpness every moved frame is given -> provisional baseline
subtraction -> AIF/VOF (user ROI, ``aif.tsv`` or automatic) -> bolus arrival of the AIF ->
final baseline subtraction -> CSF and large-vessel masks -> VOF partial-volume correction ->
temporal and in-plane smoothing -> standard frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import fft as sp_fft

from perfusion.aif import (
    correct_partial_volume,
    curve_features,
    quality_flags,
    roi_curve,
    select_aif_vof,
    selection_confident,
    smooth_in_time,
)
from perfusion.errors import PerfusionError
from perfusion.io import Case, check_aif_rises
from perfusion.masks import brain_mask, csf_mask, venous_search_region, vessel_mask
from perfusion.noise import below_min_cnr, tissue_contrast
from perfusion.prepared import PreparedCase
from perfusion.registration import (
    MotionResult,
    centring_transform,
    estimate_standard_frame,
    motion_correct,
    nothing_to_register,
    reference_index,
)

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
    motion_sampling: float = 0.5
    """Fraction of the masked bone-image voxels each frame's registration compares (below 1, a
    fixed random subset per frame of at least 5000 voxels: faster, a little less accurate)."""
    motion_bone_hu: float = 300.0
    """Motion correction registers the skull: HU above this (bone; contrast reaches it only in
    vessel voxels). A reference with < 0.5 % such voxels registers the clipped head instead."""
    motion_coarse_mm: float = 3.6
    """Voxel size (mm, block-averaged per axis) of the bone images motion correction compares;
    the found transform resamples the full-resolution frame."""
    motion_min_shift_vox: float = 0.25
    """A frame whose found transform moves no brain-box corner by this many voxels (of the
    smallest spacing) is left as acquired, not resampled: registration noise on a still head
    (~0.05 voxel) would otherwise interpolate every frame a little differently."""
    threads: int = 2
    """Threads SimpleITK may use."""
    brain_hu: list[float] = field(default_factory=lambda: [-15.0, 100.0])
    """Pre-contrast HU range of intracranial soft tissue and CSF for the computed brain mask;
    voxels below its lower bound (air, fat) are also left out of the automatic AIF/VOF search."""
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
    vof_search_mm: float = 10.0
    """The automatic VOF is searched in the brain and the soft tissue or blood (``brain_hu``)
    within this distance of it (mm), where the dural sinuses run; 0 = the brain only."""
    max_vof_scale: float = 20.0
    """A VOF partial-volume factor above this is implausible (truncated or noisy curves make
    the gamma-variate areas run off): the AIF is then left unscaled and flagged. Real factors
    are large: on the 62 ISLES 2018 RAPID AIF/VOF pairs they ran from 0.95 to 17 (median ~4),
    and a 3.6 x 3.6 x 10 mm phantom grid needs ~4; a cap of 3 left such AIFs 4x too low."""
    min_tissue_cnr: float = 1.0
    """Tissue contrast below which the scan is flagged ``low_tissue_contrast``: the peak of the
    mean tissue curve over the noise SD of one voxel's frame, both as fitted (after smoothing;
    :func:`perfusion.noise.tissue_contrast`). Below 1 a voxel's bolus is smaller than its
    noise, so no method can place its CBF, delay or Tmax voxel by voxel. Flags only: the maps
    are computed as always."""


_AIF_SOURCES = {"roi": "preprocess.aif_voxel", "file": "aif.tsv", "auto": "automatic selection"}
_NO_RISE_CAUSES = "a bolus already under way at the first frame, or a moving head not corrected?"


@dataclass
class _Curves:
    """AIF/VOF (ΔHU at frame times) with where they came from."""

    aif_hu: np.ndarray
    vof_hu: np.ndarray | None
    source: str
    aif_voxels: np.ndarray | None = None
    vof_voxels: np.ndarray | None = None
    raw: tuple[np.ndarray, np.ndarray | None] | None = None  # file curves (HU) at frame times
    aif_weights: np.ndarray | None = None  # per voxel (sum 1); None = equal
    vof_weights: np.ndarray | None = None
    scores: dict[str, float] = field(default_factory=dict)  # automatic selection's report


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
    motion = _motion(case, cfg, meta, say)
    ctp = case.ctp_hu if motion is None else motion.frames
    covered = None if motion is None else motion.covered
    clock.lap("motion correction")
    brain = case.brainmask
    if brain is None:
        pre = ctp[..., : min(3, ctp.shape[3])].mean(axis=-1)  # pre-contrast in any protocol
        brain = brain_mask(pre, spacing, tuple(cfg.brain_hu), cfg.bone_min_hu, case.path)
    if covered is not None:  # voxels that left the field of view in some frame have no curve
        meta["motion"]["outside_fov_ml"] = float((brain & ~covered).sum()) * case.voxel_volume_ml
        brain = brain & covered
    clock.lap("brain mask")
    # provisional baseline from the whole-brain curve, then the AIF's (earlier) arrival
    arrival = bolus_arrival_s(times, _frame_means(ctp, brain))
    provisional_w = baseline_weights(times, arrival, cfg.baseline_frames)
    provisional = _weighted_frame(ctp, provisional_w)
    clock.lap("baseline")
    # every moved frame's brain as sharp as the baseline's, before any curve is read
    box = _bounding_box(brain) if brain.any() else None
    share = None if motion is None else motion.even_out_blur(provisional, spacing, box)
    if share is not None:
        meta["motion"]["blur_share"] = round(share, 3)
        provisional = _weighted_frame(ctp, provisional_w)
        clock.lap("motion correction")
    say("selecting the arterial and venous input functions")
    curves = _input_curves(case, ctp, provisional, brain, cfg)
    clock.lap("AIF and VOF")
    arrival = bolus_arrival_s(times, curves.aif_hu)
    base_w = baseline_weights(times, arrival, cfg.baseline_frames)
    # the motion-corrected copy is ours to overwrite; the case's own array is not
    delta, baseline = subtract_baseline(ctp, base_w, in_place=ctp is not case.ctp_hu)
    clock.lap("baseline")
    aif, vof = _correct_aif(_rebase(curves, delta, base_w), times, cfg, meta)
    # the rule aif.tsv is read by: a prepared folder is always readable again
    check_aif_rises(aif, case.path, f" ({_AIF_SOURCES[curves.source]}: {_NO_RISE_CAUSES})")
    clock.lap("AIF and VOF")
    csf, vessels = _csf_and_vessels(delta, baseline, times, arrival, brain, float(aif.max()), cfg)
    clock.lap("CSF and vessel masks")
    parenchyma = brain & ~csf & ~vessels  # PreparedCase.tissue
    tissue = smooth_in_time(delta, times, cfg.temporal_sigma_s)
    tissue = smooth_in_plane(
        tissue, parenchyma, spacing, cfg.smooth_sigma_mm, in_place=tissue is delta
    )
    clock.lap("smoothing")
    _check_contrast(tissue, parenchyma, times, arrival, cfg, meta)
    clock.lap("tissue contrast")
    to_standard = _standard_frame(baseline, case, brain, cfg, meta, say)
    clock.lap("standard frame")
    meta["timings_s"] = clock.laps
    meta.update(
        baseline_frames=round(effective_frames(base_w), 3),
        brain_ml=float(brain.sum()) * case.voxel_volume_ml,
        csf_ml=float(csf.sum()) * case.voxel_volume_ml,
        vessels_ml=float(vessels.sum()) * case.voxel_volume_ml,
        runtime_s=round(time.perf_counter() - start, 2),
    )
    return PreparedCase(
        tissue_hu=tissue.astype(np.float32, copy=False),
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


def _check_contrast(tissue_hu, tissue, times, arrival, cfg: PreprocessConfig, meta) -> None:
    """``meta["contrast"]`` (:func:`perfusion.noise.tissue_contrast`) and, below
    ``cfg.min_tissue_cnr``, the flag ``low_tissue_contrast`` among the input flags."""
    contrast = tissue_contrast(tissue_hu, tissue, times, arrival)
    meta["contrast"] = contrast
    if below_min_cnr(contrast["cnr"], cfg.min_tissue_cnr):
        meta["aif"]["flags"].append("low_tissue_contrast")


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


def baseline_weights(times: np.ndarray, arrival_s: float, requested: int = 0) -> np.ndarray:
    """(T,) weights of the frames averaged into the baseline.

    ``requested`` > 0: the first ``requested`` frames, equally. Otherwise every frame at least two
    frame intervals (the median) before ``arrival_s`` counts fully, frames less than one interval
    before it not at all (the frame before the 10 % crossing may hold up to 10 % of the bolus),
    and a frame between gets a weight falling linearly from 1 to 0. The baseline therefore moves
    continuously with the arrival time instead of jumping by a frame when noise or rounding moves
    the crossing past a frame time. At least the first frame counts.
    """
    t = np.asarray(times, dtype=np.float64)
    if requested > 0:
        return (np.arange(t.size) < requested).astype(np.float64)
    step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    weights = np.clip((arrival_s - t) / step - 1.0, 0.0, 1.0)
    if weights.sum() <= 0:
        weights[0] = 1.0
    return weights


def effective_frames(weights: np.ndarray) -> float:
    """Frames whose plain mean has the noise of this weighted mean: (sum w)^2 / sum w^2."""
    return float(weights.sum() ** 2 / np.sum(weights**2))


def subtract_baseline(
    ctp_hu: np.ndarray, weights: np.ndarray, in_place: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(ΔHU (X, Y, Z, T) float32, baseline image (X, Y, Z) HU): the ``weights``-weighted mean
    of the frames (:func:`baseline_weights`) subtracted from every frame; ``in_place``
    overwrites a float32 ``ctp_hu`` instead of allocating."""
    baseline = _weighted_frame(ctp_hu, weights)
    if in_place and ctp_hu.dtype == np.float32:
        delta = ctp_hu
    else:
        delta = np.empty_like(ctp_hu, dtype=np.float32)  # the input's memory order
    for t in range(ctp_hu.shape[3]):  # frame by frame: contiguous in NIfTI's (Fortran) order
        np.subtract(ctp_hu[..., t], baseline, out=delta[..., t])
    return delta, baseline


def _weighted_frame(ctp_hu: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ``weights``-weighted mean of the frames, float32 (X, Y, Z)."""
    total = np.zeros(ctp_hu.shape[:3], dtype=np.float64)
    for t in np.nonzero(weights)[0]:
        total += float(weights[t]) * ctp_hu[..., t]
    return (total / float(np.sum(weights))).astype(np.float32)


def _frame_means(ctp_hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T,) mean of each frame over ``mask``: one dot product per frame (no gather)."""
    order = "F" if ctp_hu.flags.f_contiguous else "C"
    weights = mask.ravel(order=order).astype(ctp_hu.dtype) / max(int(mask.sum()), 1)
    return np.array(
        [float(ctp_hu[..., t].ravel(order=order) @ weights) for t in range(ctp_hu.shape[3])]
    )


# ---------------------------------------------------------------------------------------------
# Smoothing


def smooth_in_plane(
    delta_hu: np.ndarray,
    mask: np.ndarray,
    spacing_mm: np.ndarray,
    sigma_mm: float,
    in_place: bool = False,
) -> np.ndarray:
    """In-plane Gaussian (sigma in mm) of (X, Y, Z, T) within ``mask``, normalised by the
    smoothed mask so that edges do not darken (normalised convolution); voxels outside the
    mask keep their values. ``sigma_mm`` <= 0 returns the input; ``in_place`` overwrites a
    float32 input instead of copying it.

    The Gaussian is applied as its Fourier transform exp(-2 pi^2 sigma^2 f^2) on the mask's
    in-plane bounding box, zero-padded by at least 8 sigma so that the FFT's wrap-around never
    reaches the data; a few frames at a time. (scipy.ndimage's direct convolution gives the same
    result to sampling of the kernel but takes several times longer on 256 x 256 frames.)
    """
    if sigma_mm <= 0:
        return delta_hu
    if in_place and delta_hu.dtype == np.float32:
        out = delta_hu
    else:
        out = np.array(delta_hu, dtype=np.float32, copy=True, order="K")
    if not mask.any():
        return out
    # time-major view (T, Z, Y, X): C-contiguous for NIfTI's Fortran-ordered arrays, so each
    # chunk of frames is a contiguous block and the FFT runs over its last two axes
    box = _bounding_box(mask.T)
    inside = np.ascontiguousarray(mask.T[box])
    size = inside.shape[1:]
    sigma_yx = sigma_mm / np.asarray(spacing_mm[1::-1], dtype=np.float64)
    padded = tuple(
        sp_fft.next_fast_len(n + 2 * int(np.ceil(4.0 * s)), real=True)
        for n, s in zip(size, sigma_yx, strict=True)
    )
    gain = _gaussian_gain(padded, sigma_yx)

    def blur(image: np.ndarray) -> np.ndarray:
        spectrum = sp_fft.rfft2(image, s=padded, axes=(-2, -1), workers=-1)
        spectrum *= gain
        return sp_fft.irfft2(spectrum, s=padded, axes=(-2, -1), workers=-1)[
            ..., : size[0], : size[1]
        ]

    weight = blur(inside.astype(np.float32))
    keep = inside & (weight > 1e-6)
    weight = np.where(keep, weight, np.float32(1.0))
    view = out.T[(slice(None), *box)]
    for start in range(0, view.shape[0], 8):
        frames = view[start : start + 8]
        smoothed = blur(np.where(inside, frames, np.float32(0.0))) / weight
        frames[...] = np.where(keep, smoothed, frames)
    return out


def _gaussian_gain(shape: tuple[int, int], sigma: np.ndarray) -> np.ndarray:
    """rfft2 multiplier (n0, n1 // 2 + 1) of a 2-D Gaussian with ``sigma`` voxels per axis."""
    fx = sp_fft.fftfreq(shape[0])
    fy = sp_fft.rfftfreq(shape[1])
    gx = np.exp(-2.0 * (np.pi * sigma[0] * fx) ** 2)
    gy = np.exp(-2.0 * (np.pi * sigma[1] * fy) ** 2)
    return (gx[:, None] * gy[None, :]).astype(np.float32)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding ``mask`` (any number of axes)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.nonzero(mask.any(axis=other))[0]
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


# ---------------------------------------------------------------------------------------------
# AIF / VOF and the standard frame


def _input_curves(
    case: Case, ctp: np.ndarray, baseline: np.ndarray, brain: np.ndarray, cfg: PreprocessConfig
) -> _Curves:
    """AIF/VOF: user ROI (``aif_voxel``) first, then ``aif.tsv``, then automatic selection.

    An explicit command-line voxel beats a file; a missing VOF is taken from the file, else
    from the automatic selection (when it finds one). ``ctp`` is raw HU, enhancement is taken
    against the provisional ``baseline`` image; :func:`_rebase` re-derives the curves once the
    final baseline is known.
    """
    times, r = case.frame_times_s, cfg.roi_radius_vox
    vof = vof_vox = vof_w = None
    if cfg.vof_voxel is not None:
        vof, vof_vox = roi_curve(ctp, list(cfg.vof_voxel), r, baseline)
    if cfg.aif_voxel is not None:
        aif, aif_vox = roi_curve(ctp, list(cfg.aif_voxel), r, baseline)
        if vof is None:
            vof, vof_vox, vof_w = _auto_vof(ctp, baseline, times, brain, case.spacing_mm, cfg)
        return _Curves(aif, vof, "roi", aif_vox, vof_vox, vof_weights=vof_w)
    if case.curves is not None:
        c = case.curves
        raw_aif = np.interp(times, c.time_s, c.aif_hu)
        raw_vof = None if c.vof_hu is None else np.interp(times, c.time_s, c.vof_hu)
        if vof is not None:  # a user VOF ROI beats the file's VOF
            raw_vof = None
        return _Curves(raw_aif, vof, "file", vof_voxels=vof_vox, raw=(raw_aif, raw_vof))
    sel = _select(ctp, times, brain, baseline, case.spacing_mm, cfg)
    if vof is None:
        vof, vof_vox, vof_w = sel.vof_hu, sel.vof_voxels, sel.vof_weights
    return _Curves(
        sel.aif_hu, vof, "auto", sel.aif_voxels, vof_vox, None, sel.aif_weights, vof_w, sel.scores
    )


def _select(
    ctp: np.ndarray, times: np.ndarray, brain: np.ndarray, baseline: np.ndarray, spacing, cfg
):
    """Automatic AIF among the brain's voxels whose baseline is brain, blood or bone, not air or
    fat (below ``brain_hu``'s lower bound); the VOF also within ``vof_search_mm`` of the brain."""
    hu = tuple(cfg.brain_hu)
    veins = venous_search_region(brain, baseline, spacing, cfg.vof_search_mm, hu)
    return select_aif_vof(
        ctp, times, brain, n_voxels=cfg.aif_n_voxels, baseline_hu=baseline,
        min_baseline_hu=hu[0], venous_region=veins,
    )  # fmt: skip


def _auto_vof(
    ctp: np.ndarray, baseline: np.ndarray, times: np.ndarray, brain: np.ndarray, spacing, cfg
) -> tuple:
    """(VOF, voxels, weights) of the automatic selection, or Nones when it finds no AIF."""
    try:
        sel = _select(ctp, times, brain, baseline, spacing, cfg)
    except PerfusionError:
        return None, None, None
    return sel.vof_hu, sel.vof_voxels, sel.vof_weights


def _rebase(curves: _Curves, delta: np.ndarray, base_w: np.ndarray) -> _Curves:
    """Curves re-derived after the baseline changed: (weighted) voxel means of ``delta``, or the
    file's curves minus their baseline (``base_w``-weighted mean of frames)."""

    def voxel_mean(vox, weights, fallback: np.ndarray | None) -> np.ndarray | None:
        if vox is None or len(vox) == 0:
            return fallback
        values = delta[vox[:, 0], vox[:, 1], vox[:, 2]].astype(np.float64)
        return values.mean(axis=0) if weights is None else weights @ values

    aif = voxel_mean(curves.aif_voxels, curves.aif_weights, curves.aif_hu)
    vof = voxel_mean(curves.vof_voxels, curves.vof_weights, curves.vof_hu)
    if curves.raw is not None:
        raw_aif, raw_vof = curves.raw
        aif = raw_aif - base_w @ raw_aif / base_w.sum()
        if raw_vof is not None:
            vof = raw_vof - base_w @ raw_vof / base_w.sum()
    return replace(curves, aif_hu=aif, vof_hu=vof)


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
    confident = None
    if curves.scores:
        confident = selection_confident(curves.scores)
        if not confident:
            flags.append("aif_selection_not_confident")
    meta["aif"] = {
        "source": curves.source,
        "confidence": curves.scores.get("confidence"),
        "runner_up_r": curves.scores.get("runner_up_r"),
        "confident": confident,
        "vof_scale": scale,
        "flags": flags,
        "peak_hu_measured": float(curves.aif_hu.max()),
        "peak_hu": float(aif.max()),
        "aif_voxels": None if curves.aif_voxels is None else curves.aif_voxels.tolist(),
        "vof_voxels": None if curves.vof_voxels is None else curves.vof_voxels.tolist(),
        "aif_weights": _rounded(curves.aif_weights),
        "vof_weights": _rounded(curves.vof_weights),
    }
    return np.asarray(aif, dtype=np.float64), curves.vof_hu


def _rounded(weights: np.ndarray | None) -> list[float] | None:
    return None if weights is None else np.round(weights, 4).tolist()


def _motion(
    case: Case, cfg: PreprocessConfig, meta: dict, say: Callable[[str], None]
) -> MotionResult | None:
    """The motion-corrected frames with their transforms and coverage, or None without motion
    correction (off, or nothing rigid to register: ``meta["motion"]["skipped"]`` says why);
    per-frame parameters go into ``meta``."""
    if not cfg.motion_correction:
        return None
    reference = reference_index(cfg.reference_frame, case.ctp_hu.shape[3], case.path)
    reason = nothing_to_register(case.ctp_hu[..., reference], cfg.motion_bone_hu)
    if reason is not None:
        say(f"motion correction skipped: {reason} (nothing rigid to register)")
        meta["motion"] = {"skipped": reason}
        return None
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
        min_shift_vox=cfg.motion_min_shift_vox,
    )
    meta["motion"] = {**motion.summary(), "params": motion.params.round(4).tolist()}
    return motion


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
    after = np.nonzero(times > arrival_s)[0]
    enhancement = np.zeros(brain.shape, dtype=np.float64)
    for t in after:  # frame by frame: no 4-D temporary
        enhancement += delta[..., t]
    enhancement /= max(after.size, 1)
    csf = csf_mask(baseline, enhancement, brain, cfg.csf_max_hu, cfg.csf_enhancement_fraction)
    # one-frame temporal smoothing before the peak keeps noise spikes out of the vessel mask
    region = brain & ~csf
    peak = np.zeros(brain.shape, dtype=np.float32)
    curves = np.stack([delta[..., t][region] for t in range(delta.shape[3])], axis=-1)
    peak[region] = smooth_in_time(curves, times, float(np.median(np.diff(times)))).max(-1)
    vessels = vessel_mask(peak, region, aif_peak_hu, cfg.vessel_min_hu, cfg.vessel_aif_fraction)
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
