"""Fit ReSPPINN (3-D, one fit per volume) or SPPINN (2-D, one fit per slice) fields to a case.

Builds the Domain-unit data of the tissue voxels, the fields, the f_AIF pre-fit, runs
:class:`FieldFitModule` under a Lightning Trainer, then samples f_ODE at every brain voxel and
f_TAC at every tissue voxel and frame (the fitqc residual), all back in physical units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from perfusion.domain import Domain
from perfusion.fields import PerfusionFields, build_fields
from perfusion.fitting import stopping
from perfusion.fitting.config import FitConfig, LossConfig, resolve_steps, start_grid
from perfusion.fitting.data import CaseDataModule
from perfusion.fitting.init import load_init
from perfusion.fitting.module import FieldFitModule, run_trainer
from perfusion.fitting.ode_start import (
    grid_start_units,
    merged_curves,
    refit_baseline,
    smoothed_start,
)
from perfusion.fitting.sampling import CaseSamples
from perfusion.fitting.steps import FeatureSource, eq1_prediction, prefit
from perfusion.fitting.stopping import plan_stop, stop_reason
from perfusion.noise import estimate_noise, fit_noise
from perfusion.physics import aif_between_frames
from perfusion.prepared import PreparedCase

_CHUNK = 8192


@dataclass
class FieldFit:
    """What a neural fit hands to the maps and the report (physical units, scan grid).

    ``flow_per_s``, ``mtt_s``, ``delay_s`` and ``fitqc_hu`` are volumes (0 outside their mask);
    ``curves`` holds the fitted AIF and a few voxels' data and f_TAC for the report.
    """

    flow_per_s: np.ndarray
    mtt_s: np.ndarray
    delay_s: np.ndarray
    fitqc_hu: np.ndarray
    history: list[dict[str, float]]
    steps: int
    losses: dict[str, float]
    curves: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def fit_fields(prepared: PreparedCase, cfg: FitConfig, logger: Any = None) -> FieldFit:
    """Fit the neural fields of ``cfg.method`` to ``prepared`` (see the module docstring)."""
    torch.manual_seed(cfg.seed)
    domain = Domain.from_config(cfg.domain, prepared.bolus_arrival_s)
    device = _device(cfg.device)
    shape = prepared.shape
    out = {k: np.zeros(shape) for k in ("flow", "mtt", "delay", "qc")}
    slices = (
        [None]
        if not cfg.slice_wise
        else [z for z in range(shape[2]) if prepared.tissue[..., z].any()]
    )
    runs = []
    for index, z in enumerate(slices):
        region = np.zeros(shape, dtype=bool)
        if z is None:
            region[:] = True
        else:
            region[..., z] = True
        run = _fit_region(prepared, cfg, domain, region, device, logger if index == 0 else None)
        for key in out:
            out[key] += run.pop(key)
        runs.append(run)
    first = runs[0]
    return FieldFit(
        flow_per_s=out["flow"],
        mtt_s=out["mtt"],
        delay_s=out["delay"],
        fitqc_hu=out["qc"],
        history=_mean_history([r["history"] for r in runs]),
        steps=first["steps"],
        losses={k: float(np.mean([r["losses"][k] for r in runs])) for k in first["losses"]},
        curves=first["curves"],
        info={"domain": domain.to_dict(), "fits": len(runs), **first["info"]},
    )


def _fit_region(
    prepared: PreparedCase,
    cfg: FitConfig,
    domain: Domain,
    region: np.ndarray,
    device: torch.device,
    logger: Any,
) -> dict[str, Any]:
    """One fit over the tissue voxels inside ``region`` (the volume, or one slice)."""
    dims = _dims(cfg)
    tissue = prepared.tissue & region
    samples = case_samples(prepared, cfg, domain, region).to(device)
    fields = build_fields(cfg.fields, len(dims))
    info: dict[str, Any] = {}
    if cfg.init:
        checkpoint = load_init(fields, cfg.init, domain.scales())
        info["init"] = {
            "path": str(cfg.init),
            "sha256": checkpoint.get("sha256"),
            "fit": checkpoint.get("fit"),
        }
    fields = fields.to(device)
    features = FeatureSource(fields, samples.x)
    aif_l1, ode_mse = prefit(fields, features, samples, cfg)
    info["aif_prefit_l1_hu"] = domain.aif_hu(aif_l1)
    info["ode_prefit_mse_log"] = ode_mse
    steps = resolve_steps(cfg)
    noise, expected = fit_noise(
        prepared.tissue_hu[tissue],
        prepared.frame_times_s,
        prepared.bolus_arrival_s,
        prepared.meta.get("baseline_frames", 1),
    )
    data_rms = domain.tissue_hu(float(samples.tac.square().mean().sqrt()))
    plan = plan_stop(cfg.stop, noise, expected, data_rms, len(samples.heldout_rows) > 0)
    module = FieldFitModule(
        fields,
        samples,
        features,
        cfg.loss,
        cfg.optim,
        steps,
        domain.tissue_hu_per_unit,
        ema=cfg.stop.ema,
    )
    callbacks = plan.callbacks(cfg.stop)
    steps_run, train_s = 0, 0.0
    if steps > 0:  # 0: the pre-fits only
        data = CaseDataModule(samples, cfg.sampling, cfg.seed, steps)
        started = time.perf_counter()
        trainer = run_trainer(
            module, data, steps, cfg.sampling.val_every, callbacks, cfg.progress_bar, logger,
            min_steps=cfg.stop.min_steps,
        )  # fmt: skip
        steps_run, train_s = int(trainer.global_step), time.perf_counter() - started
    reason = (
        stop_reason(callbacks, steps_run, steps, plan) if steps > 0 else "steps=0: pre-fits only"
    )
    fields.eval()
    params = _sample_ode(fields, prepared, domain, region & prepared.brain, dims, device)
    qc = _fitqc(fields, features, samples, domain, cfg.loss)
    history = module.history
    return {
        **params,
        "qc": _scatter(qc, tissue),
        "history": history,
        "steps": steps_run,
        "losses": {
            **{k: v for k, v in (history[-1] if history else {}).items() if k != "step"},
            "val_rms_hu": module.heldout_rms_hu(),
        },
        "curves": _curves(fields, features, samples, domain, params, tissue, cfg.loss),
        "info": {
            **info,
            "noise": {**noise.to_dict(), "expected_residual_rms_hu": expected},
            "stop": stopping.summary(plan, reason, steps_run, callbacks),
            "best_val_step": stopping.best_heldout_step(callbacks),
            "train_time_s": train_s,
            "ms_per_step": 1000.0 * train_s / steps_run if steps_run else None,
        },
    }


def case_samples(
    prepared: PreparedCase, cfg: FitConfig, domain: Domain, region: np.ndarray
) -> CaseSamples:
    """The fit data (Domain units, CPU) of the tissue voxels inside ``region`` (bool volume).

    Coordinates are the voxels' standard-frame positions (in-plane only when slice-wise); the
    curves lose their baseline offsets first with ``cfg.baseline_refit``. Shared by the fit
    and by Reptile's tasks, so both optimise the same problem.
    """
    tissue = prepared.tissue & region
    x_unit = domain.space_unit(prepared.standard_mm(np.argwhere(tissue))[:, _dims(cfg)])
    curves = prepared.tissue_hu[tissue]
    if cfg.baseline_refit:
        # one frame difference per voxel is enough over the tissue; second differences would
        # read the bolus's curvature as noise and let the offset take up the model's misfit
        times, arrival = prepared.frame_times_s, prepared.bolus_arrival_s
        noise = estimate_noise(curves, times, arrival, min_pre_frames=2).sd_hu
        frames = prepared.meta.get("baseline_frames", 1)
        centred = cfg.baseline_refit_centred
        curves = refit_baseline(curves, times, prepared.aif_hu, noise, frames, centred)
    samples = CaseSamples.build(
        x_unit,
        curves,
        prepared.frame_times_s,
        prepared.aif_hu,
        domain,
        cfg.sampling.heldout_share,
        cfg.sampling.heldout_max,
        seed=cfg.seed,
        voxel_ids=np.flatnonzero(tissue),
    )
    if cfg.ode_prefit_steps > 0 or cfg.loss.anchor > 0:
        samples.ode_start = prefit_target(curves, prepared, tissue, domain, cfg)
    return samples


def prefit_target(
    curves: np.ndarray, prepared: PreparedCase, tissue: np.ndarray, domain: Domain, cfg: FitConfig
) -> torch.Tensor:
    """The f_ODE pre-fit's target (V, 3) for the ``curves`` of the ``tissue`` voxels: the grid
    start (:mod:`perfusion.fitting.ode_start`) on blocks of ``ode_prefit_start_mm``, median
    filtered, each voxel at its block's start."""
    merge, block = start_grid(cfg, prepared.spacing_mm)
    row = None
    if any(n > 1 for n in merge):
        curves, tissue, row = merged_curves(curves, tissue, merge)
    start = grid_start_units(
        curves,
        prepared.frame_times_s,
        prepared.aif_hu,
        domain,
        cfg.ode_prefit_prior_iterations,
        tmax_by_likelihood=cfg.ode_prefit_tmax == "likelihood",
        tissue=tissue,
        block=block,
        share=cfg.ode_prefit_prior_share,
        floor=cfg.ode_prefit_prior_floor,
    )
    sizes = [cfg.ode_prefit_median] * 3
    if cfg.ode_prefit_median_times is not None:
        sizes[1:] = [cfg.ode_prefit_median_times] * 2  # (flow, mtt, delay)
    sizes = [tuple(int(v) for v in size)[: tissue.ndim] for size in sizes]
    start = smoothed_start(start, tissue, sizes)
    return start if row is None else start[torch.as_tensor(row)]


