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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.callbacks import EarlyStopping

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

    def callbacks(self, cfg: StopConfig) -> list[EarlyStopping]:
        """The EarlyStopping callbacks of the rule (none for ``none``)."""
        out = []
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


def stop_reason(callbacks: list[EarlyStopping], steps_run: int, cap: int, plan: StopPlan) -> str:
    """One line: why the fit ended after ``steps_run`` of at most ``cap`` steps."""
    for callback in callbacks:
        if callback.stopping_reason_message:
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


def summary(plan: StopPlan, reason: str, steps_run: int, best: dict[str, Any]) -> dict[str, Any]:
    """The ``stop`` entry of summary.json."""
    return {
        "rule": plan.rule,
        "step": int(steps_run),
        "reason": reason,
        "target_rms_hu": plan.target_rms_hu,
        "maps_from_step": int(best["step"])
        if plan.keep_best and best.get("step")
        else int(steps_run),
    }
