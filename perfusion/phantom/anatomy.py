"""Patient anatomy: the MNI152 templates nilearn ships, posed, warped and resampled to a CTP grid.

Tissue classes come from nilearn's offline 1 mm MNI152 grey/white-matter probability templates
and brain mask (``load_mni152_*``; the ``fetch_*`` atlases need a network). CSF is the part of
the brain mask that is neither grey nor white matter (ventricles, sulci); an extra-axial CSF
layer, a skull and a scalp are shells at fixed distances outside the brain mask. Each patient's
scan voxel ``p`` (scanner mm) maps to MNI mm by ``x = c + S^-1 R^T (p - t) + u(p)``: rigid pose
(R, t), per-axis head scaling S and a smooth Fourier warp u (see :mod:`random_fields`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, map_coordinates

from perfusion.phantom.random_fields import apply_warp, fourier_warp

TEMPLATE_STEP_MM = 2.0
CHANNELS = ("gm", "wm", "csf", "extra_csf", "bone", "scalp")
"""Volume fractions sampled per voxel; air fills the rest."""
SHELLS_MM = {"extra_csf": (0.0, 3.0), "bone": (3.0, 10.0), "scalp": (10.0, 15.0)}
"""Distance bands (mm) outside the brain mask: subarachnoid CSF, skull (~7 mm), scalp."""
BASELINE_HU = {"gm": 40.0, "wm": 31.0, "csf": 6.0, "extra_csf": 6.0, "bone": 1100.0, "scalp": 35.0}
AIR_HU = -1000.0
BRAIN_CENTRE_MNI = np.array([0.0, -18.0, 6.0])
"""MNI point placed at the scan centre before the random translation (mid-brain)."""


@functools.lru_cache(maxsize=1)
def _template_channels() -> tuple[np.ndarray, np.ndarray]:
    """Channels (6, X, Y, Z) at 2 mm and their voxel-to-MNI affine; loaded once per process."""
    from nilearn import datasets  # slow import, only when a brain phantom is made

    def load(fn) -> np.ndarray:
        data = np.asarray(fn(resolution=1).get_fdata(), dtype=np.float32)[:196, :232, :188]
        # 2x2x2 block means: 1 mm -> 2 mm fractions without resampling artefacts
        return data.reshape(98, 2, 116, 2, 94, 2).mean(axis=(1, 3, 5))

    gm = np.clip(load(datasets.load_mni152_gm_template), 0, 1)
    wm = np.clip(load(datasets.load_mni152_wm_template), 0, 1)
    brain = np.clip(load(datasets.load_mni152_brain_mask), 0, 1)
    total = gm + wm
    over = np.maximum(total / np.maximum(brain, 1e-6), 1.0)  # fractions never exceed the mask
    gm, wm = gm / over * (brain > 0), wm / over * (brain > 0)
    csf = np.clip(brain - gm - wm, 0, 1)
    outside = distance_transform_edt(brain < 0.5) * TEMPLATE_STEP_MM
    shells = [
        ((outside > lo) & (outside <= hi)).astype(np.float32) for lo, hi in SHELLS_MM.values()
    ]
    channels = np.stack([gm, wm, csf, *shells]).astype(np.float32)
    affine = np.diag([TEMPLATE_STEP_MM] * 3 + [1.0])
    affine[:3, 3] = [-97.5, -133.5, -71.5]  # centre of the first 2x2x2 block of the 1 mm grid
    return channels, affine


@functools.lru_cache(maxsize=4)
def _filtered_channels(spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Channels blurred by the scan voxel's footprint (box of the spacing ~ Gaussian sd/sqrt 12)."""
    channels, _ = _template_channels()
    sigma = np.asarray(spacing_mm) / np.sqrt(12.0) / TEMPLATE_STEP_MM
    return np.stack([gaussian_filter(c, sigma, mode="constant") for c in channels])


