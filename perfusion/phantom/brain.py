"""One brain phantom patient: anatomy, vessels, lesion, parameters, curves, noise and truth.

Every random choice of patient ``index`` comes from ``SeedSequence([seed, index])``, split into
independent streams per stage, so a patient is the same whatever ``n`` is and changing, say, the
noise leaves the anatomy and lesion unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfusion.clinical import TMAX_PENUMBRA_S
from perfusion.io import Case, InputCurves
from perfusion.phantom.anatomy import Anatomy, make_anatomy, random_pose
from perfusion.phantom.config import PhantomConfig
from perfusion.phantom.inputs import InputFunctions, frame_times, parametric_inputs, real_inputs
from perfusion.phantom.lesion import make_lesion, no_lesion
from perfusion.phantom.noise import add_noise, apply_motion, motion_transforms
from perfusion.phantom.physiology import voxel_params
from perfusion.phantom.signal import TMAX_CONVENTIONS, check_residue, tissue_curves
from perfusion.phantom.vessels import Vessels, rasterise_vessels, roi_voxels
from perfusion.units import cbf_to_flow

BLOOD_HU = 40.0
STREAMS = ("pose", "inputs", "lesion", "physiology", "motion", "noise")


@dataclass
class PhantomPatient:
    """A generated patient: the ``case`` (what a scanner gives), ``truth`` maps (X, Y, Z) keyed
    by name, the true input curves at the frame times, and ``meta`` (every parameter)."""

    case: Case
    truth: dict[str, np.ndarray]
    true_curves: InputCurves
    meta: dict[str, Any] = field(default_factory=dict)


def patient_rngs(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent generators per stage for patient ``index`` of cohort ``seed``."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(len(STREAMS))
    return {
        name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)
    }


def make_inputs(rng: np.random.Generator, cfg: PhantomConfig) -> InputFunctions:
    """The patient's true AIF/VOF and frame times from ``cfg.aif_source``."""
    if cfg.aif_source == "parametric":
        times = frame_times(cfg.n_frames, cfg.frame_interval_s, cfg.truncate_s)
        return parametric_inputs(rng, times, cfg)
    return real_inputs(
        rng, cfg.aif_source, cfg.aif_case, cfg.frame_interval_s, cfg.n_frames, cfg.truncate_s
    )


def make_patient(cfg: PhantomConfig, index: int) -> PhantomPatient:
    """Generate brain phantom patient ``index`` of the cohort ``cfg.seed``."""
    check_residue(cfg.residue)
    start = time.perf_counter()
    rngs = patient_rngs(cfg.seed, index)
    spacing = np.asarray(cfg.fov_mm, dtype=np.float64) / np.asarray(cfg.shape)
    anatomy = make_anatomy(list(cfg.shape), spacing, random_pose(rngs["pose"], cfg))
    vessels = rasterise_vessels(anatomy)
    inputs = make_inputs(rngs["inputs"], cfg)
    truth, meta = _physiology(anatomy, rngs, cfg)
    ctp, baseline, meta["enhancement"] = _signal(anatomy, vessels, inputs, truth, cfg)
    rois, aif_vessel = _curve_rois(vessels, meta, rngs, cfg)
    still = moved = None
    if cfg.motion:
        still = _read_rois(ctp, rois)  # before the motion
        transforms = motion_transforms(rngs["motion"], ctp.shape[3], cfg.motion_mm, cfg.motion_deg)
        apply_motion(ctp, anatomy.affine, transforms)
        meta["motion_frame_to_reference"] = transforms
        moved = _read_rois(ctp, rois)
    add_noise(
        rngs["noise"], ctp, cfg.noise_hu, cfg.noise_texture, cfg.noise_correlation_mm, spacing
    )
    roi_hu = _read_rois(ctp, rois)
    if still is not None:  # as on perfectly motion-corrected frames: the anatomy kept still
        roi_hu = {k: still[k] + (roi_hu[k] - moved[k]) for k in rois}
    measured = _measured_curves(roi_hu, rois, baseline, inputs)
    meta["curves"] = _curves_meta(rois, aif_vessel, vessels)
    case = Case(
        path=None, ctp_hu=ctp, affine=anatomy.affine, frame_times_s=inputs.frame_times_s,
        curves=measured if cfg.write_aif else None, brainmask=anatomy.brain,
        core=truth["core"] > 0,
    )  # fmt: skip
    truth["vessels"] = np.maximum(vessels.arterial, vessels.venous)
    truth["baseline_hu"] = baseline
    times = inputs.frame_times_s
    true_curves = InputCurves(times, inputs.aif_at(times), inputs.vof_at(times), "truth")
    meta.update(
        kind="brain", index=index, seed=cfg.seed, shape=list(cfg.shape), spacing_mm=spacing,
        affine=anatomy.affine, frame_times_s=times, pose=anatomy.pose.as_dict(),
        inputs=inputs.meta, residue=cfg.residue, tmax_convention=TMAX_CONVENTIONS[cfg.residue],
        noise={"sigma_hu": cfg.noise_hu, "texture": cfg.noise_texture,
               "correlation_mm": cfg.noise_correlation_mm},
        generation_s=time.perf_counter() - start,
    )  # fmt: skip
    return PhantomPatient(case, truth, true_curves, meta)


