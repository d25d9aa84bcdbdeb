"""Acquisition artefacts: CT noise (white or with CT-like texture) and rigid patient motion.

Correlated noise is white noise filtered in plane by a Gaussian (reconstruction kernels correlate
neighbouring pixels within a slice, not across 5 mm slices) and rescaled by the kernel's L2 norm,
so its SD is exactly ``sigma_hu``. Motion moves each frame rigidly about the scan centre; frame 0
is the reference (truth maps are on its grid).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import affine_transform
from scipy.spatial.transform import Rotation

from perfusion.errors import PerfusionError

TEXTURES = ("white", "correlated")


def add_noise(
    rng: np.random.Generator, ctp: np.ndarray, sigma_hu: float, texture: str,
    correlation_mm: float, spacing_mm: np.ndarray,
) -> None:  # fmt: skip
    """Add zero-mean Gaussian noise of SD ``sigma_hu`` to ``ctp`` (X, Y, Z, T) float32 in place.

    Drawn with torch (seeded from ``rng``; numpy's generator is ~10x slower for the ~30 M values
    of a default case), one slice at a time to bound memory. Correlated noise is filtered in
    plane by circular convolution with a sampled Gaussian in the Fourier domain and divided by
    sqrt(mean |H|^2), the filter's exact gain on white noise (Parseval), so its SD is ``sigma_hu``.
    """
    if texture not in TEXTURES:
        raise PerfusionError(f"noise_texture '{texture}' unknown (choose {', '.join(TEXTURES)})")
    if sigma_hu <= 0:
        return
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    x, y, z, n_frames = ctp.shape
    transfer = None
    if texture == "correlated" and correlation_mm > 0:
        transfer = _gaussian_transfer(
            x, y, correlation_mm / float(spacing_mm[0]), correlation_mm / float(spacing_mm[1])
        )
    threads = torch.get_num_threads()
    # small FFTs: thread hand-offs cost more than they give (10x slower on 2 busy cores)
    torch.set_num_threads(1)
    try:
        view = torch.from_numpy(ctp)
        for k in range(z):  # one slice (X, Y, T) at a time: contiguous in the (X, Y, Z, T) array
            noise = torch.randn((x, y, n_frames), generator=generator)
            if transfer is not None:
                spectrum = torch.fft.rfft2(noise, dim=(0, 1)) * transfer[..., None]
                noise = torch.fft.irfft2(spectrum, s=(x, y), dim=(0, 1))
            view[:, :, k, :] += sigma_hu * noise
    finally:
        torch.set_num_threads(threads)


def _gaussian_transfer(nx: int, ny: int, sigma_x: float, sigma_y: float) -> torch.Tensor:
    """rfft2 transfer function (nx, ny//2+1) of a circular sampled Gaussian, unit white-noise gain."""

    def wrapped(n: int, sigma: float) -> np.ndarray:
        d = np.minimum(np.arange(n), n - np.arange(n)).astype(np.float64)
        k = np.exp(-0.5 * (d / max(sigma, 1e-6)) ** 2)
        return k / k.sum()

    kernel = np.outer(wrapped(nx, sigma_x), wrapped(ny, sigma_y))
    full = np.abs(np.fft.fft2(kernel))
    gain = float(np.sqrt(np.mean(full**2)))
    return torch.from_numpy(np.fft.rfft2(kernel) / gain).to(torch.complex64)


def motion_transforms(
    rng: np.random.Generator, n_frames: int, max_mm: float, max_deg: float
) -> np.ndarray:
    """(T, 4, 4) rigid maps (scan mm of frame k -> scan mm of frame 0): a smooth random drift
    plus one sudden jerk, within ``max_mm`` and ``max_deg``; frame 0 is the identity."""
    steps = rng.standard_normal((n_frames, 6)).cumsum(axis=0)
    jerk = int(rng.integers(n_frames // 3, max(n_frames // 3 + 1, n_frames - 2)))
    steps[jerk:] += 3.0 * rng.standard_normal(6)
    steps -= steps[0]
    steps /= max(float(np.abs(steps).max()), 1e-9)
    out = np.tile(np.eye(4), (n_frames, 1, 1))
    out[:, :3, :3] = Rotation.from_euler("xyz", steps[:, :3] * max_deg, degrees=True).as_matrix()
    out[:, :3, 3] = steps[:, 3:] * max_mm
    out[0] = np.eye(4)
    return out


def apply_motion(ctp: np.ndarray, affine: np.ndarray, transforms: np.ndarray) -> None:
    """Resample frame k of ``ctp`` in place at M_k p (linear), so it shows the moved head.

    In voxel indices, frame k at voxel o takes the value at A^-1 M_k A o (A the voxel-to-mm
    affine): one ``affine_transform`` per frame. Beyond the grid a frame takes its edge voxel's
    value: the head goes on past the slab's first and last slice (the phantom does not simulate
    it there), and in-plane the grid's edge is air. (A fill of air would put air inside the head
    at the slab's edges, which no scanner shows.)
    """
    inverse = np.linalg.inv(affine)
    for t in range(1, ctp.shape[3]):
        voxel_map = inverse @ transforms[t] @ affine
        frame = np.ascontiguousarray(ctp[..., t])
        ctp[..., t] = affine_transform(
            frame, voxel_map[:3, :3], voxel_map[:3, 3], order=1, mode="nearest"
        )
