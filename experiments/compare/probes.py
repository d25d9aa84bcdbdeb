"""Looking inside an initialisation: its maps before adaptation, and voxels during adaptation.

resppinn-paper.txt Figure 5 shows the maps of f_ODE of the meta-learned initialisation on a new
patient before any step (an anatomical prior); Figure 6 shows CBF of a few voxels against the
inner iteration while the initialisation adapts. Both evaluate f_ODE at a patient's voxel
positions in the standard frame, exactly where a fit evaluates it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perfusion.domain import Domain
from perfusion.evaluation import pearson_r
from perfusion.fields import build_fields
from perfusion.fitting.config import FitConfig
from perfusion.fitting.init import load_init
from perfusion.fitting.maps import maps_from_params
from perfusion.io import load_nifti
from perfusion.meta.reptile import adapt
from perfusion.meta.tasks import task_from_prepared
from perfusion.prepared import PreparedCase

PROBE_MAPS = ("cbf", "tmax")
_CHUNK = 8192


@torch.no_grad()
def ode_at(
    fields: nn.Module, prepared: PreparedCase, domain: Domain, voxels: np.ndarray
) -> dict[str, np.ndarray]:
    """f_ODE at scan voxels ``voxels`` (N, 3) int -> {cbf ml/100g/min, tmax s} (N,) float64."""
    x_unit = domain.space_unit(prepared.standard_mm(np.asarray(voxels)))
    device = next(fields.parameters()).device
    values = [np.zeros((0, 3))]
    for start in range(0, len(x_unit), _CHUNK):
        chunk = torch.as_tensor(x_unit[start : start + _CHUNK], dtype=torch.float32, device=device)
        values.append(fields.ode(fields.features(chunk)).double().cpu().numpy())
    params = np.concatenate(values)
    maps = maps_from_params(*domain.params_physical(params[:, 0], params[:, 1], params[:, 2]))
    return {name: maps[name] for name in PROBE_MAPS}


def init_maps(fields: nn.Module, prepared: PreparedCase, cfg: FitConfig) -> dict[str, np.ndarray]:
    """CBF and Tmax volumes (scan grid, 0 outside the brain) of ``fields`` before any step."""
    domain = Domain.from_config(cfg.domain, prepared.bolus_arrival_s)
    voxels = np.argwhere(prepared.brain)
    values = ode_at(fields, prepared, domain, voxels)
    out = {}
    for name in PROBE_MAPS:
        volume = np.zeros(prepared.shape)
        volume[prepared.brain] = values[name]
        out[name] = volume
    return out


def pick_voxels(true_cbf: np.ndarray, tissue: np.ndarray, n: int) -> np.ndarray:
    """``n`` tissue voxels spread over the true CBF range (quantiles 2 % .. 98 %), (n, 3) int.

    Deterministic: the voxel nearest to each quantile in sorted order, so the probe shows a
    core-like, a white-matter-like and a grey-matter-like voxel whatever the patient.
    """
    coords = np.argwhere(tissue)
    order = np.argsort(true_cbf[tissue], kind="stable")
    quantiles = np.linspace(0.02, 0.98, max(int(n), 1))
    picks = [order[int(round(q * (len(order) - 1)))] for q in quantiles]
    return coords[picks]


def voxel_trajectories(
    fields: nn.Module,
    prepared: PreparedCase,
    cfg: FitConfig,
    steps: int,
    voxels: np.ndarray,
    every: int,
    seed: int = 0,
) -> dict[str, list]:
    """CBF at ``voxels`` every ``every`` inner steps of an adaptation of a copy of ``fields``.

    Runs :func:`perfusion.meta.reptile.adapt` (the inner loop a fit from this initialisation
    repeats) with a callback; step 0 is the initialisation itself. Returns ``step`` (K,) and
    ``cbf`` (K lists of N values, ml/100g/min) plus the ``voxels`` (N, 3).
    """
    adapted = copy.deepcopy(fields)
    domain = Domain.from_config(cfg.domain, prepared.bolus_arrival_s)
    task = task_from_prepared("probe", prepared, cfg, adapted)
    record = {"step": [0], "cbf": [ode_at(adapted, prepared, domain, voxels)["cbf"].tolist()]}

    def probe(step: int, current: nn.Module) -> None:
        if step % max(int(every), 1) == 0 or step == steps:
            record["step"].append(step)
            record["cbf"].append(ode_at(current, prepared, domain, voxels)["cbf"].tolist())

    adapt(adapted, task, cfg, steps, seed=seed, callback=probe)
    record["voxels"] = np.asarray(voxels).tolist()
    return record


def run_probes(
    init_paths: dict[str, str],
    prepared_dir: Path,
    truth_dir: Path,
    cfg: FitConfig,
    steps: int,
    n_voxels: int,
    every: int,
) -> dict[str, Any]:
    """Figure 5/6 data on one patient: each initialisation's maps before any step, and CBF
    traces of ``n_voxels`` voxels while the first initialisation (the meta-learned one) adapts.

    Args:
        init_paths: label -> checkpoint path, the meta-learned one first (e.g. the control next).
        prepared_dir: the patient's prepared folder; truth_dir: its phantom ``truth/``.
        cfg: the arms' FitConfig (fields, Domain, inner loop); steps: inner steps to trace.

    Returns:
        ``maps`` {label: {cbf, tmax}} and ``truth`` {cbf, tmax} volumes, ``brain`` mask (arrays,
        for figures), ``init_cbf_r`` {label: Pearson r of the init CBF vs truth in tissue},
        ``trajectories`` (:func:`voxel_trajectories` plus ``true_cbf``) and ``patient``.
    """
    prepared = PreparedCase.load(prepared_dir)
    domain = Domain.from_config(cfg.domain, prepared.bolus_arrival_s)
    truth = {
        n: np.asarray(load_nifti(truth_dir / f"{n}.nii.gz").dataobj, np.float64) for n in PROBE_MAPS
    }
    maps, loaded = {}, {}
    for label, path in init_paths.items():
        fields = build_fields(cfg.fields, 3)
        load_init(fields, path, domain.scales())
        loaded[label], maps[label] = fields, init_maps(fields, prepared, cfg)
    voxels = pick_voxels(truth["cbf"], prepared.tissue, n_voxels)
    first = next(iter(loaded.values()))
    trajectories = voxel_trajectories(first, prepared, cfg, steps, voxels, every)
    trajectories["true_cbf"] = [float(truth["cbf"][tuple(v)]) for v in voxels]
    return {
        "patient": truth_dir.parent.name,
        "maps": maps,
        "truth": truth,
        "brain": prepared.brain,
        "init_cbf_r": {
            k: pearson_r(m["cbf"], truth["cbf"], prepared.tissue) for k, m in maps.items()
        },
        "trajectories": trajectories,
    }
