"""Perfusion parameters per voxel: grey/white matter levels, smooth variation, delay, lesion.

Each voxel mixes grey and white matter (volume fractions from the anatomy; CSF adds nothing).
Flow and volume are additive over compartments, so a voxel's CBF = f_gm CBF_gm + f_wm CBF_wm and
CBV likewise; its MTT = 60 CBV / CBF (central volume theorem) and it follows Eq. (1) with one
box (or other residue) of that MTT, so the fit's model is exact at every voxel. Healthy levels:
(GM CBF 60, MTT 4 s; WM CBF 22, MTT 5 s), each patient scaled by
N(1, patient_sd) and varied in space by exp(spatial_sd * smooth field). Lesions (``lesion.py``):
core CBF x ``core_cbf_factor`` (varied voxel by voxel with ``core_cbf_sd``), MTT x
``core_mtt_factor`` (CBV x their product); penumbra CBV kept, MTT x
``penumbra_mtt_factor`` (so CBF falls by the same factor), graded by severity; both delayed by
``lesion_extra_delay_s`` and kept at true Tmax >= ``tmax_lesion_min_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perfusion.phantom.lesion import Lesion
from perfusion.phantom.random_fields import smooth_fields
from perfusion.phantom.signal import CENTROID_FRACTION
from perfusion.units import cbv_from_cbf_mtt

CORE_FIELD_MM = 6.0
"""Correlation length (mm) of the core's CBF field (``core_cbf_sd``), as the lesion's severity."""


@dataclass
class VoxelParams:
    """Parameters of N voxels: ``cbf`` ml/100g/min, ``cbv`` ml/100g, ``mtt_s``, ``delay_s``, ``tmax_s``."""

    cbf: np.ndarray
    cbv: np.ndarray
    mtt_s: np.ndarray
    delay_s: np.ndarray
    tmax_s: np.ndarray
    meta: dict[str, Any]


def _draw(rng: np.random.Generator, low_high: list[float]) -> float:
    return float(rng.uniform(low_high[0], low_high[1]))


def voxel_params(
    rng: np.random.Generator,
    xyz_mm: np.ndarray,
    gm: np.ndarray,
    wm: np.ndarray,
    lesion: Lesion,
    cfg,
) -> VoxelParams:
    """Parameters of voxels with grey/white fractions ``gm``, ``wm`` (N,) at MNI points (N, 3)."""
    levels = {
        "gm_cbf": cfg.gm_cbf * (1 + cfg.patient_sd * rng.standard_normal()),
        "gm_mtt_s": cfg.gm_mtt_s * (1 + cfg.patient_sd * rng.standard_normal()),
        "wm_cbf": cfg.wm_cbf * (1 + cfg.patient_sd * rng.standard_normal()),
        "wm_mtt_s": cfg.wm_mtt_s * (1 + cfg.patient_sd * rng.standard_normal()),
    }
    f_cbf, f_mtt, f_delay = smooth_fields(rng, xyz_mm, [20.0, 20.0, 30.0])
    vary_cbf, vary_mtt = np.exp(cfg.spatial_sd * f_cbf), np.exp(cfg.spatial_sd * f_mtt)
    cbf = {k: levels[f"{k}_cbf"] * vary_cbf for k in ("gm", "wm")}
    mtt = {k: levels[f"{k}_mtt_s"] * vary_mtt for k in ("gm", "wm")}
    delay = cfg.delay_s[0] + (cfg.delay_s[1] - cfg.delay_s[0]) * 0.5 * (1 + np.tanh(f_delay))
    cbf_factor, mtt_factor, extra_delay, factors = lesion_effects(rng, lesion, cfg)
    if cfg.core_cbf_sd > 0:  # drawn last: phantoms without it keep their random stream
        (f_core,) = smooth_fields(rng, xyz_mm, [CORE_FIELD_MM])
        cbf_factor = np.where(
            lesion.core, cbf_factor * np.exp(cfg.core_cbf_sd * f_core), cbf_factor
        )
    delay = delay + extra_delay
    total_cbf = gm * cbf["gm"] + wm * cbf["wm"]
    total_cbv = gm * cbv_from_cbf_mtt(cbf["gm"], mtt["gm"]) + wm * cbv_from_cbf_mtt(
        cbf["wm"], mtt["wm"]
    )
    total_cbf, total_cbv = total_cbf * cbf_factor, total_cbv * cbf_factor * mtt_factor
    mtt_s = 60.0 * total_cbv / np.maximum(total_cbf, 1e-12)
    centroid = CENTROID_FRACTION[cfg.residue] * mtt_s
    hypo = lesion.core | lesion.penumbra
    delay = np.where(hypo, np.maximum(delay, cfg.tmax_lesion_min_s - centroid), delay)
    meta = {
        "levels": levels,
        "lesion_factors": factors,
        "tmax_convention_centroid": CENTROID_FRACTION[cfg.residue],
    }
    return VoxelParams(total_cbf, total_cbv, mtt_s, delay, delay + centroid, meta)


def lesion_effects(
    rng: np.random.Generator, lesion: Lesion, cfg
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Per-voxel CBF factor, MTT factor and extra delay (s) of the lesion, and the drawn factors.

    The penumbra is graded from its rim (severity 0: 60 % of the effect) to the core (100 %).
    """
    factors = {
        "core_cbf": _draw(rng, cfg.core_cbf_factor), "core_mtt": _draw(rng, cfg.core_mtt_factor),
        "penumbra_mtt_max": _draw(rng, cfg.penumbra_mtt_factor),
        "extra_delay_max_s": _draw(rng, cfg.lesion_extra_delay_s),
    }  # fmt: skip
    grade = np.where(lesion.core, 1.0, 0.6 + 0.4 * lesion.severity)
    mtt_factor = np.where(lesion.penumbra, 1 + (factors["penumbra_mtt_max"] - 1) * grade, 1.0)
    mtt_factor = np.where(lesion.core, factors["core_mtt"], mtt_factor)
    cbf_factor = np.where(lesion.core, factors["core_cbf"], 1.0 / mtt_factor)
    extra_delay = np.where(lesion.core | lesion.penumbra, factors["extra_delay_max_s"] * grade, 0.0)
    return cbf_factor, mtt_factor, extra_delay, factors
