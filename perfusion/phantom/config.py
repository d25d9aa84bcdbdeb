"""Configuration of the digital phantoms (``configs/phantom.yaml``, ``perfusion phantom key=value``).

One flat schema so that the common knobs are short overrides (``noise_hu=10``, ``n=8``); the
defaults make the benchmark case of the fitting issue: a 128 x 128 x 32 brain at
1.8 x 1.8 x 5 mm with 1 s frames. Units are in the field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PhantomConfig:
    """Every parameter of a phantom cohort; each patient draws its own values from these ranges."""

    kind: str = "brain"
    """``brain`` (MNI152-based patients with vessels and lesions) or ``kudo`` (block design)."""
    out: str = "data/phantom"
    """Output folder; patients go to ``out/patient-000``, ``out/patient-001``, ..."""
    n: int = 1
    """Number of patients (``kind=kudo`` writes one phantom per index too)."""
    seed: int = 0
    """Cohort seed; patient ``i`` uses the seed sequence (seed, i), so it does not depend on ``n``."""
    first_index: int = 0
    """Index of the first patient written (to extend a cohort without regenerating it)."""

    # --- grid and acquisition ---------------------------------------------------------------
    shape: list[int] = field(default_factory=lambda: [128, 128, 32])
    """Scan grid (x, y, z) in voxels; axial slices along z."""
    fov_mm: list[float] = field(default_factory=lambda: [230.4, 230.4, 160.0])
    """Field of view (mm); spacing = fov_mm / shape (default 1.8 x 1.8 x 5 mm)."""
    n_frames: int = 60
    """Frames acquired (fewer when a real AIF file ends earlier)."""
    frame_interval_s: float = 1.0
    """Time between frames (s); the first frame is at t = 0."""
    truncate_s: float = 0.0
    """Truncated acquisition: drop frames after this time (s); 0 = off."""

    # --- input functions ----------------------------------------------------------------------
    aif_source: str = "parametric"
    """``parametric`` (gamma variate + recirculation) or a TSV path (columns case, t_s, aif_hu,
    vof_hu), e.g. ``../shared/data/isles2018_rapid_aif_vof.tsv``."""
    aif_case: int = 0
    """Case id in the AIF TSV; 0 = chosen per patient from the seed."""
    aif_peak_hu: list[float] = field(default_factory=lambda: [250.0, 450.0])
    """Range of the parametric true (partial-volume-free) AIF peak (ΔHU)."""
    aif_arrival_s: list[float] = field(default_factory=lambda: [4.0, 10.0])
    """Range of the parametric AIF arrival time (s after the first frame)."""
    write_aif: bool = True
    """Write ``aif.tsv`` (measured AIF/VOF); false tests automatic AIF/VOF selection."""
    curve_roi_voxels: int = 10
    """Voxels (highest vessel occupancy) averaged for the measured AIF and VOF in ``aif.tsv``."""

    # --- tissue -------------------------------------------------------------------------------
    residue: str = "box"
    """Tissue residue shape: ``box`` (Eq. (1)), ``exponential`` or ``linear`` (model mismatch)."""
    gm_cbf: float = 60.0
    """Grey-matter CBF (ml/100g/min)."""
    gm_mtt_s: float = 4.0
    """Grey-matter MTT (s)."""
    wm_cbf: float = 22.0
    """White-matter CBF (ml/100g/min)."""
    wm_mtt_s: float = 5.0
    """White-matter MTT (s)."""
    patient_sd: float = 0.08
    """Relative SD of each patient's global CBF and MTT levels."""
    spatial_sd: float = 0.08
    """Relative SD of the smooth within-brain variation of CBF and MTT."""
    delay_s: list[float] = field(default_factory=lambda: [0.0, 1.5])
    """Range of the healthy-tissue delay after the measured AIF (s), a smooth field."""

    # --- lesion -------------------------------------------------------------------------------
    lesion_probability: float = 0.85
    """Probability that a patient has an ischemic lesion."""
    lesion_volume_ml: list[float] = field(default_factory=lambda: [5.0, 200.0])
    """Range (log-uniform) of the hypoperfused volume (core + penumbra, ml)."""
    core_fraction: list[float] = field(default_factory=lambda: [0.05, 0.7])
    """Range of the core's share of the hypoperfused volume."""
    core_cbf_factor: list[float] = field(default_factory=lambda: [0.08, 0.22])
    """Core CBF relative to healthy tissue."""
    core_mtt_factor: list[float] = field(default_factory=lambda: [1.3, 2.5])
    """Core MTT relative to healthy tissue (so core CBV = CBF factor x MTT factor: 0.1-0.55)."""
    core_cbf_sd: float = 0.0
    """Log-SD of a smooth field that varies the core's CBF factor voxel by voxel, its MTT factor
    kept (so CBV follows): part of a heterogeneous core then lies above rCBF 30 %, where the
    rule cannot find it. 0: one factor for the whole core, all of it below 30 %."""
    penumbra_mtt_factor: list[float] = field(default_factory=lambda: [1.5, 2.4])
    """Penumbra MTT relative to healthy (CBV preserved, so CBF falls by the same factor)."""
    lesion_extra_delay_s: list[float] = field(default_factory=lambda: [2.5, 6.0])
    """Extra delay in the hypoperfused region (s); Tmax is then kept above ``tmax_lesion_min_s``."""
    tmax_lesion_min_s: float = 6.3
    """Lower bound of the true Tmax inside core and penumbra (s): all of them are Tmax > 6 s."""

    # --- anatomy and pose ---------------------------------------------------------------------
    rotation_deg: list[float] = field(default_factory=lambda: [6.0, 12.0, 4.0])
    """Max |rotation| (deg) about x (pitch: head flexion), y (roll) and z (yaw)."""
    translation_mm: float = 8.0
    """Max |translation| (mm) of the head per axis."""
    scale: list[float] = field(default_factory=lambda: [0.9, 1.1])
    """Range of the per-axis head scaling."""
    warp_mm: float = 3.0
    """Amplitude (mm) of the smooth elastic warp (random low-frequency Fourier modes)."""

    # --- noise and artefacts ------------------------------------------------------------------
    noise_hu: float = 5.0
    """CT noise SD (HU) in every voxel and frame."""
    noise_texture: str = "correlated"
    """``white`` or ``correlated`` (in-plane Gaussian-filtered, like reconstructed CT)."""
    noise_correlation_mm: float = 1.2
    """In-plane Gaussian SD (mm) of the correlated noise kernel (the SD is renormalised)."""
    motion: bool = False
    """Random rigid patient motion between frames (known transforms written to truth)."""
    motion_mm: float = 2.0
    """Max translation (mm) of the motion."""
    motion_deg: float = 2.0
    """Max rotation (deg) of the motion."""

    # --- Kudo design --------------------------------------------------------------------------
    kudo_tile: int = 8
    """Kudo block size in voxels (each block holds one CBV x MTT x delay combination)."""
    kudo_spacing_mm: list[float] = field(default_factory=lambda: [1.8, 1.8, 5.0])
    """Kudo voxel size (mm)."""


