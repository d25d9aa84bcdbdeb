"""Reptile: the update rule, one outer step exactly, and the exported initialisation."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from perfusion.domain import Domain, DomainConfig
from perfusion.errors import PerfusionError
from perfusion.fields import build_fields
from perfusion.fields.config import EncodingConfig, FieldsConfig
from perfusion.fitting.config import FitConfig
from perfusion.fitting.init import load_init
from perfusion.fitting.sampling import CaseSamples
from perfusion.fitting.steps import FeatureSource
from perfusion.meta import (
    MetaConfig,
    MetaReptileModule,
    OuterConfig,
    adapt,
    export_init,
    outer_optimizer,
    reptile_gradients,
)
from perfusion.meta.reptile import task_generator
from perfusion.meta.tasks import Task


def tiny_fields_config(levels: int = 4) -> FieldsConfig:
    enc = EncodingConfig(
        n_levels=levels,
        log2_hashmap_size=10,
        base_resolution=4,
        finest_resolution=32,
        backend="torch",
    )
    return FieldsConfig(encoding=enc)


def tiny_fit_config() -> FitConfig:
    cfg = FitConfig(fields=tiny_fields_config())
    cfg.sampling.batch_size = 64
    cfg.aif_prefit_steps = 5
    return cfg


def tiny_task(fields, seed: int = 0) -> Task:
    rng = np.random.default_rng(seed)
    times = np.arange(12, dtype=float)
    aif = 100.0 * np.exp(-0.5 * ((times - 4.0) / 1.5) ** 2)
    x = rng.uniform(0.3, 0.7, size=(20, 3))
    tac = rng.uniform(0, 5, size=(20, 1)) * aif[None, :] / 100.0
    samples = CaseSamples.build(x, tac, times, aif, Domain(), 0.0, 0, seed=seed)
    return Task(f"t{seed}", samples, FeatureSource(fields, samples.x))


def test_reptile_gradient_is_eps_times_phi_minus_phi_star():
    phi = torch.nn.Linear(3, 2)
    adapted = copy.deepcopy(phi)
    with torch.no_grad():
        adapted.weight.add_(1.0)
        adapted.bias.sub_(0.5)
    reptile_gradients(phi, adapted, epsilon=0.1)
    assert torch.allclose(phi.weight.grad, torch.full_like(phi.weight, -0.1))
    assert torch.allclose(phi.bias.grad, torch.full_like(phi.bias, 0.05))


def test_sgd_lr1_moves_phi_by_eps_towards_phi_star():
    phi = torch.nn.Linear(3, 2)
    before = copy.deepcopy(phi)
    adapted = copy.deepcopy(phi)
    with torch.no_grad():
        adapted.weight.mul_(3.0)
    optimizer, scheduler = outer_optimizer(
        phi.parameters(), OuterConfig(optimizer="sgd", lr=1.0, schedule="constant"), 10
    )
    reptile_gradients(phi, adapted, epsilon=0.1)
    optimizer.step()
    scheduler.step()
    expected = before.weight + 0.1 * (adapted.weight - before.weight)
    assert torch.allclose(phi.weight, expected, atol=1e-6)
    assert torch.allclose(phi.bias, before.bias)


def test_unknown_outer_optimizer_is_refused():
    with pytest.raises(PerfusionError, match="outer.optimizer"):
        outer_optimizer([torch.nn.Parameter(torch.zeros(1))], OuterConfig(optimizer="rmsprop"), 5)


def one_step_trainer() -> L.Trainer:
    """A quiet CPU Trainer for exactly one outer step."""
    return L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def test_one_outer_step_equals_reptile_update_with_sgd():
    torch.manual_seed(0)
    cfg = tiny_fit_config()
    fields = build_fields(cfg.fields, 3)
    task = tiny_task(fields)
    before = copy.deepcopy(fields)
    outer = OuterConfig(optimizer="sgd", lr=1.0, epsilon=0.1, schedule="constant")
    module = MetaReptileModule(fields, [task], [], cfg, n_inner=3, outer=outer, n_outer=1, seed=7)
    # The same task and inner seed the module draws at outer step 0.
    rng = np.random.default_rng([7, 0])
    rng.integers(1)
    adapted = copy.deepcopy(before)
    adapt(adapted, task, cfg, 3, seed=int(rng.integers(2**31)))
    trainer = one_step_trainer()
    trainer.fit(module)
    assert trainer.global_step == 1
    for p, p0, p_star in zip(
        fields.parameters(), before.parameters(), adapted.parameters(), strict=True
    ):
        assert torch.allclose(p, p0 + 0.1 * (p_star - p0), atol=1e-5)
    changed = sum(
        float((p - p0).detach().abs().sum())
        for p, p0 in zip(fields.parameters(), before.parameters(), strict=True)
    )
    assert changed > 0


def test_one_batched_outer_step_moves_phi_towards_the_mean_adapted_weights():
    torch.manual_seed(0)
    cfg = tiny_fit_config()
    fields = build_fields(cfg.fields, 3)
    tasks = [tiny_task(fields, seed=0), tiny_task(fields, seed=1)]
    before = copy.deepcopy(fields)
    outer = OuterConfig(optimizer="sgd", lr=1.0, epsilon=0.5, schedule="constant")
    module = MetaReptileModule(
        fields, tasks, [], cfg, n_inner=3, outer=outer, n_outer=1, seed=1, meta_batch=3
    )
    adapted = []
    for place in range(3):  # the tasks and inner seeds of outer step 0, drawn by hand
        rng = np.random.default_rng([1, 0] if place == 0 else [1, 0, place])
        task = tasks[int(rng.integers(2))]
        copy_ = copy.deepcopy(before)
        adapt(copy_, task, cfg, 3, seed=int(rng.integers(2**31)))
        adapted.append(list(copy_.parameters()))
    trainer = one_step_trainer()
    trainer.fit(module)
    for index, (p, p0) in enumerate(zip(fields.parameters(), before.parameters(), strict=True)):
        mean = sum(a[index] for a in adapted) / 3
        assert torch.allclose(p, p0 + 0.5 * (mean - p0), atol=1e-6)
    assert {task_generator(1, 0, k).integers(2) for k in range(3)} == {0, 1}  # both tasks drawn


def test_exported_init_round_trips_and_refuses_mismatches(tmp_path):
    meta = OmegaConf.to_object(OmegaConf.structured(MetaConfig(fit=tiny_fit_config(), n_inner=7)))
    fields = build_fields(meta.fit.fields, 3)
    path = export_init(fields, meta, tmp_path / "init.ckpt", outer_steps=3, cohort=["a", "b"])
    fresh = build_fields(meta.fit.fields, 3)
    checkpoint = load_init(fresh, path, Domain.from_config(DomainConfig()).scales())
    for a, b in zip(fields.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert checkpoint["fit"]["steps"] == 7
    assert checkpoint["fit"]["sampling.batch_size"] == 64
    assert checkpoint["frame"]["standard_frame"] is True
    other = build_fields(tiny_fields_config(levels=5), 3)
    with pytest.raises(PerfusionError, match="architecture"):
        load_init(other, path)
    scales = Domain.from_config(DomainConfig(s_per_unit=20.0)).scales()
    with pytest.raises(PerfusionError, match="domain"):
        load_init(build_fields(meta.fit.fields, 3), path, scales)
