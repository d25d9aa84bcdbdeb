"""Leave-one-out folds and the U-Net's data: :func:`split_fold`, :class:`LeaveOneOutDataModule`.

With N patients, fold k tests patient k and trains on the other N - 1, of which ``n_val`` are
held out for model selection (never the test patient). Fold 0 is kept for hyperparameter
choice and excluded from reported metrics (:func:`reported_folds`), as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    DivisiblePadd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotated,
    RandZoomd,
)

from perfusion.clinical import TMAX_SEVERE_S
from perfusion.errors import PerfusionError
from perfusion.segmentation.config import PAPER_FEATURES, check_features
from perfusion.segmentation.inputs import FEATURE_MAPS, PatientInputs, missing_maps
from perfusion.segmentation.rcbf import below_threshold, hemisphere, relative_to_healthy

# Channel scales: a relative map above 4x the healthy median is vessel-like noise, not
# information on core; Tmax is read in units of the severe-hypoperfusion threshold (10 s) up to 3.
RELATIVE_CLIP = 4.0
TMAX_CLIP = 3.0


@dataclass(frozen=True)
class FoldSplit:
    """Patient indices of one fold: ``train`` fits weights, ``val`` selects them, ``test`` scores."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def split_fold(n_patients: int, fold: int | None, n_val: int, seed: int) -> FoldSplit:
    """Fold ``fold`` of leave-one-out over ``n_patients`` (``fold=None``: no test patient).

    The validation patients are drawn (seeded) from the non-test patients only, so the test
    patient never influences training or model selection.
    """
    if fold is not None and not 0 <= fold < n_patients:
        raise ValueError(f"fold {fold} outside 0..{n_patients - 1}")
    rest = [i for i in range(n_patients) if i != fold]
    if not 0 <= n_val < len(rest):
        raise ValueError(f"n_val {n_val} leaves no training patient among {len(rest)}")
    order = np.random.default_rng(seed).permutation(len(rest))
    val = sorted(rest[i] for i in order[:n_val])
    train = [i for i in rest if i not in val]
    test = () if fold is None else (fold,)
    return FoldSplit(tuple(train), tuple(val), test)


def reported_folds(n_patients: int) -> list[int]:
    """Folds whose test results are reported: all but fold 0 (kept for tuning)."""
    return list(range(1, n_patients))


def patch_size(
    shape: Sequence[int], fraction: Sequence[float], multiple: Sequence[int]
) -> tuple[int, ...]:
    """Training/inference window: ``fraction`` of the grid per axis, rounded up to that axis's
    ``multiple`` (:func:`~perfusion.segmentation.module.size_multiple`).

    The paper's 256x256x20 of a 256x256x32 grid is fraction (1, 1, 0.625); the U-Net needs
    sizes divisible by 2^levels (16), so 20 becomes 32 (a bare 20 raises in MONAI's UNet).
    In-plane sizes are at least 2 x ``multiple`` so that the bottleneck holds more than one
    voxel (instance normalisation fails on a single one). Never larger than the padded grid
    (except for that minimum).
    """
    if len(fraction) != len(shape):
        raise ValueError(f"patch_fraction has {len(fraction)} entries for a {len(shape)}-D grid")
    sizes = []
    for axis, (size, frac, step) in enumerate(zip(shape, fraction, multiple, strict=True)):
        padded = step * math.ceil(size / step)
        wanted = min(padded, step * math.ceil(max(1.0, frac * size) / step))
        sizes.append(max(wanted, 2 * step) if axis < 2 else wanted)
    return tuple(sizes)


def to_sample(
    patient: PatientInputs, features: Sequence[str] = PAPER_FEATURES
) -> dict[str, np.ndarray]:
    """Channel-first arrays: image (len(features), X, Y, Z), label (1, ...), keep (1, ...).

    Channels: ``rcbf`` clipped to [0, ``RELATIVE_CLIP``]; ``tissue`` tells the network where
    rCBF = 0 means "no tissue" rather than "no flow"; ``rule`` is the rule's mask in both
    hemispheres (:func:`perfusion.segmentation.rcbf.below_threshold`: the network sees the
    healthy side's false alarms too); ``rcbv``, CBV over the healthy hemisphere's median, clipped
    as rCBF; ``tmax``, Tmax / 10 s clipped to [0, ``TMAX_CLIP``], 0 outside tissue. ``keep``
    (tissue of the affected hemisphere) is where core may be predicted. A PerfusionError names
    the maps folder when a channel's map is missing.
    """
    tissue = patient.tissue.astype(np.float32)
    channels = {
        "rcbf": lambda: np.clip(patient.rcbf, 0.0, RELATIVE_CLIP),
        "tissue": lambda: tissue,
        "rule": lambda: below_threshold(patient.rcbf, patient.tissue).astype(np.float32),
        "rcbv": lambda: np.clip(_relative_cbv(patient), 0.0, RELATIVE_CLIP),
        "tmax": lambda: tissue * np.clip(_needed(patient, "tmax") / TMAX_SEVERE_S, 0.0, TMAX_CLIP),
    }
    core = np.zeros_like(tissue) if patient.core is None else patient.core.astype(np.float32)
    keep = patient.tissue & hemisphere(patient.x_mm, patient.affected)
    return {
        "image": np.stack([channels[f]() for f in check_features(features)]).astype(np.float32),
        "label": core[None],
        "keep": keep[None].astype(np.float32),
    }


