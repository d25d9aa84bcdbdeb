"""SegmentationModule: MONAI 3-D U-Net on [rCBF, tissue, ...] predicting the infarct core (Table 5).

DiceCELoss (lambda_dice 1, lambda_ce 1) on random patches; Adam + OneCycleLR stepped per batch;
whole-volume inference by a gaussian-weighted ``SlidingWindowInferer`` (overlap 0.5) on the
volume padded to the U-Net's size multiple (:func:`size_multiple`) and cropped back;
post-processing keeps core only in the tissue of the affected hemisphere. Model selection as
the paper: the weights of the epoch with the best running mean of the validation Dice over the
last ``running_mean_epochs`` epochs.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import DivisiblePad

from perfusion.errors import PerfusionError
from perfusion.fitting.init import load_torch_file
from perfusion.io import write_bytes_atomic
from perfusion.segmentation.config import PAPER_FEATURES, check_features
from perfusion.segmentation.metrics import dice

SELECTIONS = ("running_mean", "fixed")
LEGACY_HPARAMS = ("pad_multiple",)  # in model.pt files written before the multiple was derived


def size_multiple(strides: Sequence[int | Sequence[int]]) -> tuple[int, int, int]:
    """What each axis of the U-Net's input must be a multiple of: the product of its strides."""
    per_axis = np.prod([np.broadcast_to(s, 3) for s in strides], axis=0)
    return tuple(int(p) for p in per_axis)  # type: ignore[return-value]