@dataclass
class Pose:
    """Scan-to-MNI mapping of one patient: rotation (deg about x, y, z), translation and scale."""

    rotation_deg: np.ndarray
    translation_mm: np.ndarray
    scale: np.ndarray
    warp: tuple[np.ndarray, np.ndarray, np.ndarray]

    def rotation(self) -> np.ndarray:
        ax, ay, az = np.deg2rad(self.rotation_deg)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        return rz @ ry @ rx

    def scan_to_mni(self) -> np.ndarray:
        """(4, 4) affine part of the map scan mm -> MNI mm (the warp excluded)."""
        linear = np.diag(1.0 / self.scale) @ self.rotation().T
        out = np.eye(4)
        out[:3, :3] = linear
        out[:3, 3] = BRAIN_CENTRE_MNI - linear @ self.translation_mm
        return out

    def to_mni(self, points_mm: np.ndarray) -> np.ndarray:
        """MNI positions (N, 3) of scan points (N, 3), warp included."""
        m = self.scan_to_mni()
        return points_mm @ m[:3, :3].T + m[:3, 3] + apply_warp(points_mm, self.warp)

    def as_dict(self) -> dict:
        waves, phases, amplitudes = self.warp
        return {
            "rotation_deg_xyz": self.rotation_deg, "translation_mm": self.translation_mm,
            "scale_xyz": self.scale, "scan_to_mni_affine": self.scan_to_mni(),
            "warp": {"wavevectors_rad_per_mm": waves, "phases": phases, "amplitudes_mm": amplitudes},
            "convention": "mni = scan_to_mni_affine @ [p, 1] + sum_k a_k sin(w_k . p + phi_k)",
        }  # fmt: skip


def random_pose(rng: np.random.Generator, cfg) -> Pose:
    """Draw a pose within the configured ranges (``rotation_deg``, ``translation_mm``, ...)."""
    rotation = rng.uniform(-1.0, 1.0, 3) * np.asarray(cfg.rotation_deg, dtype=np.float64)
    translation = rng.uniform(-1.0, 1.0, 3) * cfg.translation_mm
    scale = rng.uniform(cfg.scale[0], cfg.scale[1], 3)
    return Pose(rotation, translation, scale, fourier_warp(rng, cfg.warp_mm))


def grid_affine(shape: list[int], spacing_mm: np.ndarray) -> np.ndarray:
    """Axis-aligned RAS voxel-to-scanner affine with the grid centred on the origin."""
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * spacing_mm
    return affine


@dataclass
class Anatomy:
    """Anatomy on the scan grid: ``fractions`` (6, X, Y, Z) float32 in :data:`CHANNELS` order,
    ``mni_mm`` (X, Y, Z, 3) float32 MNI position of each voxel, ``affine`` and ``pose``."""

    fractions: np.ndarray
    mni_mm: np.ndarray
    affine: np.ndarray
    pose: Pose

    def channel(self, name: str) -> np.ndarray:
        return self.fractions[CHANNELS.index(name)]

    @property
    def brain(self) -> np.ndarray:
        """Brain mask: voxels more than half inside the MNI brain mask."""
        return self.fractions[:3].sum(axis=0) > 0.5

    @property
    def tissue(self) -> np.ndarray:
        """Perfused tissue fraction gm + wm (X, Y, Z)."""
        return self.fractions[0] + self.fractions[1]

    def baseline_hu(self, offsets_hu: dict[str, float] | None = None) -> np.ndarray:
        """Pre-contrast attenuation (X, Y, Z) float32: fraction-weighted class HU, air elsewhere."""
        offsets_hu = offsets_hu or {}
        out = np.full(self.fractions.shape[1:], AIR_HU, dtype=np.float32)
        for i, name in enumerate(CHANNELS):
            out += self.fractions[i] * (BASELINE_HU[name] + offsets_hu.get(name, 0.0) - AIR_HU)
        return out


def make_anatomy(shape: list[int], spacing_mm: np.ndarray, pose: Pose) -> Anatomy:
    """Resample the posed, warped template onto the scan grid (linear interpolation)."""
    channels = _filtered_channels(tuple(float(s) for s in spacing_mm))
    _, template_affine = _template_channels()
    affine = grid_affine(shape, spacing_mm)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    points = ijk.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    mni = pose.to_mni(points)
    index = ((mni - template_affine[:3, 3]) / TEMPLATE_STEP_MM).T
    fractions = np.stack(
        [map_coordinates(c, index, order=1, mode="constant", cval=0.0) for c in channels]
    ).reshape(len(CHANNELS), *shape)
    np.clip(fractions, 0.0, 1.0, out=fractions)
    fractions /= np.maximum(fractions.sum(axis=0), 1.0)  # the shells' blur may overlap
    return Anatomy(
        fractions.astype(np.float32), mni.reshape(*shape, 3).astype(np.float32), affine, pose
    )