def _physiology(
    anatomy: Anatomy, rngs: dict[str, np.random.Generator], cfg: PhantomConfig
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Truth maps (cbf, cbv, mtt, delay, tmax, core, penumbra, csf, labels) and their meta."""
    shape = anatomy.fractions.shape[1:]
    gm, wm = anatomy.channel("gm"), anatomy.channel("wm")
    voxels = np.nonzero((gm + wm).ravel() > 1e-3)[0]
    xyz = anatomy.mni_mm.reshape(-1, 3)[voxels]
    eligible = (anatomy.brain & (anatomy.tissue >= 0.5)).ravel()[voxels]
    voxel_ml = float(np.prod(np.linalg.norm(anatomy.affine[:3, :3], axis=0))) / 1000.0
    if rngs["lesion"].random() < cfg.lesion_probability:
        lesion = make_lesion(rngs["lesion"], xyz, eligible, voxel_ml, cfg)
    else:
        lesion = no_lesion(voxels.size)
    params = voxel_params(
        rngs["physiology"], xyz, gm.ravel()[voxels], wm.ravel()[voxels], lesion, cfg
    )
    truth = {}
    for name, values in (("cbf", params.cbf), ("cbv", params.cbv), ("mtt", params.mtt_s),
                         ("delay", params.delay_s), ("tmax", params.tmax_s),
                         ("core", lesion.core), ("penumbra", lesion.penumbra)):  # fmt: skip
        grid = np.zeros(int(np.prod(shape)), dtype=np.float32)
        grid[voxels] = values
        truth[name] = grid.reshape(shape)
    truth["core"], truth["penumbra"] = truth["core"] > 0, truth["penumbra"] > 0
    truth["csf"] = anatomy.brain & (anatomy.channel("csf") >= 0.5)
    lesion.meta.update(
        core_ml=float(lesion.core.sum() * voxel_ml), penumbra_ml=float(lesion.penumbra.sum() * voxel_ml),
        tmax_gt6_ml=float(((truth["tmax"] > TMAX_PENUMBRA_S) & anatomy.brain).sum() * voxel_ml),
    )  # fmt: skip
    return truth, {
        "lesion": lesion.meta,
        "physiology": params.meta,
        "brain_ml": float(anatomy.brain.sum() * voxel_ml),
    }


def _signal(
    anatomy: Anatomy, vessels: Vessels, inputs: InputFunctions, truth: dict[str, np.ndarray],
    cfg: PhantomConfig,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:  # fmt: skip
    """Noiseless CTP (X, Y, Z, T) float32 HU, its baseline (X, Y, Z) and enhancement levels."""
    occupancy = np.clip(vessels.arterial + vessels.venous, 0.0, 1.0)
    baseline = (1 - occupancy) * anatomy.baseline_hu() + occupancy * BLOOD_HU
    times = inputs.frame_times_s
    ctp = np.repeat(baseline[..., None], times.size, axis=3).astype(np.float32)
    perfused = truth["cbf"] > 0
    curves = tissue_curves(
        inputs, cbf_to_flow(truth["cbf"][perfused].astype(np.float64)),
        truth["mtt"][perfused].astype(np.float64), truth["delay"][perfused].astype(np.float64), cfg.residue,
    )  # fmt: skip
    ctp[perfused] += (1 - occupancy[perfused])[:, None] * curves
    for occ, curve in (
        (vessels.arterial, inputs.aif_at(times)),
        (vessels.venous, inputs.vof_at(times)),
    ):
        inside = occ > 0
        ctp[inside] += occ[inside][:, None] * curve[None, :].astype(np.float32)
    gm_voxels = (
        (anatomy.channel("gm")[perfused] > 0.7)
        & ~truth["penumbra"][perfused]
        & ~truth["core"][perfused]
    )
    wm_voxels = (
        (anatomy.channel("wm")[perfused] > 0.7)
        & ~truth["penumbra"][perfused]
        & ~truth["core"][perfused]
    )
    levels = {
        "true_aif_peak_hu": float(inputs.aif_at(times).max()),
        "true_vof_peak_hu": float(inputs.vof_at(times).max()),
        "gm_peak_hu_median": float(np.median(curves[gm_voxels].max(axis=1))) if gm_voxels.any() else 0.0,
        "wm_peak_hu_median": float(np.median(curves[wm_voxels].max(axis=1))) if wm_voxels.any() else 0.0,
    }  # fmt: skip
    return ctp, baseline.astype(np.float32), levels


def _curve_rois(
    vessels: Vessels, meta: dict[str, Any], rngs: dict[str, np.random.Generator],
    cfg: PhantomConfig,
) -> tuple[dict[str, np.ndarray], str]:  # fmt: skip
    """(N, 3) voxels of the AIF ROI, in the MCA opposite the lesion (random side without one),
    and of the VOF ROI, in the SSS; and the AIF's vessel."""
    side = meta["lesion"].get("side") or str(rngs["lesion"].choice(["left", "right"]))
    aif_vessel = "artery_mca_" + ("left" if side == "right" else "right")
    return {
        "aif": roi_voxels(vessels.per_vessel[aif_vessel], cfg.curve_roi_voxels),
        "vof": roi_voxels(vessels.per_vessel["vein_sss"], cfg.curve_roi_voxels),
    }, aif_vessel


def _read_rois(ctp: np.ndarray, rois: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each ROI's (N, T) HU in ``ctp``, a copy (the scan is moved and noised in place after)."""
    return {k: ctp[tuple(v.T)] for k, v in rois.items()}


def _measured_curves(
    roi_hu: dict[str, np.ndarray], rois: dict[str, np.ndarray], baseline: np.ndarray,
    inputs: InputFunctions,
) -> InputCurves:  # fmt: skip
    """``aif.tsv``'s curves: the means of the ROIs' noisy HU (``roi_hu``, (N, T) each) above
    their true baseline."""
    means = {k: (roi_hu[k] - baseline[tuple(v.T)][:, None]).mean(axis=0) for k, v in rois.items()}
    return InputCurves(
        inputs.frame_times_s,
        means["aif"].astype(np.float64),
        means["vof"].astype(np.float64),
        "phantom",
    )


def _curves_meta(rois: dict[str, np.ndarray], aif_vessel: str, vessels: Vessels) -> dict:
    """Where ``aif.tsv``'s curves were measured, for truth/meta.json."""
    return {
        "aif_vessel": aif_vessel, "aif_voxels": rois["aif"], "vof_vessel": "vein_sss",
        "vof_voxels": rois["vof"],
        "aif_mean_occupancy": float(vessels.arterial[tuple(rois["aif"].T)].mean()),
        "vof_mean_occupancy": float(vessels.venous[tuple(rois["vof"].T)].mean()),
        "aif_tsv": "ΔHU above the true pre-contrast baseline: mean over the ROI voxels of the "
        "noisy scan (partial volume and noise included; with motion, as on perfectly "
        "motion-corrected frames); true curves in truth/curves.tsv",
    }  # fmt: skip