class SegmentationModule(L.LightningModule):
    """Thin Lightning wrapper: loss on patches, validation Dice on whole volumes, selection.

    Args:
        channels, strides, num_res_units, dropout: MONAI ``UNet`` arguments (a stride is one
            number or one per axis).
        lr: Adam learning rate and OneCycleLR ``max_lr``.
        pct_start: OneCycleLR warm-up fraction.
        total_steps: optimiser steps of the whole training (epochs x steps per epoch).
        roi: training patch size (each axis a multiple of :func:`size_multiple`).
        sw_overlap: sliding-window overlap.
        selection: ``running_mean`` or ``fixed`` (last epoch).
        running_mean_epochs: window of the validation-Dice running mean (in validations).
        infer_roi: sliding-window size; None: ``roi``.
        features: the input channels (:func:`perfusion.segmentation.data.to_sample`), saved
            with the weights so that inference builds the same ones.
    """

    def __init__(
        self,
        channels: Sequence[int],
        strides: Sequence[int | Sequence[int]],
        num_res_units: int,
        dropout: float,
        lr: float,
        pct_start: float,
        total_steps: int,
        roi: Sequence[int],
        sw_overlap: float = 0.5,
        selection: str = "running_mean",
        running_mean_epochs: int = 10,
        infer_roi: Sequence[int] | None = None,
        features: Sequence[str] = PAPER_FEATURES,
    ) -> None:
        super().__init__()
        check_features(features)
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"strides needs {len(channels) - 1} entries for {len(channels)} channels"
            )
        multiple = size_multiple(strides)
        infer_roi = tuple(roi if infer_roi is None else infer_roi)
        if any(r % m for window in (roi, infer_roi) for r, m in zip(window, multiple, strict=True)):
            raise ValueError(
                f"roi {tuple(roi)} or infer_roi {infer_roi} not a multiple of {multiple} "
                f"per axis (the strides' products)"
            )
        self.save_hyperparameters()
        self.net = UNet(
            3,
            len(features),
            2,
            list(channels),
            list(strides),
            num_res_units=num_res_units,
            dropout=dropout,
        )
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=1.0, lambda_ce=1.0)
        self.inferer = SlidingWindowInferer(
            infer_roi, sw_batch_size=1, overlap=sw_overlap, mode="gaussian"
        )
        self.pad = DivisiblePad(k=multiple, method="end")
        self.val_dice: list[float] = []
        self.epoch_dice: list[np.ndarray] = []  # (prediction, reference) pairs of one epoch
        self.best_running, self.best_epoch = -1.0, -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, X, Y, Z) of a padded image batch (B, C, X, Y, Z), C = len(features)."""
        return self.net(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["image"]), batch["label"])
        self.log(
            "train/loss", loss, on_step=False, on_epoch=True, batch_size=batch["image"].shape[0]
        )
        return loss

    @torch.no_grad()
    def core_probability(self, image: torch.Tensor) -> torch.Tensor:
        """Core probability (B, X, Y, Z) of whole volumes (B, C, X, Y, Z): pad, slide, crop back."""
        shape = image.shape[2:]
        padded = torch.stack([torch.as_tensor(self.pad(x)) for x in image])
        logits = self.inferer(padded, self.net)
        probs = torch.softmax(torch.as_tensor(logits), dim=1)[:, 1]
        return probs[:, : shape[0], : shape[1], : shape[2]]

    @torch.no_grad()
    def segment(self, image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Bool core (B, X, Y, Z): probability > 0.5 inside ``keep`` (B, 1, X, Y, Z)."""
        return (self.core_probability(image) > 0.5) & (keep[:, 0] > 0)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self.segment(batch["image"], batch["keep"]).cpu().numpy()
        ref = batch["label"][:, 0].cpu().numpy() > 0
        self.epoch_dice.extend([pred, ref])

    def on_validation_epoch_end(self) -> None:
        """Pooled Dice over the validation patients, its running mean, and weight selection.

        The Dice is pooled over all validation voxels (one ratio, not a mean of per-patient
        ratios) so that a validation patient with a core of a few voxels cannot make the
        score 0 at every epoch. The best running mean is only taken once the window is full
        (or at the last epoch of a shorter training): a window of one or two early epochs is
        too noisy and once selected a nearly untrained model on the phantom cohort.
        """
        pairs, self.epoch_dice = self.epoch_dice, []
        if not pairs or self.trainer.sanity_checking:
            return
        self.val_dice.append(dice(np.stack(pairs[0::2]), np.stack(pairs[1::2])))
        window = self.hparams.running_mean_epochs
        running = float(np.mean(self.val_dice[-window:]))
        self.log_dict({"val/dice": self.val_dice[-1], "val/dice_running": running})
        every = self.trainer.check_val_every_n_epoch or 1
        full = len(self.val_dice) >= min(window, (self.trainer.max_epochs or window) // every)
        if self.hparams.selection == "running_mean" and full and running > self.best_running:
            self.best_running, self.best_epoch = running, self.current_epoch
            self.best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in self.state_dict().items()}
            )

    def use_selected(self) -> int:
        """Load the selected weights (running-mean best, or the last epoch); return that epoch."""
        if self.hparams.selection == "running_mean" and self.best_state is not None:
            self.load_state_dict(self.best_state)
            return self.best_epoch
        return self.current_epoch

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=self.hparams.lr,
            total_steps=max(1, self.hparams.total_steps),
            pct_start=self.hparams.pct_start,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


MODEL_FILE = "model.pt"


def save_bundle(module: SegmentationModule, folder: Path, meta: dict[str, Any]) -> Path:
    """Write ``model.pt``: constructor arguments, weights and ``meta`` (input method, grid, ...)."""
    payload = {"hparams": dict(module.hparams), "state_dict": module.state_dict(), "meta": meta}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes_atomic(Path(folder) / MODEL_FILE, buffer.getvalue())


def load_bundle(path: str | Path) -> tuple[SegmentationModule, dict[str, Any]]:
    """A trained module (eval mode, CPU) and its ``meta`` from ``model.pt`` or its folder."""
    path = Path(path)
    path = path / MODEL_FILE if path.is_dir() else path
    if not path.is_file():
        raise PerfusionError("no trained model (run `perfusion train-seg` first)", path)
    payload = load_torch_file(path, "trained model")  # tensors and plain values only
    try:
        hparams = {k: v for k, v in payload["hparams"].items() if k not in LEGACY_HPARAMS}
        module = SegmentationModule(**hparams)
        module.load_state_dict(payload["state_dict"])
        meta = payload["meta"]
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PerfusionError(f"unreadable model: {first}", path) from None
    return module.eval(), meta
