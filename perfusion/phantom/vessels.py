"""Large vessels as tubes around MNI centre lines, rasterised with partial volume.

No vascular atlas ships offline with nilearn, so the centre lines are hand-placed in MNI mm from
standard neuroanatomy: internal carotid arteries (ICA) rising to the terminus, middle cerebral
arteries (M1 lateral to the Sylvian fissure, M2 over the insula), the basilar artery; the superior
sagittal sinus (SSS) follows the midline brain surface 4 mm outside it, with the transverse
sinuses from the torcular. Occupancy (the vessel's volume fraction in a voxel) is measured by
4 x 4 x 4 sub-voxel sampling, so small arteries are partial-volume diluted as in real CTP.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from perfusion.phantom.anatomy import Anatomy, _template_channels

# (x, y, z) MNI mm and radius mm per control point; x > 0 is the right hemisphere (RAS).
_RIGHT_MCA = [(15, 2, -14, 1.7), (25, 4, -12, 1.6), (35, 4, -8, 1.5), (40, -4, 0, 1.3),
              (42, -16, 8, 1.1), (45, -30, 18, 1.0)]  # fmt: skip
_RIGHT_ICA = [(16, 2, -42, 2.2), (16, 4, -28, 2.2), (15, 2, -14, 2.0)]
_BASILAR = [(0, -26, -42, 1.6), (0, -20, -20, 1.5), (0, -16, -12, 1.4)]
_RIGHT_TRANSVERSE = [
    (2, -102, -6, 3.5),
    (22, -100, -10, 3.0),
    (42, -90, -14, 3.0),
    (54, -72, -20, 3.0),
]
SSS_RADIUS_MM = 3.8
SSS_OFFSET_MM = 4.0


def _mirror(points: list[tuple]) -> list[tuple]:
    return [(-x, y, z, r) for x, y, z, r in points]


@functools.lru_cache(maxsize=1)
def _sss_centreline() -> tuple[tuple[float, float, float, float], ...]:
    """SSS control points: rays in the midsagittal plane from the brain centre to the surface."""
    channels, affine = _template_channels()
    brain = channels[:3].sum(axis=0) > 0.5
    mid = int(round((0.0 - affine[0, 3]) / affine[0, 0]))
    sagittal = brain[mid - 3 : mid + 4].any(axis=0)  # across the interhemispheric fissure
    centre = np.array([-18.0, 10.0])  # (y, z) MNI mm
    points = []
    for angle in np.deg2rad(np.arange(20.0, 205.0, 15.0)):
        direction = np.array([np.cos(angle), np.sin(angle)])
        radii = np.arange(0.0, 120.0, 0.5)
        yz = centre + radii[:, None] * direction
        j = np.round((yz[:, 0] - affine[1, 3]) / affine[1, 1]).astype(int)
        k = np.round((yz[:, 1] - affine[2, 3]) / affine[2, 2]).astype(int)
        ok = (j >= 0) & (j < sagittal.shape[0]) & (k >= 0) & (k < sagittal.shape[1])
        inside = np.zeros(radii.size, bool)
        inside[ok] = sagittal[j[ok], k[ok]]
        r = radii[np.nonzero(inside)[0][-1]] + SSS_OFFSET_MM
        y, z = centre + r * direction
        points.append((0.0, float(y), float(z), SSS_RADIUS_MM))
    return tuple(points)


def vessel_tree() -> dict[str, list[tuple]]:
    """Named centre lines, each a list of (x, y, z, radius) in MNI mm; ``kind`` from the name."""
    return {
        "artery_ica_right": _RIGHT_ICA, "artery_ica_left": _mirror(_RIGHT_ICA),
        "artery_mca_right": _RIGHT_MCA, "artery_mca_left": _mirror(_RIGHT_MCA),
        "artery_basilar": _BASILAR,
        "vein_sss": list(_sss_centreline()),
        "vein_transverse_right": _RIGHT_TRANSVERSE, "vein_transverse_left": _mirror(_RIGHT_TRANSVERSE),
    }  # fmt: skip


def _densify(points: list[tuple], step_mm: float = 0.25) -> np.ndarray:
    """(M, 4) samples every ``step_mm`` along the polyline, radius linearly interpolated."""
    p = np.asarray(points, dtype=np.float64)
    out = []
    for a, b in zip(p[:-1], p[1:], strict=True):
        n = max(2, int(np.ceil(np.linalg.norm(b[:3] - a[:3]) / step_mm)))
        out.append(a + np.linspace(0.0, 1.0, n, endpoint=False)[:, None] * (b - a))
    out.append(p[-1:])
    return np.concatenate(out)


@dataclass
class Vessels:
    """Occupancy maps (X, Y, Z) float32 in [0, 1]: ``arterial``, ``venous``, and per-vessel labels."""

    arterial: np.ndarray
    venous: np.ndarray
    per_vessel: dict[str, np.ndarray]


def rasterise_vessels(anatomy: Anatomy, sub_mm: float = 0.9) -> Vessels:
    """Occupancy of every vessel on the scan grid by sub-voxel sampling (~``sub_mm``) in MNI space.

    Each sub-voxel sample counts for the vessel whose centre line is nearest when it lies within
    that vessel's radius (MNI mm; the head's scaling changes it by a few percent).
    """
    shape = anatomy.mni_mm.shape[:3]
    spacing = np.linalg.norm(anatomy.affine[:3, :3], axis=0)
    names = list(vessel_tree())
    lines = [_densify(points) for points in vessel_tree().values()]
    line, label = np.concatenate(lines), np.repeat(np.arange(len(lines)), [len(x) for x in lines])
    tree = cKDTree(line[:, :3])
    # a voxel can hold vessel only if its centre lies within radius + half-diagonal (MNI mm;
    # 1 mm slack for the warp's stretching)
    reach = 0.5 * float(np.linalg.norm(spacing)) / float(np.min(anatomy.pose.scale)) + 1.0
    centres = anatomy.mni_mm.reshape(-1, 3)
    low, high = (
        line[:, :3].min(0) - line[:, 3].max() - reach,
        line[:, :3].max(0) + line[:, 3].max() + reach,
    )
    box = np.nonzero(np.all((centres >= low) & (centres <= high), axis=1))[0]
    dist, nearest = tree.query(
        centres[box].astype(np.float64), distance_upper_bound=line[:, 3].max() + reach
    )
    ok = dist < np.inf
    near = box[ok][dist[ok] <= line[nearest[ok], 3] + reach]
    occupancy = np.zeros((len(names), centres.shape[0]), dtype=np.float32)
    if near.size:
        sub = np.clip(np.ceil(spacing / sub_mm), 1, 6).astype(int)  # coarse grids: <= 216 samples
        grid = np.stack(np.meshgrid(*[np.arange(k) for k in sub], indexing="ij"), -1).reshape(-1, 3)
        offsets = (grid + 0.5) / sub - 0.5
        ijk = np.stack(np.unravel_index(near, shape), -1).astype(np.float64)
        samples = (ijk[:, None, :] + offsets[None]).reshape(-1, 3)
        scan = samples @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3]
        d, nearest = tree.query(anatomy.pose.to_mni(scan))
        hit = d <= line[nearest, 3]
        owner = np.repeat(np.arange(near.size), offsets.shape[0])
        np.add.at(occupancy, (label[nearest[hit]], near[owner[hit]]), 1.0 / offsets.shape[0])
    per_vessel = {n: occupancy[i].reshape(shape) for i, n in enumerate(names)}
    arterial = sum(v for k, v in per_vessel.items() if k.startswith("artery"))
    venous = sum(v for k, v in per_vessel.items() if k.startswith("vein"))
    return Vessels(np.clip(arterial, 0, 1), np.clip(venous, 0, 1), per_vessel)


def roi_voxels(occupancy: np.ndarray, n: int) -> np.ndarray:
    """(n, 3) voxel indices of the ``n`` highest-occupancy voxels (ties by index), highest first."""
    flat = occupancy.ravel()
    order = np.argsort(-flat, kind="stable")[:n]
    order = order[flat[order] > 0]
    return np.stack(np.unravel_index(order, occupancy.shape), -1)
