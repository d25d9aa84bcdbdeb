"""The fit's pure step: losses of one batch, one optimiser step, the optimiser and the f_AIF pre-fit.

Shared verbatim by :class:`~perfusion.fitting.module.FieldFitModule` (Lightning, automatic
optimisation) and by Reptile's inner loop (plain torch optimisers per task), so that a fit from
a meta-learned initialisation repeats the inner loop exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from perfusion.errors import PerfusionError
from perfusion.fitting.config import (
    AIF_SOURCES,
    LOSS_NORMS,
    LOSS_VARIANTS,
    SCHEDULES,
    FitConfig,
    LossConfig,
    OptimConfig,
    as_loss_config,
)
from perfusion.fitting.ode_start import prefit_ode
from perfusion.fitting.sampling import CaseSamples, FitBatch
from perfusion.physics import CumulativeAif, box_model_tac, l1, l2, ode_residual, total_loss


@dataclass
class LossTerms:
    """Scalar losses of one batch (Eq. (5), Table 3), each a 0-d tensor in unit attenuation."""

    total: Tensor
    tac: Tensor
    """The data term: f_TAC against the data, or Eq. (1)'s prediction against it (``direct``)."""
    aif: Tensor
    ode: Tensor
    """The Eq. (4) residual term (0 for ``direct``, where Eq. (1) is the data term)."""
    anchor: Tensor
    """Mean squared log-ratio of f_ODE to the pre-fit's start (0 without one); in ``total``
    with the step's anchor weight (:func:`anchor_weight`)."""
    rms: Tensor
    """RMS of the data residual (unit attenuation, detached), whatever ``norm``: what the
    stopping rule compares with the noise."""

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items()}


class FeatureSource:
    """Spatial features of a case's V fixed voxel positions, looked up by row.

    With a hash encoding, every voxel's corner rows and trilinear weights are computed once
    (``encoding.plan``) and each step only gathers its rows (``forward_plan``): the geometry
    never changes during a fit, only the table does. Without one (SPPINN) the features are the
    coordinates themselves.
    """

    def __init__(self, fields: nn.Module, x: Tensor) -> None:
        self.plan = fields.plan(x)

    def __call__(self, fields: nn.Module, rows: Tensor) -> Tensor:
        """(B,) int64 rows -> (B, E) features."""
        return fields.features_plan(self.plan, rows)


def compute_losses(
    fields: nn.Module,
    features: FeatureSource,
    samples: CaseSamples,
    batch: FitBatch,
    loss: LossConfig | str,
    anchor: float = 0.0,
) -> LossTerms:
    """The losses of one batch under ``loss`` (LossConfig, or a variant name).

    ``direct``: the data term compares Eq. (1)'s prediction from f_ODE with the data (no
    f_TAC, no residual term); L_AIF fits f_AIF only when it is the AIF in Eq. (1). The other
    variants: L_TAC, L_AIF and L_ODE of Eq. (4), where L_AIF is the mean over all T frames (the
    expectation of Table 3's per-sample mean), ``detached`` stops the residual's gradient into
    f_TAC (dC/dt enters as data), so a noisy f_TAC cannot flatten to satisfy the ODE, and
    ``integral`` compares the detached f_TAC with Eq. (1)'s solution instead. ``loss.norm``
    chooses L1 (Table 3) or squared errors for every term. ``anchor`` weighs the pull of f_ODE
    toward ``samples.ode_start`` (:func:`anchor_weight`; no term without a start).
    """
    cfg = as_loss_config(loss)
    variant, grid = cfg.variant, int(cfg.aif_grid_points)
    if variant not in LOSS_VARIANTS:
        raise PerfusionError(f"loss.variant: {variant!r}, expected one of {LOSS_VARIANTS}")
    if cfg.norm not in LOSS_NORMS:
        raise PerfusionError(f"loss.norm: {cfg.norm!r}, expected one of {LOSS_NORMS}")
    if cfg.aif not in AIF_SOURCES:
        raise PerfusionError(f"loss.aif: {cfg.aif!r}, expected one of {AIF_SOURCES}")
    norm = l1 if cfg.norm == "l1" else l2
    feat = features(fields, batch.rows)
    flow, mtt, delay = fields.ode(feat).split(1, dim=1)
    zero = flow.new_zeros(())
    uses_aif_field = variant != "direct" or cfg.aif == "field"
    loss_aif = (
        norm(fields.aif(samples.frame_t.unsqueeze(1)), samples.aif.unsqueeze(1))
        if uses_aif_field
        else zero
    )
    if variant == "direct":
        fitted = box_model_tac(_cumulative(fields, samples, cfg, grid), batch.t, flow, mtt, delay)
        loss_ode = zero
    else:
        fitted = tac_at(fields, feat, batch.t)
        if variant == "integral":
            residual = _integral_residual(fields, feat, samples, batch.tau, flow, mtt, delay, grid)
        else:
            residual = _derivative_residual(
                fields, feat, samples, batch.tau, flow, mtt, delay, variant
            )
        loss_ode = norm(residual, torch.zeros_like(residual))
    loss_tac = norm(fitted, batch.tac)
    rms = (fitted.detach() - batch.tac).square().mean().sqrt()
    total = total_loss(loss_tac, loss_aif, loss_ode)
    loss_anchor = torch.zeros_like(total)
    if samples.ode_start is not None:
        start = samples.ode_start[batch.rows].clamp_min(1e-12).log()
        loss_anchor = l2(torch.cat([flow, mtt, delay], dim=1).log(), start)
        if anchor > 0:
            total = total + anchor * loss_anchor
    return LossTerms(total, loss_tac, loss_aif, loss_ode, loss_anchor, rms)


