"""Fit ReSPPINN (3-D, one fit per volume) or SPPINN (2-D, one fit per slice) fields to a case.

Builds the Domain-unit data of the tissue voxels, the fields, the f_AIF pre-fit, runs
:class:`FieldFitModule` under a Lightning Trainer, then samples f_ODE at every brain voxel and
f_TAC at every tissue voxel and frame (the fitqc residual), all back in physical units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from perfusion.domain import Domain
from perfusion.fields import PerfusionFields, build_fields
from perfusion.fitting.config import FitConfig, resolve_steps
from perfusion.fitting.data import CaseDataModule
from perfusion.fitting.init import load_init
from perfusion.fitting.module import FieldFitModule, run_trainer
from perfusion.fitting.ode_start import grid_start_units, smoothed_start
from perfusion.fitting.sampling import CaseSamples
from perfusion.fitting.steps import FeatureSource, prefit
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
        info["init"] = {"path": str(cfg.init), "fit": checkpoint.get("fit")}
    fields = fields.to(device)
    features = FeatureSource(fields, samples.x)
    aif_l1, ode_mse = prefit(fields, features, samples, cfg)
    info["aif_prefit_l1_hu"] = domain.aif_hu(aif_l1)
    info["ode_prefit_mse_log"] = ode_mse
    steps = resolve_steps(cfg)
    module = FieldFitModule(
        fields,
        samples,
        features,
        cfg.loss,
        cfg.optim,
        steps,
        cfg.sampling.val_every,
        domain.tissue_hu_per_unit,
        cfg.select_best,
        cfg.early_stop_patience,
    )
    if steps > 0:  # 0: the pre-fits only
        data = CaseDataModule(samples, cfg.sampling.batch_size, cfg.seed, steps)
        run_trainer(module, data, steps, cfg.progress_bar, logger)
    fields.eval()
    params = _sample_ode(fields, prepared, domain, region & prepared.brain, dims, device)
    qc = _fitqc(fields, features, samples, domain)
    history = module.history
    return {
        **params,
        "qc": _scatter(qc, tissue),
        "history": history,
        "steps": len(history),
        "losses": {
            **(history[-1] if history else {}),
            "val_tac_hu": module.heldout_tac() * domain.tissue_hu_per_unit,
        },
        "curves": _curves(fields, features, samples, domain, params, tissue),
        "info": {**info, "best_val_step": module.best[1], "select_best": cfg.select_best},
    }


def case_samples(
    prepared: PreparedCase, cfg: FitConfig, domain: Domain, region: np.ndarray
) -> CaseSamples:
    """The fit data (Domain units, CPU) of the tissue voxels inside ``region`` (bool volume).

    Coordinates are the voxels' standard-frame positions (in-plane only when slice-wise).
    Shared by the fit and by Reptile's tasks, so both optimise the same problem.
    """
    tissue = prepared.tissue & region
    x_unit = domain.space_unit(prepared.standard_mm(np.argwhere(tissue))[:, _dims(cfg)])
    samples = CaseSamples.build(
        x_unit,
        prepared.tissue_hu[tissue],
        prepared.frame_times_s,
        prepared.aif_hu,
        domain,
        cfg.sampling.heldout_share,
        cfg.sampling.heldout_max,
        seed=cfg.seed,
    )
    if cfg.ode_prefit_steps > 0 or cfg.loss.anchor > 0:
        start = grid_start_units(
            prepared.tissue_hu[tissue], prepared.frame_times_s, prepared.aif_hu, domain
        )
        size = tuple(int(v) for v in cfg.ode_prefit_median)
        samples.ode_start = smoothed_start(start, tissue, size[: tissue.ndim])
    return samples


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
    fields: PerfusionFields, features: FeatureSource, samples: CaseSamples, domain: Domain
) -> np.ndarray:
    """Per tissue voxel: mean over frames of |f_TAC - data| in ΔHU (V,)."""
    n_frames, values = samples.n_frames, []
    chunk = max(1, 200_000 // n_frames)
    t = samples.frame_t.unsqueeze(1)
    for start in range(0, samples.n_voxels, chunk):
        rows = torch.arange(start, min(start + chunk, samples.n_voxels), device=t.device)
        feat = features(fields, rows).repeat_interleave(n_frames, dim=0)
        fitted = fields.tac(feat, t.repeat(len(rows), 1)).view(len(rows), n_frames)
        values.append((fitted - samples.tac[rows]).abs().mean(1).cpu().numpy())
    return domain.tissue_hu(np.concatenate(values).astype(np.float64))


@torch.no_grad()
def _curves(fields, features, samples, domain, params, tissue) -> dict[str, Any]:
    """Fitted f_AIF on a fine grid, and data vs f_TAC for four voxels spanning the CBF range."""
    fine = torch.linspace(samples.t_start, samples.t_end, 400, device=samples.x.device).unsqueeze(1)
    flow = params["flow"][tissue]
    order = np.argsort(flow)
    picks = [int(order[int(q * (len(order) - 1))]) for q in (0.02, 0.3, 0.6, 0.95)]
    rows = torch.as_tensor(picks, device=fine.device)
    feat = features(fields, rows)
    voxel_fits = [
        fields.tac(feat[i : i + 1].expand(len(fine), -1), fine) for i in range(len(picks))
    ]
    return {
        "time_s": domain.time_s(samples.frame_t.cpu().numpy()),
        "fine_time_s": domain.time_s(fine.squeeze(1).cpu().numpy()),
        "aif_fit_hu": domain.aif_hu(fields.aif(fine).squeeze(1).cpu().numpy()),
        "voxels": np.argwhere(tissue)[picks].tolist(),
        "voxel_data_hu": domain.tissue_hu(samples.tac[rows].cpu().numpy()),
        "voxel_fit_hu": [domain.tissue_hu(v.squeeze(1).cpu().numpy()) for v in voxel_fits],
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
    keys = [k for k in histories[0][0] if k != "val_tac"]
    return [{k: float(np.mean([h[i][k] for h in histories])) for k in keys} for i in range(length)]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