def _relative_cbv(patient: PatientInputs) -> np.ndarray:
    cbv = _needed(patient, "rcbv")
    return relative_to_healthy(cbv, patient.tissue, patient.x_mm, patient.affected, "CBV")


def _needed(patient: PatientInputs, feature: str) -> np.ndarray:
    """The map the channel ``feature`` reads (:data:`~perfusion.segmentation.inputs.FEATURE_MAPS`);
    a PerfusionError naming the missing file otherwise."""
    attribute = FEATURE_MAPS[feature][0]
    missing = missing_maps(patient, [feature])
    if missing:
        where = patient.folder / missing[0] if patient.folder is not None else missing[0]
        raise PerfusionError(f"not found (the model's input channels need {attribute})", where)
    return getattr(patient, attribute)


def train_transform(
    roi: Sequence[int], multiple: Sequence[int], aug: dict[str, float | Sequence[float]]
) -> Compose:
    """Pad to the U-Net multiple, crop a patch, then RandFlip, RandRotate, RandZoom.

    Patches are centred on a core voxel with odds ``pos_neg_ratio`` : 1 (on a non-core voxel
    otherwise), so that small cores are seen in most steps when patches are smaller than the grid.
    """
    keys, modes = ["image", "label"], ("bilinear", "nearest")
    return Compose(
        [
            DivisiblePadd(keys, k=tuple(multiple)),
            RandCropByPosNegLabeld(
                keys,
                "label",
                tuple(roi),
                pos=float(aug["pos_neg_ratio"]),
                neg=1.0,
                num_samples=1,
                allow_smaller=True,
            ),
            RandFlipd(keys, prob=float(aug["flip_prob"]), spatial_axis=0),
            RandRotated(
                keys,
                range_z=math.radians(float(aug["rotate_deg"])),
                prob=float(aug["rotate_prob"]),
                mode=modes,
            ),
            RandZoomd(
                keys,
                prob=float(aug["zoom_prob"]),
                min_zoom=float(aug["zoom_range"][0]),
                max_zoom=float(aug["zoom_range"][1]),
                mode=("trilinear", "nearest"),
                keep_size=True,
            ),
        ]
    )


class LeaveOneOutDataModule(L.LightningDataModule):
    """Training patches and whole validation volumes of one leave-one-out fold.

    Args:
        patients: the whole cohort's inputs (index = patient number).
        fold: the test patient's index, or None (final model: train on all but ``n_val``).
        n_val: validation patients held out from the training patients.
        seed: draws the validation patients.
        roi: patch size (from :func:`patch_size`).
        multiple: the U-Net's size multiple per axis.
        aug: augmentation probabilities/ranges (``TrainConfig`` fields of the same names).
        batch_size: patches per step (paper: 1).
        features: the input channels (:func:`to_sample`).
    """

    def __init__(
        self,
        patients: Sequence[PatientInputs],
        fold: int | None,
        n_val: int,
        seed: int,
        roi: Sequence[int],
        multiple: Sequence[int],
        aug: dict[str, float | Sequence[float]],
        batch_size: int = 1,
        features: Sequence[str] = PAPER_FEATURES,
    ) -> None:
        super().__init__()
        self.patients, self.features = list(patients), check_features(features)
        self.split = split_fold(len(self.patients), fold, n_val, seed)
        self.roi, self.multiple, self.aug, self.batch_size = tuple(roi), multiple, aug, batch_size

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.split.train) / self.batch_size)

    def _samples(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [to_sample(self.patients[i], self.features) for i in indices]

    def train_dataloader(self) -> DataLoader:
        transform = train_transform(self.roi, self.multiple, self.aug)
        data = Dataset(self._samples(self.split.train), transform=transform)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self) -> DataLoader | list:
        if not self.split.val:
            return []
        return DataLoader(Dataset(self._samples(self.split.val)), batch_size=1, num_workers=0)


def to_batch(
    patient: PatientInputs, features: Sequence[str] = PAPER_FEATURES
) -> dict[str, torch.Tensor]:
    """One patient's sample as a batch of one (for inference outside a Trainer)."""
    return {k: torch.from_numpy(v)[None] for k, v in to_sample(patient, features).items()}
