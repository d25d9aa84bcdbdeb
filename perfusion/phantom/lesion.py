"""Ischemic lesions shaped by a vascular territory: part of one MCA territory, from a random field.

The MCA territory is approximated in MNI mm (no vascular atlas ships offline): the hemisphere of
the lesion side minus the anterior cerebral artery strip (medial, superior, anterior to the
parieto-occipital sulcus), minus the posterior cerebral artery region (occipital lobe, inferior
temporal/medial structures, thalamus) and the posterior fossa; its borders are displaced by a
smooth random field (~6 mm) per patient. Inside it, a severity field (a smooth random field
plus a decay away from a random focus, as an occluded branch's territory) is ranked: the most
severe ``volume`` of tissue is hypoperfused, the most severe part of that is the core, so the core
always lies inside the penumbra's outline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfusion.phantom.random_fields import smooth_fields


def mca_territory(xyz_mm: np.ndarray, side: int, jitter_mm: np.ndarray) -> np.ndarray:
    """Bool (N,) MCA territory of ``side`` (+1 right, -1 left) at MNI points (N, 3).

    ``jitter_mm`` (3, N) displaces the coordinates so each patient's borders differ.
    """
    x, y, z = (xyz_mm.T + jitter_mm).astype(np.float64)
    aca = (np.abs(x) < 16.0 + 0.15 * np.maximum(z - 20.0, 0.0)) & (y > -65.0) & (z > 0.0)
    pca = (
        (y < -68.0)
        | ((z < 0.0) & (y < -35.0))
        | ((np.abs(x) < 20) & (y < -5) & (y > -38) & (z > -6) & (z < 16))
    )
    fossa = z < -28.0
    return (side * x > 3.0) & ~aca & ~pca & ~fossa


@dataclass
class Lesion:
    """Lesion of one patient on the flattened candidate voxels (N,).

    Attributes:
        core, penumbra: bool (N,) disjoint masks.
        severity: float64 (N,) in [0, 1] within the penumbra (0 at its rim, 1 next to the core).
        meta: side, focus, target and actual volumes, parameter factors.
    """

    core: np.ndarray
    penumbra: np.ndarray
    severity: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def no_lesion(n: int) -> Lesion:
    return Lesion(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n), {"present": False})


def make_lesion(
    rng: np.random.Generator, xyz_mm: np.ndarray, eligible: np.ndarray, voxel_ml: float, cfg
) -> Lesion:
    """Draw a territory-shaped lesion among ``eligible`` (N,) voxels at MNI points (N, 3)."""
    # A uniform draw, not rng.choice([-1, 1]): for some seeds (1000, the meta-learning cohort's)
    # the latter gave the same side to every patient after the lesion-probability draw.
    side = 1 if rng.random() < 0.5 else -1
    jitter = 6.0 * smooth_fields(rng, xyz_mm, [25.0, 25.0, 25.0])
    territory = eligible & mca_territory(xyz_mm, side, jitter)
    candidates = np.nonzero(territory)[0]
    if candidates.size == 0:
        return no_lesion(xyz_mm.shape[0])
    focus = xyz_mm[rng.choice(candidates)].astype(np.float64)
    texture = smooth_fields(rng, xyz_mm[candidates], [12.0, 8.0])
    distance = np.linalg.norm(xyz_mm[candidates] - focus, axis=1)
    score = 0.6 * texture[0] - distance / 25.0
    target_ml = float(np.exp(rng.uniform(*np.log(cfg.lesion_volume_ml))))
    n_hypo = int(np.clip(round(target_ml / voxel_ml), 1, candidates.size))
    order = np.argsort(-score, kind="stable")
    hypo = candidates[order[:n_hypo]]
    core_share = float(rng.uniform(*cfg.core_fraction))
    n_core = int(np.clip(round(core_share * n_hypo), 1, n_hypo))
    core_score = score[order[:n_hypo]] + 0.25 * texture[1][order[:n_hypo]]
    core_idx = hypo[np.argsort(-core_score, kind="stable")[:n_core]]
    core = np.zeros(xyz_mm.shape[0], bool)
    core[core_idx] = True
    penumbra = np.zeros_like(core)
    penumbra[hypo] = True
    penumbra &= ~core
    severity = np.zeros(xyz_mm.shape[0])
    ranks = np.empty(n_hypo)
    ranks[np.argsort(score[order[:n_hypo]])] = np.linspace(0.0, 1.0, n_hypo)
    severity[hypo] = ranks
    meta = {
        "present": True, "side": "right" if side > 0 else "left", "focus_mni_mm": focus,
        "target_hypoperfused_ml": target_ml, "core_share": core_share,
        "territory_ml": float(candidates.size * voxel_ml),
    }  # fmt: skip
    return Lesion(core, penumbra, np.where(penumbra, severity, 0.0), meta)
