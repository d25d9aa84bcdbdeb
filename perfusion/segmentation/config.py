"""Configuration of the infarct-core U-Net and its leave-one-out cross-validation (paper Table 5).

``configs/loocv.yaml`` is the CPU default (small phantom cohort, fitted bSVD maps, few epochs, a
larger learning rate so it learns in minutes); ``configs/loocv/paper.yaml`` restores Table 5
(lr 5e-5, 500 epochs, 5 seeds) and is meant for GPUs. Field names follow MONAI (``channels``, ``strides``, ``num_res_units``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from perfusion.clinical import RCBF_CORE
from perfusion.errors import PerfusionError

INPUT_METHODS = ("truth", "resppinn", "sppinn", "bsvd", "nlr")
# input channels a U-Net may be given (UNetConfig.features)
FEATURES = ("rcbf", "tissue", "rule", "rcbv", "tmax")
PAPER_FEATURES = ("rcbf", "tissue")  # the paper's, and those of a model saved without the key


def check_features(features: Sequence[str]) -> tuple[str, ...]:
    """``features`` as a tuple; a PerfusionError when empty or naming an unknown channel."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features:
        raise PerfusionError(f"model.features must be some of {FEATURES}, got {list(features)}")
    return tuple(features)


@dataclass
class UNetConfig:
    """MONAI ``UNet`` architecture (3-D, two output classes: background and core)."""

    channels: list[int] = field(default_factory=lambda: [16, 16, 32, 32, 64])
    """Features per level (Table 5: 16, 16, 32, 32, 64)."""
    strides: list[Any] = field(default_factory=lambda: [2, 2, 2, 2])
    """Down-sampling stride between levels, one number or one per axis (``[2, 2, 1]`` keeps
    the slices of a level); inputs are padded to each axis's product (16 for four stride-2
    levels)."""
    num_res_units: int = 2
    """Residual units per block (MONAI's; the paper does not state it)."""
    dropout: float = 0.0
    """Dropout probability inside the U-Net blocks."""
    features: list[str] = field(default_factory=lambda: list(PAPER_FEATURES))
    """Input channels, in order, from :data:`FEATURES`: ``rcbf``
    (relative CBF), ``tissue`` (the tissue mask), ``rule`` (the rCBF < 30 % rule's mask),
    ``rcbv`` (relative CBV), ``tmax`` (Tmax / 10 s). The paper's network sees rCBF and tissue;
    with ``rule`` it starts from the clinical rule's answer and learns where to depart from it;
    CBV tells core (CBV falls) from hypoperfused tissue that keeps its CBV."""


@dataclass
class TrainConfig:
    """Optimisation, augmentation, patching and model selection of one U-Net training."""

    epochs: int = 500
    """Training epochs (Table 5: 500); one epoch visits every training patient once."""
    lr: float = 5e-5
    """Adam base learning rate, also OneCycleLR's max_lr (Table 5: 5e-5)."""
    pct_start: float = 0.0
    """OneCycleLR warm-up fraction (Table 5: no warm-up)."""
    batch_size: int = 1
    """Patients per batch (Table 5: 1)."""
    patch_fraction: list[float] = field(default_factory=lambda: [1.0, 1.0, 0.625])
    """Patch size as a fraction of the grid per axis: 256x256x20 of the paper's 256x256x32 grid."""
    pad_multiple: int | None = None
    """Deprecated: the size multiple is derived from ``model.strides``; a value is ignored with
    a warning, and the key goes in the next release."""
    pos_neg_ratio: float = 1.0
    """Odds of a patch centred on core versus anywhere (MONAI ``RandCropByPosNegLabeld``)."""
    flip_prob: float = 0.5
    """Probability of a left-right flip (``RandFlipd`` on axis 0)."""
    rotate_prob: float = 0.3
    """Probability of an in-plane rotation (``RandRotated``)."""
    rotate_deg: float = 10.0
    """Maximum in-plane rotation in degrees."""
    zoom_prob: float = 0.3
    """Probability of a zoom (``RandZoomd``)."""
    zoom_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    """Zoom factor range (min, max)."""
    infer_patch_fraction: list[float] = field(default_factory=list)
    """Sliding-window size as a fraction of the grid per axis (rounded like ``patch_fraction``);
    empty: the training patch. A whole-grid window (1, 1, 1) costs one U-Net pass per volume
    instead of nine overlapping half-FOV windows."""
    sw_overlap: float = 0.5
    """``SlidingWindowInferer`` overlap between windows."""
    val_every: int = 1
    """Validate every this many epochs (Lightning ``check_val_every_n_epoch``); the running
    mean then spans ``running_mean_epochs`` validations."""
    selection: str = "running_mean"
    """``running_mean``: keep the weights with the best mean validation Dice over the last
    ``running_mean_epochs`` epochs (paper); ``fixed``: keep the last epoch's weights."""
    running_mean_epochs: int = 10
    """Window of the running mean of the validation Dice, in validations (paper: 10 epochs)."""
    n_val: int = 1
    """Validation patients held out from each fold's training patients (paper: 1)."""
    threads: int = 1
    """torch CPU threads per training process (one by default, see docs/gpu.md); run folds in
    parallel processes (``fold=k``) to use more cores."""
    accelerator: str = "auto"
    """Lightning accelerator (``auto``, ``cpu``, ``gpu``)."""