def check_config(cfg: PhantomConfig) -> None:
    """Refuse values no phantom can be made from, naming the key (PerfusionError)."""
    from perfusion.errors import PerfusionError

    def fail(key: str, why: str) -> None:
        raise PerfusionError(f"config key '{key}': {why}")

    if len(cfg.shape) != 3 or min(cfg.shape) < 4:
        fail("shape", f"{list(cfg.shape)}: three sizes of at least 4 voxels expected")
    if len(cfg.fov_mm) != 3 or min(cfg.fov_mm) <= 0:
        fail("fov_mm", f"{list(cfg.fov_mm)}: three positive lengths expected")
    if cfg.n_frames < 2 or cfg.frame_interval_s <= 0:
        fail("n_frames", "at least 2 frames with frame_interval_s > 0 expected")
    if cfg.noise_hu < 0:
        fail("noise_hu", f"{cfg.noise_hu}: must be >= 0")
    if not 0.0 <= cfg.lesion_probability <= 1.0:
        fail("lesion_probability", f"{cfg.lesion_probability}: must lie in [0, 1]")
    if cfg.curve_roi_voxels < 1 or cfg.kudo_tile < 1:
        fail("curve_roi_voxels", "ROI and Kudo tile sizes must be >= 1")
    for key in ("lesion_volume_ml", "core_fraction", "aif_peak_hu", "scale", "delay_s"):
        low_high = getattr(cfg, key)
        if len(low_high) != 2 or low_high[0] > low_high[1] or low_high[0] < 0:
            fail(key, f"{list(low_high)}: a range [low, high] with 0 <= low <= high expected")
