"""FieldFitModule: fits one patient's fields with Lightning (thin: sample, call the step, log)."""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import lightning as L
import torch
from torch import nn

from perfusion.fitting.config import LossConfig, OptimConfig, as_loss_config
from perfusion.fitting.sampling import CaseSamples, FitBatch
from perfusion.fitting.steps import (
    FeatureSource,
    anchor_weight,
    check_finite,
    compute_losses,
    make_optimizer,
    optimizer_groups,
)
from perfusion.physics import l1


class FieldFitModule(L.LightningModule):
    """One patient's ReSPPINN/SPPINN fit (resppinn-paper.txt Eq. (4)-(5), Tables 2-3).

    Logs ``train/{total,tac,aif,ode}`` every step, ``train/lr``, and ``val/tac`` (L1 on the
    held-out voxel-time samples, in ΔHU) every ``val_every`` steps. Keeps a plain ``history``
    of the same numbers for the report.

    Args:
        fields: PerfusionFields (parameters being fitted).
        samples: the case's data in Domain units, on the fit's device.
        features: voxel features by row (hash-grid plan built once).
        loss: the loss options (LossConfig: variant, norm), or just a variant name.
        optim: Adam/OneCycle settings; total_steps: the scheduler's length.
        val_every: steps between held-out evaluations.
        tissue_hu_per_unit: converts the held-out L1 to ΔHU for logging.
        select_best: restore the weights of the lowest held-out L_TAC at the end.
        early_stop_patience: held-out evaluations without improvement before stopping (0: off).
    """

    def __init__(
        self,
        fields: nn.Module,
        samples: CaseSamples,
        features: FeatureSource,
        loss: LossConfig | str,
        optim: OptimConfig,
        total_steps: int,
        val_every: int = 50,
        tissue_hu_per_unit: float = 1.0,
        select_best: bool = False,
        early_stop_patience: int = 0,
    ) -> None:
        super().__init__()
        self.fields, self.samples, self.features = fields, samples, features
        self.loss = as_loss_config(loss)
        self.optim, self.total_steps = optim, int(total_steps)
        self.val_every, self.hu = max(int(val_every), 1), float(tissue_hu_per_unit)
        self.select_best, self.patience = select_best, int(early_stop_patience)
        self.save_hyperparameters(
            {
                "loss": vars(self.loss),
                "total_steps": total_steps,
                "lr": optim.lr,
                "val_every": val_every,
            }
        )
        self.history: list[dict[str, float]] = []
        self.best: tuple[float, int, dict | None] = (float("inf"), -1, None)
        self._stale = 0

    def training_step(self, batch: FitBatch, batch_idx: int) -> torch.Tensor:
        weight = anchor_weight(self.loss, self.global_step, self.total_steps)
        losses = compute_losses(self.fields, self.features, self.samples, batch, self.loss, weight)
        check_finite(losses, self.global_step)
        values = losses.as_floats()
        self.log_dict({f"train/{k}": v for k, v in values.items()}, prog_bar=False)
        self.log("train/tac_hu", values["tac"] * self.hu, prog_bar=True)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer else self.optim.lr
        self.log("train/lr", lr)
        self.history.append({"step": float(self.global_step), **values})
        if (self.global_step + 1) % self.val_every == 0 or self.global_step + 1 == self.total_steps:
            self._validate()
        return losses.total

    @torch.no_grad()
    def heldout_tac(self) -> float:
        """L1 (unit attenuation) of f_TAC on the held-out voxel-time samples."""
        batch = self.samples.heldout_batch()
        if len(batch.rows) == 0:
            return float("nan")
        feat = self.features(self.fields, batch.rows)
        return float(l1(self.fields.tac(feat, batch.t), batch.tac))

    def _validate(self) -> None:
        value = self.heldout_tac()
        self.log("val/tac", value)
        self.log("val/tac_hu", value * self.hu)
        self.history[-1]["val_tac"] = value
        if value < self.best[0]:
            state = copy.deepcopy(self.fields.state_dict()) if self.select_best else None
            self.best, self._stale = (value, self.global_step + 1, state), 0
            return
        self._stale += 1
        if self.patience and self._stale >= self.patience:
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        if self.select_best and self.best[2] is not None:
            self.fields.load_state_dict(self.best[2])

    def configure_optimizers(self):
        optimizer, scheduler = make_optimizer(
            optimizer_groups(self.fields, self.optim), self.optim, self.total_steps
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def run_trainer(
    module: FieldFitModule,
    data: L.LightningDataModule,
    steps: int,
    progress_bar: bool = True,
    logger: Any = None,
) -> None:
    """Fit ``module`` for ``steps`` optimiser steps (the batch stream is endless; max_steps ends it)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # an endless in-memory stream needs no workers and has no epoch length
        warnings.filterwarnings(
            "ignore", message=".*(num_workers|log_every_n_steps|IterableDataset).*"
        )
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=1,
            accelerator="gpu" if module.samples.tac.is_cuda else "cpu",
            devices=1,
            logger=logger if logger is not None else False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            log_every_n_steps=max(1, min(10, steps)),
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=data)
