"""FieldFitModule: fits one patient's fields with Lightning (thin: sample, call the step, log)."""

from __future__ import annotations

import math
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
    eq1_prediction,
    make_optimizer,
    optimizer_groups,
)
from perfusion.fitting.stopping import HELDOUT_MONITOR, NOISE_MONITOR
from perfusion.progress import StepProgressBar
from perfusion.tracking import quiet_lightning


class FieldFitModule(L.LightningModule):
    """One patient's ReSPPINN/SPPINN fit (the ReSPPINN paper's Eq. (4)-(5), Tables 2-3).

    Logs ``train/{total,tac,aif,ode,anchor}`` and ``train/rms_hu`` (the data residual's RMS in
    ΔHU) every step, ``train/lr``; at every check (Lightning's validation, every
    ``val_every`` steps) ``val/rms_hu`` of the held-out voxels and the two monitors of
    perfusion.fitting.stopping. Keeps a plain ``history`` of the same numbers.

    Args:
        fields: PerfusionFields (parameters being fitted).
        samples: the case's data in Domain units, on the fit's device.
        features: voxel features by row (hash-grid plan built once).
        loss: the loss options (LossConfig), or just a variant name.
        optim: Adam and its schedule; total_steps: the cap (OneCycleLR's length).
        tissue_hu_per_unit: converts residuals to ΔHU.
        ema: weight of the past in the moving average of the training RMS.
    """

    def __init__(
        self,
        fields: nn.Module,
        samples: CaseSamples,
        features: FeatureSource,
        loss: LossConfig | str,
        optim: OptimConfig,
        total_steps: int,
        tissue_hu_per_unit: float = 1.0,
        ema: float = 0.8,
    ) -> None:
        super().__init__()
        self.fields, self.samples, self.features = fields, samples, features
        self.loss = as_loss_config(loss)
        self.optim, self.total_steps = optim, int(total_steps)
        self.hu, self.ema = float(tissue_hu_per_unit), float(ema)
        self.save_hyperparameters(
            {"loss": vars(self.loss), "total_steps": total_steps, "lr": optim.lr}
        )
        self.history: list[dict[str, float]] = []
        self.rms_ema_hu = float("nan")  # the training residual's moving average (ΔHU)
        self.heldout_hu = float("nan")  # the held-out residual at the last check (ΔHU)

    def training_step(self, batch: FitBatch, batch_idx: int) -> torch.Tensor:
        weight = anchor_weight(self.loss, self.global_step, self.total_steps)
        losses = compute_losses(self.fields, self.features, self.samples, batch, self.loss, weight)
        check_finite(losses, self.global_step)
        values = losses.as_floats()
        rms_hu = values.pop("rms") * self.hu
        past = self.ema if math.isfinite(self.rms_ema_hu) else 0.0
        self.rms_ema_hu = past * self.rms_ema_hu if past else 0.0
        self.rms_ema_hu += (1.0 - past) * rms_hu
        self.log_dict({f"train/{k}": v for k, v in values.items()})
        self.log("train/rms_hu", rms_hu, prog_bar=True)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer else self.optim.lr
        self.log("train/lr", lr)
        self.history.append({"step": self.global_step + 1, **values, "rms_hu": rms_hu})
        return losses.total

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """One check: the held-out voxels' RMS and the stopping monitors (logs only)."""
        heldout = self.heldout_hu = self.heldout_rms_hu()
        one = {"batch_size": 1}  # the placeholder batch says nothing about a size
        self.log(NOISE_MONITOR, math.log(max(self.rms_ema_hu, 1e-30)), **one)
        self.log("stop/rms_hu", self.rms_ema_hu, **one)
        if math.isfinite(heldout):
            self.log("val/rms_hu", heldout, prog_bar=True, **one)
            self.log(HELDOUT_MONITOR, math.log(max(heldout, 1e-30)), **one)
            if self.history:
                self.history[-1]["val_rms_hu"] = heldout

    @torch.no_grad()
    def heldout_rms_hu(self) -> float:
        """RMS (ΔHU) of the fit against the held-out voxels' curves; NaN without any."""
        batch = self.samples.heldout_batch()
        if len(batch.rows) == 0:
            return float("nan")
        feat = self.features(self.fields, batch.rows)
        fitted = eq1_prediction(self.fields, feat, self.samples, batch.t, self.loss)
        return float((fitted - batch.tac).square().mean().sqrt()) * self.hu

    def configure_optimizers(self):
        optimizer, scheduler = make_optimizer(
            optimizer_groups(self.fields, self.optim), self.optim, self.total_steps
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class FitProgressBar(StepProgressBar):
    """One bar for the fit: step, residual and held-out RMS against the noise, elapsed time.

    ``fit step 120 (at most 1000) |##  | 00:07, residual=5.31 ΔHU, held-out=5.4 ΔHU,
    noise=5.02 ΔHU``: no epoch, no ``v_num``, no validation bars. Under a stopping rule (an
    EarlyStopping callback) ``steps`` is only a cap, so the bar says "at most": a fit that stops
    at 30 must not read as 30 of 1000 done; without one it shows ``step 120/1000``. The noise is
    the level the ``noise`` stopping rule stops at (its EarlyStopping ``stopping_threshold``, a
    log RMS); absent under other rules. Without a terminal, lines (:class:`StepProgressBar`).
    """

    BAR_FORMAT = "{desc} step {n_fmt} (at most {total_fmt}) |{bar:16}| {elapsed}{postfix}"
    FIXED_BAR_FORMAT = StepProgressBar.BAR_FORMAT
    """The bar without a stopping rule: every one of ``steps`` runs."""

    def __init__(self, refresh_rate: int = 10, line_every: int = 100) -> None:
        super().__init__("fit", refresh_rate, line_every)

    def bar_format(self, trainer: L.Trainer) -> str:
        """``BAR_FORMAT`` when a stopping rule may end the fit early, else ``FIXED_BAR_FORMAT``."""
        return self.BAR_FORMAT if trainer.early_stopping_callbacks else self.FIXED_BAR_FORMAT

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = trainer.progress_bar_metrics
        shown = {"residual": metrics.get("train/rms_hu"), "held-out": metrics.get("val/rms_hu")}
        shown["noise"] = noise_target_hu(trainer)
        return {k: f"{float(v):.3g} ΔHU" for k, v in shown.items() if v is not None}


def noise_target_hu(trainer: L.Trainer) -> float | None:
    """The residual RMS (ΔHU) at which the ``noise`` rule stops, or None without one."""
    for callback in trainer.early_stopping_callbacks:
        if callback.monitor == NOISE_MONITOR and callback.stopping_threshold is not None:
            return math.exp(float(callback.stopping_threshold))
    return None


def run_trainer(
    module: FieldFitModule,
    data: L.LightningDataModule,
    steps: int,
    val_every: int,
    callbacks: list[L.Callback],
    progress_bar: bool = True,
    logger: Any = None,
    min_steps: int = 0,
) -> L.Trainer:
    """Fit ``module`` for at most ``steps`` optimiser steps (the batch stream is endless;
    max_steps or a stopping callback ends it, the latter not before ``min_steps``), checking
    every ``val_every`` steps."""
    quiet_lightning()
    with warnings.catch_warnings():
        # an endless in-memory stream needs no workers and has no epoch length
        warnings.filterwarnings(
            "ignore", message=".*(num_workers|log_every_n_steps|IterableDataset|LeafSpec).*"
        )
        trainer = L.Trainer(
            max_steps=steps,
            min_steps=min(int(min_steps), steps) if min_steps > 0 else None,
            min_epochs=0,  # else min_steps sets it to 1: no stop before this one epoch's end
            max_epochs=1,
            accelerator="gpu" if module.samples.tac.is_cuda else "cpu",
            devices=1,
            logger=logger if logger is not None else False,
            callbacks=[*callbacks, *([FitProgressBar(refresh_rate=10)] if progress_bar else [])],
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            log_every_n_steps=max(1, min(10, steps)),
            num_sanity_val_steps=0,
            val_check_interval=max(1, min(int(val_every), steps)),
            check_val_every_n_epoch=None,
        )
        trainer.fit(module, datamodule=data)
    return trainer
