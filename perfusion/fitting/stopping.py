"""When a fit stops: Lightning's ``EarlyStopping`` on the noise level or on held-out voxels.

The fit logs, every ``sampling.val_every`` steps, the log of two RMS residuals in ΔHU
(:class:`~perfusion.fitting.module.FieldFitModule`):

- ``stop/log_rms``: the training residual (a moving average over steps);
- ``val/log_rms``: the held-out voxels' residual.

``stop.rule=noise`` is the discrepancy principle: the data's noise (perfusion.noise) sets the
residual a perfect fit would leave, and once the training residual is within ``margin`` of it
every further step fits noise. EarlyStopping's ``stopping_threshold`` stops there; its
``patience``/``min_delta`` (on the log, so relative) stop a fit that can no longer improve
(a model that does not match the data never reaches the noise). When the noise is ~0 only
the plateau and the cap remain. ``stop.rule=heldout`` stops on the held-out plateau and keeps
the best held-out step's weights; ``both`` runs both callbacks.

Three more callbacks choose the weights the maps come from: :class:`BestHeldout` (the check
with the lowest held-out residual; restored under the held-out rules), :class:`AveragedWeights`
(with ``stop.average`` > 0 and no best step kept: an exponential moving average of the
weights over every step) and otherwise :class:`NoiseCrossing` (under the noise rule, the
weights interpolated to where the training residual crossed the target between the last two
checks, so that a change of the data far below the noise moves the maps continuously rather
than by a whole check interval).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.optim.swa_utils import get_ema_multi_avg_fn

from perfusion.errors import PerfusionError
from perfusion.fitting.config import STOP_RULES, STOP_TARGETS, StopConfig
from perfusion.noise import NoiseEstimate

NOISE_MONITOR = "stop/log_rms"
HELDOUT_MONITOR = "val/log_rms"
ZERO_NOISE_FRACTION = 1e-3
"""A noise SD below this fraction of the data's RMS enhancement counts as none."""


@dataclass
class StopPlan:
    """What the stopping rule of one fit will watch.

    Attributes:
        rule: the ``stop.rule``.
        target_rms_hu: the residual RMS at which ``noise`` stops, or None (noise ~0, or
            another rule).
        keep_best: restore the best held-out step's weights at the end.
    """

    rule: str
    target_rms_hu: float | None
    keep_best: bool

    def callbacks(self, cfg: StopConfig) -> list[Callback]:
        """The rule's EarlyStopping callbacks (none for ``none``), :class:`BestHeldout`, and,
        when no best step is kept, :class:`AveragedWeights` (``cfg.average`` > 0) or else
        :class:`NoiseCrossing` (when the noise rule has a target)."""
        out: list[Callback] = [BestHeldout(restore=self.keep_best)]
        if cfg.average > 0 and not self.keep_best:
            out.append(AveragedWeights(cfg.average))
        elif self.target_rms_hu is not None and not self.keep_best:
            out.append(NoiseCrossing(self.target_rms_hu))
        common = {
            "mode": "min",
            "patience": int(cfg.patience),
            "min_delta": float(cfg.min_delta),
            "check_on_train_epoch_end": False,
            "verbose": False,
        }
        if self.rule in ("noise", "both"):
            threshold = None if self.target_rms_hu is None else math.log(self.target_rms_hu)
            out.append(EarlyStopping(NOISE_MONITOR, stopping_threshold=threshold, **common))
        if self.rule in ("heldout", "both"):
            out.append(EarlyStopping(HELDOUT_MONITOR, **common))
        return out


def plan_stop(
    cfg: StopConfig, noise: NoiseEstimate, expected_rms_hu: float, data_rms_hu: float,
    has_heldout: bool,
) -> StopPlan:  # fmt: skip
    """The plan for ``cfg`` given the noise estimate, the residual RMS a perfect fit would leave
    (ΔHU) and the RMS of the data themselves (ΔHU, the scale against which noise counts as ~0)."""
    if cfg.rule not in STOP_RULES:
        raise PerfusionError(f"stop.rule: {cfg.rule!r}, expected one of {STOP_RULES}")
    if cfg.target not in STOP_TARGETS:
        raise PerfusionError(f"stop.target: {cfg.target!r}, expected one of {STOP_TARGETS}")
    if cfg.target == "sd":
        expected_rms_hu = noise.sd_hu
    if cfg.rule in ("heldout", "both") and not has_heldout:
        raise PerfusionError(
            f"stop.rule={cfg.rule} needs held-out voxels (sampling.heldout_share > 0)"
        )
    target = None
    noise_known = math.isfinite(expected_rms_hu) and expected_rms_hu > 0
    if cfg.rule in ("noise", "both") and noise_known:
        if expected_rms_hu > ZERO_NOISE_FRACTION * data_rms_hu:
            target = expected_rms_hu * (1.0 + float(cfg.margin))
    return StopPlan(cfg.rule, target, keep_best=cfg.rule in ("heldout", "both"))


class BestHeldout(Callback):
    """Notes the check with the lowest held-out RMS (the module's ``heldout_hu``, ΔHU); with ``restore``
    keeps a copy of the fields' weights there and loads it when training ends."""

    def __init__(self, restore: bool) -> None:
        self.restore, self.step, self.rms_hu = restore, 0, math.inf
        self.state: dict[str, Any] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = getattr(pl_module, "heldout_hu", math.nan)  # exact; the logged value is float32
        if not value < self.rms_hu:
            return
        self.rms_hu, self.step = float(value), int(trainer.global_step)
        if self.restore:
            self.state = copy.deepcopy(pl_module.fields.state_dict())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restore and self.state is not None:
            pl_module.fields.load_state_dict(self.state)