def _dims(cfg: FitConfig) -> tuple[int, ...]:
    """Standard-frame axes the fields see: in-plane (x, y) slice-wise, else (x, y, z)."""
    return (0, 1) if cfg.slice_wise else (0, 1, 2)


@torch.no_grad()
def _sample_ode(
    fields: PerfusionFields, prepared: PreparedCase, domain: Domain, mask: np.ndarray, dims, device
) -> dict[str, np.ndarray]:
    """f_ODE at every voxel of ``mask`` -> physical (flow, mtt, delay) volumes."""
    x = domain.space_unit(prepared.standard_mm(np.argwhere(mask))[:, dims])
    values = []
    for start in range(0, len(x), _CHUNK):
        chunk = torch.as_tensor(x[start : start + _CHUNK], device=device)
        values.append(fields.ode(fields.features(chunk)).double().cpu().numpy())
    params = np.concatenate(values) if values else np.zeros((0, 3))
    flow, mtt, delay = domain.params_physical(params[:, 0], params[:, 1], params[:, 2])
    return {
        "flow": _scatter(flow, mask),
        "mtt": _scatter(mtt, mask),
        "delay": _scatter(delay, mask),
    }


@torch.no_grad()
def _fitqc(
    fields: PerfusionFields,
    features: FeatureSource,
    samples: CaseSamples,
    domain: Domain,
    loss: LossConfig,
) -> np.ndarray:
    """Per tissue voxel: mean over frames of |fit - data| in ΔHU (V,); the fit is Eq. (1) from
    f_ODE for ``direct``, f_TAC otherwise."""
    values = []
    chunk = max(1, 400_000 // samples.n_frames)
    for start in range(0, samples.n_voxels, chunk):
        rows = torch.arange(start, min(start + chunk, samples.n_voxels), device=samples.x.device)
        t = samples.frame_t.expand(len(rows), -1)
        fitted = eq1_prediction(fields, features(fields, rows), samples, t, loss)
        values.append((fitted - samples.tac[rows]).abs().mean(1).cpu().numpy())
    return domain.tissue_hu(np.concatenate(values).astype(np.float64))


@torch.no_grad()
def _curves(fields, features, samples, domain, params, tissue, loss) -> dict[str, Any]:
    """The AIF the fit used on a fine grid, and data vs fit for four voxels spanning the CBF
    range."""
    fine = torch.linspace(samples.t_start, samples.t_end, 400, device=samples.x.device)
    flow = params["flow"][tissue]
    order = np.argsort(flow)
    picks = [int(order[int(q * (len(order) - 1))]) for q in (0.02, 0.3, 0.6, 0.95)]
    rows = torch.as_tensor(picks, device=fine.device)
    fits = eq1_prediction(
        fields, features(fields, rows), samples, fine.expand(len(picks), -1), loss
    )
    measured = loss.variant == "direct" and loss.aif == "measured"
    if measured:
        frames = samples.frame_t.cpu().double().numpy()
        aif = aif_between_frames(fine.cpu().numpy(), frames, samples.aif.cpu().double().numpy())
    else:
        aif = fields.aif(fine.unsqueeze(1)).squeeze(1).cpu().numpy()
    return {
        "time_s": domain.time_s(samples.frame_t.cpu().numpy()),
        "fine_time_s": domain.time_s(fine.cpu().numpy()),
        "aif_fit_hu": domain.aif_hu(aif),
        "voxels": np.argwhere(tissue)[picks].tolist(),
        "voxel_data_hu": domain.tissue_hu(samples.tac[rows].cpu().numpy()),
        "voxel_fit_hu": [domain.tissue_hu(v.cpu().numpy()) for v in fits],
    }


def _scatter(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    volume = np.zeros(mask.shape)
    volume[mask] = values
    return volume


def _mean_history(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Step-wise mean over the fits (one per slice for SPPINN), for the loss curves."""
    if len(histories) == 1:
        return histories[0]
    length = min(len(h) for h in histories)
    keys = [k for k in histories[0][0] if k != "val_rms_hu"]
    return [{k: float(np.mean([h[i][k] for h in histories])) for k in keys} for i in range(length)]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