def tac_at(fields: nn.Module, feat: Tensor, t: Tensor) -> Tensor:
    """f_TAC of B voxels (features (B, E)) at their times ``t`` (B, F) -> (B, F)."""
    n_times = t.shape[1]
    return fields.tac(feat.unsqueeze(1).expand(-1, n_times, -1), t.unsqueeze(-1)).squeeze(-1)


def _cumulative(fields: nn.Module, samples: CaseSamples, cfg: LossConfig, grid: int):
    """``cumA`` for ``direct``: the measured AIF's (fixed), or f_AIF's (rebuilt every step)."""
    if cfg.aif == "measured":
        return samples.measured_cumulative()
    return CumulativeAif(fields.aif, samples.t_start, samples.t_end, grid, samples.tac.device)


def eq1_prediction(
    fields: nn.Module, feat: Tensor, samples: CaseSamples, t: Tensor, loss: LossConfig | str
) -> Tensor:
    """What a fit says the data are at times ``t`` (B, F): Eq. (1) from f_ODE for ``direct``,
    f_TAC otherwise."""
    cfg = as_loss_config(loss)
    if cfg.variant != "direct":
        return tac_at(fields, feat, t)
    flow, mtt, delay = fields.ode(feat).split(1, dim=1)
    cumulative = _cumulative(fields, samples, cfg, int(cfg.aif_grid_points))
    return box_model_tac(cumulative, t, flow, mtt, delay)


def anchor_weight(loss: LossConfig | str, step: int, total_steps: int) -> float:
    """The anchor's weight at ``step`` (0-based) of ``total_steps``: ``loss.anchor`` falling
    linearly to 0 at ``loss.anchor_share`` of the steps."""
    cfg = as_loss_config(loss)
    if cfg.anchor <= 0 or cfg.anchor_share <= 0:
        return 0.0
    return cfg.anchor * max(0.0, 1.0 - step / (cfg.anchor_share * max(int(total_steps), 1)))


def _derivative_residual(fields, feat, samples, tau, flow, mtt, delay, variant: str) -> Tensor:
    """Eq. (4) at collocation times ``tau`` (B, K), dC/dtau of f_TAC by autograd (detached
    unless ``variant`` is literal) -> (B, K)."""
    literal = variant == "literal"
    tau_grad = tau.detach().requires_grad_(True)
    with torch.enable_grad():
        c_tau = tac_at(fields, feat if literal else feat.detach(), tau_grad)
        (dc_dtau,) = torch.autograd.grad(c_tau.sum(), tau_grad, create_graph=literal)
    if not literal:
        dc_dtau = dc_dtau.detach()
    # f_AIF maps (N, 1) -> (N, 1): the K times of each voxel go along a trailing axis
    column = (v.unsqueeze(-1) for v in (dc_dtau, flow, mtt, delay, tau))
    dc, f, m, d, t = column
    return ode_residual(dc, f, m, d, fields.aif, t, samples.t_start).squeeze(-1)


def _integral_residual(fields, feat, samples, tau, flow, mtt, delay, grid: int) -> Tensor:
    """Eq. (1) integrated from the first frame: detached f_TAC(x, tau) minus the box model."""
    with torch.no_grad():
        c_tau = tac_at(fields, feat, tau)
    cumulative = CumulativeAif(fields.aif, samples.t_start, samples.t_end, grid, tau.device)
    return c_tau - box_model_tac(cumulative, tau, flow, mtt, delay)