class AveragedWeights(Callback):
    """An exponential moving average of the fields' weights (weight ``decay`` on the past),
    starting from the weights the training starts from and updated after every optimiser step
    (torch's EMA rule, ``get_ema_multi_avg_fn``); loaded into the fields when training ends.

    Not Lightning's EMAWeightAveraging: it deep-copies the whole LightningModule (the case's
    data with it, and tiny-cuda-nn modules do not copy) and swaps the average in at every check;
    here only the fields' parameters are copied, and the checks see the weights being trained.
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)
        self.update = get_ema_multi_avg_fn(self.decay)
        self.average: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.average = [p.detach().clone() for p in pl_module.fields.parameters()]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self.update(self.average, [p.detach() for p in pl_module.fields.parameters()], None)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            for mean, current in zip(self.average, pl_module.fields.parameters(), strict=True):
                current.copy_(mean)


class NoiseCrossing(Callback):
    """Under the noise rule: notes, at each check, the training residual (the module's ``rms_ema_hu``) and
    the weights; when the fit stops at the check where the residual crossed ``target_hu``, loads
    the weights interpolated between that check and the one before (log-linear fraction
    ``alpha`` of the residual)."""

    def __init__(self, target_hu: float) -> None:
        self.target_hu = float(target_hu)
        self.previous: dict[str, Any] | None = None
        self.crossing: dict[str, Any] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rms = getattr(pl_module, "rms_ema_hu", math.nan)  # exact; the logged value is float32
        if not math.isfinite(rms):
            return
        fields = pl_module.fields.state_dict()
        now = {
            "step": int(trainer.global_step),
            "rms_hu": float(rms),
            "state": {k: v.detach().clone() for k, v in fields.items()},
        }
        before = self.previous
        if before is not None and self.crossing is None and now["rms_hu"] <= self.target_hu:
            high, low = math.log(before["rms_hu"]), math.log(now["rms_hu"])
            if high > math.log(self.target_hu):
                alpha = (high - math.log(self.target_hu)) / max(high - low, 1e-12)
                self.crossing = {"before": before, "step": now["step"], "alpha": alpha}
        self.previous = now

    def final(self, step: int) -> dict[str, Any] | None:
        """The crossing noted at the check the fit stopped on (step ``step``), if any."""
        crossing = self.crossing
        return crossing if crossing and crossing["step"] == step else None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        crossing = self.final(int(trainer.global_step))
        if crossing is None:
            return
        before, alpha = crossing["before"]["state"], crossing["alpha"]
        state = pl_module.fields.state_dict()
        pl_module.fields.load_state_dict(
            {
                k: before[k] + alpha * (v - before[k]) if v.is_floating_point() else v
                for k, v in state.items()
            }
        )

    def maps_step(self, step: int) -> float:
        """The (fractional) step the final weights stand for after ``step`` steps."""
        crossing = self.final(step)
        if crossing is None:
            return float(step)
        start = crossing["before"]["step"]
        return start + crossing["alpha"] * (crossing["step"] - start)


def _find(callbacks: list[Callback], kind: type) -> Any:
    return next((c for c in callbacks if isinstance(c, kind)), None)


def stop_reason(callbacks: list[Callback], steps_run: int, cap: int, plan: StopPlan) -> str:
    """One line: why the fit ended after ``steps_run`` of at most ``cap`` steps."""
    for callback in callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopping_reason_message:
            which = "noise level" if callback.monitor == NOISE_MONITOR else "held-out voxels"
            return f"{which}: {_plain(callback, plan)}"
    if plan.rule == "none":
        return f"stop.rule=none: ran steps={cap}"
    return f"cap: steps={cap} reached before the stopping rule"


def _plain(callback: EarlyStopping, plan: StopPlan) -> str:
    """EarlyStopping's reason in ΔHU rather than log-ΔHU."""
    best = math.exp(float(callback.best_score))
    if callback.stopping_reason.name == "STOPPING_THRESHOLD" and plan.target_rms_hu is not None:
        return f"training residual RMS reached {plan.target_rms_hu:.3g} ΔHU"
    if callback.stopping_reason.name == "PATIENCE_EXHAUSTED":
        return (
            f"no relative improvement of {abs(callback.min_delta):g} in {callback.patience} checks "
            f"(best RMS {best:.3g} ΔHU)"
        )
    return str(callback.stopping_reason_message)


def summary(
    plan: StopPlan, reason: str, steps_run: int, callbacks: list[Callback]
) -> dict[str, Any]:
    """The ``stop`` entry of summary.json: the rule, the steps run, why, the target and the
    step the maps come from (fractional at an interpolated noise crossing)."""
    best, crossing = _find(callbacks, BestHeldout), _find(callbacks, NoiseCrossing)
    averaged = _find(callbacks, AveragedWeights)
    if plan.keep_best:
        maps_step: float = int(best.step) if best and best.step else int(steps_run)
    else:
        maps_step = round(crossing.maps_step(steps_run) if crossing else float(steps_run), 2)
    return {
        "rule": plan.rule,
        "step": int(steps_run),
        "reason": reason,
        "target_rms_hu": plan.target_rms_hu,
        "maps_from_step": maps_step,
        **({"maps_from": f"average of the weights (decay {averaged.decay:g})"} if averaged else {}),
    }


def best_heldout_step(callbacks: list[Callback]) -> int:
    """The step of the lowest held-out residual (0 without held-out voxels or checks)."""
    best = _find(callbacks, BestHeldout)
    return int(best.step) if best else 0
