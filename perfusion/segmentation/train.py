"""Training and applying the infarct-core U-Net: one fresh Trainer per model, the selected weights.

``perfusion train-seg`` trains the shipped model with these; the leave-one-out experiment
(``perfusion loocv``, in ``experiments``) trains one per fold with the same function.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perfusion.clinical import without_small_components
from perfusion.help import expand_aliases
from perfusion.segmentation.config import TrainConfig, UNetConfig
from perfusion.segmentation.inputs import PatientInputs

if TYPE_CHECKING:
    from perfusion.segmentation.module import SegmentationModule

# torch, Lightning and MONAI are imported inside the functions that train, so that a bad key
# or argument is refused before they load
LIST_KEYS = ("inputs", "seeds")
ALIASES = {"cohort": "cohort.path"}


def normalise_overrides(overrides: Sequence[str]) -> list[str]:
    """Shorthands: ``cohort=DIR`` -> ``cohort.path=DIR``; ``inputs=a,b`` -> ``inputs=[a,b]``."""
    out = []
    for item in expand_aliases(overrides, ALIASES):
        key, _, value = item.partition("=")
        if key in LIST_KEYS and not value.startswith("["):
            item = f"{key}=[{value}]"
        out.append(item)
    return out


def train_model(
    patients: Sequence[PatientInputs],
    fold: int | None,
    seed: int,
    model: UNetConfig,
    train: TrainConfig,
    logger: Any = False,
) -> SegmentationModule:
    """Train one U-Net with a fresh Trainer on ``fold``'s training patients; return the selected weights."""
    import lightning as L

    from perfusion.segmentation.data import LeaveOneOutDataModule, patch_size
    from perfusion.segmentation.module import SegmentationModule, size_multiple
    from perfusion.tracking import quiet_lightning

    L.seed_everything(seed, workers=True, verbose=False)
    quiet_lightning()  # one line per fold is enough
    # patients without a core cannot give core-centred patches; MONAI then crops anywhere
    warnings.filterwarnings("ignore", message="Num foregrounds 0.*")
    grid = np.min([p.rcbf.shape for p in patients], axis=0)
    grid = tuple(int(s) for s in grid)
    strides = [int(s) if isinstance(s, int) else [int(a) for a in s] for s in model.strides]
    multiple = size_multiple(strides)
    if train.pad_multiple is not None:
        warnings.warn(
            f"train.pad_multiple={train.pad_multiple} is ignored: the U-Net pads each axis to "
            f"its strides' product, {multiple} (remove the key; it goes in the next release)",
            FutureWarning,
            stacklevel=2,
        )
    roi = patch_size(grid, train.patch_fraction, multiple)
    infer_roi = patch_size(grid, train.infer_patch_fraction or train.patch_fraction, multiple)
    aug = {
        k: getattr(train, k)
        for k in (
            "pos_neg_ratio",
            "flip_prob",
            "rotate_prob",
            "rotate_deg",
            "zoom_prob",
            "zoom_range",
        )
    }
    data = LeaveOneOutDataModule(
        patients,
        fold,
        train.n_val,
        seed,
        roi,
        multiple,
        aug,
        train.batch_size,
        [str(f) for f in model.features],
    )
    module = SegmentationModule(  # plain values, so that the saved hparams load with weights_only
        [int(c) for c in model.channels],
        strides,
        model.num_res_units,
        model.dropout,
        train.lr,
        train.pct_start,
        train.epochs * data.steps_per_epoch,
        list(roi),
        train.sw_overlap,
        train.selection if train.n_val > 0 else "fixed",
        train.running_mean_epochs,
        list(infer_roi),
        [str(f) for f in model.features],
    )
    trainer = L.Trainer(
        max_epochs=train.epochs,
        accelerator=train.accelerator,
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=train.val_every,
        log_every_n_steps=1,
    )
    trainer.fit(module, data)
    module.selected_epoch = module.use_selected()
    module.split = data.split
    return module


def fold_logger(enabled: bool, group: str, job: str, name: str, save_dir: Path) -> Any:
    """W&B logger of one training (``perfusion.tracking``: offline by default), or False.

    False (not None) when disabled, since a Trainer given None makes its own default logger.
    """
    if not enabled:
        return False
    from perfusion.tracking import make_logger

    logger = make_logger(name, save_dir, group=group, job_type=job)
    return logger if logger is not None else False


def predict_core(module: SegmentationModule, patient: PatientInputs) -> np.ndarray:
    """Bool (X, Y, Z) core of one patient from a trained module (eval mode, CPU or its device),
    without parts under :data:`~perfusion.clinical.CORE_MIN_COMPONENT_ML` as the rule's core."""
    from perfusion.segmentation.data import to_batch

    module.eval()
    batch = to_batch(patient, module.hparams.features)
    batch = {k: v.to(module.device) for k, v in batch.items()}
    core = module.segment(batch["image"], batch["keep"])[0].cpu().numpy()
    return without_small_components(core, patient.voxel_ml)