def check_finite(losses: LossTerms, step: int) -> None:
    """Raise a clear error naming the step when the loss diverged."""
    if not torch.isfinite(losses.total):
        values = ", ".join(f"{k} {v:.3g}" for k, v in losses.as_floats().items())
        raise PerfusionError(
            f"fit diverged at step {step}: non-finite loss ({values}); try a lower optim.lr"
        )


def train_step(
    fields: nn.Module,
    features: FeatureSource,
    samples: CaseSamples,
    batch: FitBatch,
    loss: LossConfig | str,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    total_steps: int,
) -> LossTerms:
    """One plain-torch optimisation step (Reptile's inner step); the same maths as the module."""
    optimizer.zero_grad(set_to_none=True)
    weight = anchor_weight(loss, step, total_steps)
    losses = compute_losses(fields, features, samples, batch, loss, weight)
    check_finite(losses, step)
    losses.total.backward()
    optimizer.step()
    scheduler.step()
    return losses


def optimizer_groups(fields: nn.Module, cfg: OptimConfig) -> list[dict]:
    """PerfusionFields' parameters as Adam groups: f_ODE's networks at ``lr * ode_lr_scale``,
    the encoding, f_TAC and f_AIF at ``lr``."""
    groups = fields.parameter_groups()
    ode = groups.pop("ode")
    rest = [p for part in groups.values() for p in part]
    return [{"params": rest, "lr": cfg.lr}, {"params": ode, "lr": cfg.lr * cfg.ode_lr_scale}]


def make_optimizer(
    parameters, cfg: OptimConfig, total_steps: int
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LRScheduler]:
    """Adam at ``cfg.lr`` and its schedule: ``constant`` after a linear warm-up, or Table 2's
    OneCycleLR over ``total_steps`` (no warm-up by default).

    ``parameters``: tensors, or groups with their own peak ``lr`` (:func:`optimizer_groups`).
    """
    if cfg.schedule not in SCHEDULES:
        raise PerfusionError(f"optim.schedule: {cfg.schedule!r}, expected one of {SCHEDULES}")
    optimizer = torch.optim.Adam(parameters, lr=cfg.lr, eps=cfg.eps)
    if cfg.schedule == "constant":
        warmup = max(int(cfg.warmup_steps), 0)
        start = 1.0 / cfg.div_factor
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: 1.0 if step >= warmup else start + (1.0 - start) * step / warmup,
        )
        return optimizer, scheduler
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],  # each group's peak
        total_steps=max(int(total_steps), 2),
        pct_start=float(cfg.warmup_share),
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )
    return optimizer, scheduler


def prefit(
    fields: nn.Module, features: FeatureSource, samples: CaseSamples, cfg: FitConfig
) -> tuple[float, float]:
    """The pre-fits before the joint fit (FitConfig ``cfg``): f_AIF (unless the fit never uses
    it: ``direct`` with the measured AIF), then f_ODE when ``samples.ode_start`` is set; returns
    the f_AIF pre-fit's final L1 (AIF units) and the f_ODE pre-fit's final mean squared
    log-ratio (NaN when either did not run)."""
    loss = as_loss_config(cfg.loss)
    aif = float("nan")
    if loss.variant != "direct" or loss.aif == "field":
        aif = prefit_aif(fields, samples, cfg.aif_prefit_steps, cfg.aif_prefit_lr)
    ode = float("nan")
    if samples.ode_start is not None and cfg.ode_prefit_steps > 0:
        generator = torch.Generator().manual_seed(int(cfg.seed))
        ode = prefit_ode(
            fields,
            features,
            samples.ode_start,
            cfg.ode_prefit_steps,
            cfg.ode_prefit_lr,
            cfg.ode_prefit_voxels,
            generator,
            samples.voxel_order,
            cfg.ode_prefit_schedule,
            eps=cfg.ode_prefit_eps,
        )
    return aif, ode


def prefit_aif(fields: nn.Module, samples: CaseSamples, steps: int, lr: float) -> float:
    """Fit f_AIF alone to the T AIF samples with Adam (~0.5 s); returns the final L1 (units).

    A SIREN with omega_0 = 1 follows a sharp bolus slowly from random weights, and until it
    does the residual pushes f_ODE towards nonsense; a short 1-D fit first removes that phase.
    """
    if steps <= 0:
        return float("nan")
    params = list(fields.f_aif.parameters())
    optimizer = torch.optim.Adam(params, lr=lr, foreach=True)
    t, target = samples.frame_t.unsqueeze(1), samples.aif.unsqueeze(1)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = l1(fields.aif(t), target)
        loss.backward()
        optimizer.step()
    return float(loss.detach())