@dataclass
class CohortConfig:
    """Where the patients come from and how their inputs are made."""

    path: str = "data/cohort"
    """Cohort folder of case folders (each with ``core.nii.gz``); generated when missing."""
    fits: str = ""
    """Folder of fit outputs ``<fits>/<method>/<patient>/cbf.nii.gz``; empty: ``<path>/fits``."""
    fit_missing: bool = True
    """Fit the maps of every patient as ``perfusion fit-cohort`` does: missing maps and maps of
    another fit configuration are (re)fitted, finished ones reused; false: use the maps found."""
    fit_overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides for ``configs/fit.yaml`` when fitting missing maps (e.g.
    ``preprocess.motion_correction=false`` for phantoms, which have no motion)."""
    side: str = "auto"
    """Affected hemisphere: ``auto`` (from CBF asymmetry), ``left`` or ``right``."""
    phantom_n: int = 15
    """Patients of the generated phantom cohort (paper: 15)."""
    phantom_seed: int = 0
    """Seed of the generated phantom cohort."""
    phantom_overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides for ``configs/phantom.yaml`` when generating the cohort."""


@dataclass
class LoocvConfig:
    """``perfusion loocv`` (every fold x seed x input method, then Table 1) and ``train-seg``.

    ``perfusion train-seg`` reads the same config, so the final model is trained exactly like
    the cross-validated ones: on ``inputs[0]`` with seed ``seeds[0]``, saved to ``model_out``.
    """

    cohort: CohortConfig = field(default_factory=CohortConfig)
    """The patients."""
    model: UNetConfig = field(default_factory=UNetConfig)
    """U-Net architecture."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training of one fold."""
    inputs: list[str] = field(default_factory=lambda: ["truth"])
    """Input-map methods to compare (truth, resppinn, sppinn, bsvd, nlr)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """Training seeds (paper: 5)."""
    fold: int = -1
    """Run only this fold (>= 0); -1 runs every fold and aggregates."""
    threshold: float = RCBF_CORE
    """rCBF threshold of the comparison rule (RAPID: rCBF < 30 %)."""
    run: str = "default"
    """Run name: folder under ``runs`` and W&B group."""
    runs: str = "runs/loocv"
    """Folder of per-run work: cached inputs, per-fold results, W&B files."""
    results: str = "bench/results/loocv"
    """Folder of the aggregate outputs (README.md, loocv.json, bland-altman-<method>.png)."""
    wandb: bool = True
    """Log per fold and aggregate to W&B (offline unless WANDB_MODE says otherwise)."""
    model_out: str = "checkpoints/segmentation"
    """``perfusion train-seg``: folder of the final model (trained on ``inputs[0]``, ``seeds[0]``)."""


@dataclass
class SegmentConfig:
    """``perfusion segment CASE_DIR model=PATH``."""

    model: str = "checkpoints/segmentation"
    """Folder (or ``model.pt``) written by ``perfusion train-seg``; a relative path missing from
    the working directory is looked for in the repository (the shipped model)."""
    maps: str = ""
    """Folder holding ``cbf.nii.gz`` (a fit output); empty: ``<case>/fits/<method>``."""
    method: str = ""
    """Input-map method; empty: the one the model was trained on."""
    side: str = "auto"
    """Affected hemisphere: ``auto``, ``left`` or ``right``."""
    out: str = ""
    """Output folder; empty: the maps folder (or ``<case>/segmentation`` for truth maps)."""
    fit_missing: bool = True
    """Fit the maps first when they are missing."""
    fit_overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides for ``configs/fit.yaml`` when fitting missing maps."""
    mismatch: str = "rule"
    """When the maps' method, grid or voxel size differ from the model's training data:
    ``rule`` (the core is the rCBF < 30 % rule, with a warning), ``unet`` (apply the model
    anyway, with a warning) or ``refuse`` (exit with an error)."""
