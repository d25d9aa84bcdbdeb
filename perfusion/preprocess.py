"""Preprocessing from a raw :class:`~perfusion.io.Case` to a fit-ready
:class:`~perfusion.prepared.PreparedCase`: motion correction, standard frame, masks, baseline
subtraction, smoothing and AIF/VOF handling. Each step is configurable (:class:`PreprocessConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    smooth_sigma_mm: float = 0.0
    """In-plane Gaussian smoothing sigma (mm) of the tissue curves; 0 = off."""
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
