"""Smooth random fields and smooth random warps, defined in MNI millimetres.

The fields live on a coarse MNI grid and are sampled at each scan voxel's MNI position, so a
lesion or a CBF pattern follows the anatomy through the patient's pose and warp.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates

FIELD_ORIGIN_MM = np.array([-100.0, -136.0, -80.0])
"""Corner of the coarse MNI box that holds the fields (covers the MNI152 head)."""
FIELD_EXTENT_MM = np.array([200.0, 240.0, 180.0])
FIELD_STEP_MM = 4.0


def smooth_fields(
    rng: np.random.Generator, xyz_mm: np.ndarray, correlation_mm: list[float]
) -> np.ndarray:
    """Unit-variance Gaussian random fields sampled at MNI points.

    Args:
        rng: random generator.
        xyz_mm: (N, 3) MNI positions (mm).
        correlation_mm: one Gaussian filter SD (mm) per field.

    Returns:
        float64 (len(correlation_mm), N), each field with mean 0 and SD 1 over the box.
    """
    shape = tuple(int(v) for v in np.ceil(FIELD_EXTENT_MM / FIELD_STEP_MM) + 1)
    index = ((xyz_mm - FIELD_ORIGIN_MM) / FIELD_STEP_MM).T
    out = np.empty((len(correlation_mm), xyz_mm.shape[0]))
    for i, corr in enumerate(correlation_mm):
        grid = gaussian_filter(rng.standard_normal(shape), corr / FIELD_STEP_MM, mode="wrap")
        grid = (grid - grid.mean()) / grid.std()
        out[i] = map_coordinates(grid, index, order=1, mode="nearest")
    return out


def fourier_warp(
    rng: np.random.Generator, amplitude_mm: float, n_modes: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random low-frequency displacement modes: u_c(p) = sum_k a_kc sin(w_k . p + phi_k).

    Wavelengths 60-160 mm, so the warp bends the brain without folding it
    (max |grad u| ~ amplitude * 2 pi / 60 < 0.35 for amplitude 3 mm).

    Returns:
        (wavevectors (K, 3) rad/mm, phases (K,), amplitudes (K, 3) mm).
    """
    directions = rng.standard_normal((n_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelength = rng.uniform(60.0, 160.0, n_modes)
    waves = directions * (2.0 * np.pi / wavelength)[:, None]
    phases = rng.uniform(0.0, 2.0 * np.pi, n_modes)
    amplitudes = rng.standard_normal((n_modes, 3)) * amplitude_mm / np.sqrt(n_modes)
    return waves, phases, amplitudes


def apply_warp(
    points_mm: np.ndarray, warp: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """Displacement (N, 3) mm of the Fourier warp at points (N, 3) mm."""
    waves, phases, amplitudes = warp
    return np.sin(points_mm @ waves.T + phases) @ amplitudes
