"""The pure fit step: losses at the true parameters, gradient routing of the two loss variants,
the NaN guard, the optimiser schedule and the sampler."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import AIF, make_prepared, tissue_labels  # noqa: E402

from perfusion.domain import Domain, DomainConfig  # noqa: E402
from perfusion.errors import PerfusionError  # noqa: E402
from perfusion.fields import FieldsConfig, build_fields  # noqa: E402
from perfusion.fitting.config import LossConfig, OptimConfig  # noqa: E402
from perfusion.fitting.sampling import CaseSamples  # noqa: E402
from perfusion.fitting.steps import (  # noqa: E402
    FeatureSource,
    anchor_weight,
    compute_losses,
    make_optimizer,
    optimizer_groups,
    prefit_aif,
    train_step,
)
from perfusion.units import cbf_to_flow  # noqa: E402

DOMAIN = Domain.from_config(DomainConfig(), time_origin_s=AIF.t0_s)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small ops with two OpenMP threads crawl on a busy 2-core machine; the fit uses one too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def case_samples(heldout_share: float = 0.1) -> CaseSamples:
    prepared = make_prepared()
    tissue = prepared.tissue
    x = DOMAIN.space_unit(prepared.standard_mm(np.argwhere(tissue)))
    return CaseSamples.build(
        x,
        prepared.tissue_hu[tissue],
        prepared.frame_times_s,
        prepared.aif_hu,
        DOMAIN,
        heldout_share,
        100,
    )


class ExactFields(nn.Module):
    """Closed-form fields of one tissue (CBF 60, MTT 4 s, delay 1 s) in Domain units."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # something for the optimiser
        flow = cbf_to_flow(60.0)
        self.params = DOMAIN.params_unit(flow, 4.0, 1.0)

    def plan(self, x):
        return x

    def features_plan(self, plan, rows):
        return plan[rows]

    def _cumulative_unit(self, t_unit: torch.Tensor) -> torch.Tensor:
        x = torch.clamp((DOMAIN.time_s(t_unit) - AIF.t0_s) / AIF.beta_s, min=0.0)
        area = AIF.area() / DOMAIN.aif_hu_per_unit / DOMAIN.s_per_unit  # unit AIF x unit time
        return area * torch.special.gammainc(torch.tensor(AIF.alpha + 1.0), x)

    def tac(self, feat, t):
        f_u, mtt_u, delay_u = self.params
        return (
            self.scale
            * f_u
            * (self._cumulative_unit(t - delay_u) - self._cumulative_unit(t - delay_u - mtt_u))
        )

    def aif(self, t):
        x = torch.clamp((DOMAIN.time_s(t) - AIF.t0_s) / (AIF.alpha * AIF.beta_s), min=1e-12)
        value = AIF.peak_hu * torch.exp(AIF.alpha * (torch.log(x) + 1.0 - x))
        return torch.where(DOMAIN.time_s(t) > AIF.t0_s, value, torch.zeros_like(t)) / 100.0

    def ode(self, feat):
        return torch.tensor(self.params, dtype=torch.float32).expand(len(feat), 3)


def test_losses_vanish_at_the_true_parameters() -> None:
    samples, prepared = case_samples(), make_prepared()
    grey = tissue_labels(prepared.shape)[prepared.tissue] == 1  # ExactFields models grey matter
    rows = torch.as_tensor(np.nonzero(grey)[0])
    assert len(rows) > 10
    fields, generator = ExactFields(), torch.Generator().manual_seed(1)
    batch = samples.sample_points(4096, generator)
    keep = torch.isin(batch.rows, rows)
    for name in ("rows", "t", "tac", "tau"):
        setattr(batch, name, getattr(batch, name)[keep])
    for loss in ("detached", "integral", LossConfig(variant="integral", norm="l2")):
        fields.scale.data.fill_(1.0)
        losses = compute_losses(fields, FeatureSource(fields, samples.x), samples, batch, loss)
        values = losses.as_floats()
        assert values["tac"] < 1e-5 and values["aif"] < 1e-5 and values["ode"] < 1e-4, loss
        fields.scale.data.fill_(1.5)  # a wrong curve: both the data and the ODE term notice
        wrong = compute_losses(fields, FeatureSource(fields, samples.x), samples, batch, loss)
        floor = 1e-4 if isinstance(loss, LossConfig) else 0.01  # squared errors are smaller
        assert wrong.as_floats()["tac"] > floor and wrong.as_floats()["ode"] > floor / 5, loss


@pytest.mark.parametrize("aif", ["measured", "field"])
def test_direct_prediction_is_the_closed_form_box_model(aif: str) -> None:
    """Eq. (1) from f_ODE, by either AIF, against the analytic box-model curves of the case.

    Frames 0.25 s apart: the measured AIF is linear between frames, so its integral differs
    from the gamma variate's by the interpolation error only."""
    prepared = make_prepared(n_frames=160, interval_s=0.25)
    tissue = prepared.tissue
    grey = tissue_labels(prepared.shape)[tissue] == 1
    x = DOMAIN.space_unit(prepared.standard_mm(np.argwhere(tissue)))
    samples = CaseSamples.build(
        x, prepared.tissue_hu[tissue], prepared.frame_times_s, prepared.aif_hu, DOMAIN, 0.0, 0
    )
    fields = ExactFields()
    batch = samples.sample_curves(64, torch.Generator().manual_seed(0))
    keep = torch.as_tensor(grey)[batch.rows]
    for name in ("rows", "t", "tac", "tau"):
        setattr(batch, name, getattr(batch, name)[keep])
    loss = LossConfig(variant="direct", aif=aif, aif_grid_points=2048)
    values = compute_losses(fields, FeatureSource(fields, samples.x), samples, batch, loss)
    scale = float(batch.tac.square().mean().sqrt())
    assert float(values.rms) < 2e-3 * scale
    assert float(values.ode) == 0.0 and float(values.aif) < 1e-6
    fields.scale.data.fill_(1.5)  # f_TAC is not part of the direct loss: nothing changes
    again = compute_losses(fields, FeatureSource(fields, samples.x), samples, batch, loss)
    assert float(again.rms) == pytest.approx(float(values.rms))
    truth = samples.tac[batch.rows]
    doubled = compute_losses(
        _Scaled(fields, 2.0), FeatureSource(fields, samples.x), samples, batch, loss
    )
    assert float(doubled.rms) == pytest.approx(float(truth.square().mean().sqrt()), rel=0.01)


class _Scaled(nn.Module):
    """ExactFields with the flow multiplied: the direct prediction doubles with it."""

    def __init__(self, exact: ExactFields, factor: float) -> None:
        super().__init__()
        self.exact, self.factor = exact, factor

    def ode(self, feat):
        flow, mtt, delay = self.exact.ode(feat).split(1, dim=1)
        return torch.cat([flow * self.factor, mtt, delay], dim=1)

    def aif(self, t):
        return self.exact.aif(t)

    def features_plan(self, plan, rows):
        return self.exact.features_plan(plan, rows)


def tiny_fields() -> nn.Module:
    cfg = FieldsConfig()
    cfg.encoding.n_levels, cfg.encoding.log2_hashmap_size, cfg.encoding.finest_resolution = (
        2,
        10,
        32,
    )
    return build_fields(cfg, 3)


@pytest.mark.parametrize("whole_curves", [False, True])
@pytest.mark.parametrize(
    "variant, reaches_tac", [("literal", True), ("detached", False), ("integral", False)]
)
def test_detached_residual_does_not_train_f_tac(
    variant: str, reaches_tac: bool, whole_curves: bool
) -> None:
    samples, fields = case_samples(), tiny_fields()
    generator = torch.Generator().manual_seed(0)
    batch = (
        samples.sample_curves(16, generator)
        if whole_curves
        else samples.sample_points(256, generator)
    )
    losses = compute_losses(fields, FeatureSource(fields, samples.x), samples, batch, variant)
    losses.ode.backward()
    tac_grad = sum(
        float(p.grad.abs().sum()) for p in fields.f_tac.parameters() if p.grad is not None
    )
    ode_grad = sum(float(p.grad.abs().sum()) for p in fields.f_ode.parameters())
    aif_grad = sum(float(p.grad.abs().sum()) for p in fields.f_aif.parameters())
    assert (tac_grad > 0) == reaches_tac
    assert ode_grad > 0 and aif_grad > 0
    assert float(fields.encoding.params.grad.abs().sum()) > 0  # the shared encoding learns


def test_nan_loss_names_the_step() -> None:
    samples, fields = case_samples(), tiny_fields()
    with torch.no_grad():
        for p in fields.f_aif.parameters():
            p.fill_(float("nan"))
    optimizer, scheduler = make_optimizer(fields.parameters(), OptimConfig(), 10)
    batch = samples.sample_points(64, torch.Generator().manual_seed(0))
    with pytest.raises(PerfusionError, match="step 7"):
        train_step(
            fields,
            FeatureSource(fields, samples.x),
            samples,
            batch,
            "detached",
            optimizer,
            scheduler,
            7,
            10,
        )


def test_one_cycle_without_warmup_starts_at_lr_and_decays() -> None:
    params = [nn.Parameter(torch.zeros(1))]
    optimizer, scheduler = make_optimizer(params, OptimConfig(lr=1e-3, schedule="onecycle"), 100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3, rel=1e-3)
    assert lrs[-1] < 1e-6 and all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_constant_schedule_warms_up_then_holds_lr() -> None:
    params = [nn.Parameter(torch.zeros(1))]
    cfg = OptimConfig(lr=1e-3, schedule="constant", warmup_steps=10, div_factor=10.0)
    optimizer, scheduler = make_optimizer(params, cfg, 20)  # the cap does not shape it
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-4) and lrs[5] == pytest.approx(5.5e-4)
    assert lrs[10:] == pytest.approx([1e-3] * 40)


def test_samplers_never_train_on_heldout_voxels() -> None:
    samples = case_samples(heldout_share=0.2)
    train = set(samples.train_rows.tolist())
    held = set(range(samples.n_voxels)) - train
    assert math.isclose(len(held) / samples.n_voxels, 0.2, abs_tol=0.01)
    assert set(samples.heldout_rows.tolist()) <= held and len(samples.heldout_rows) == 100
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        points = samples.sample_points(500, generator)
        assert len(points.rows) == 500 and not held & set(points.rows.tolist())
        frames = torch.searchsorted(samples.frame_t, points.t.squeeze(1))
        assert torch.equal(points.tac.squeeze(1), samples.tac[points.rows, frames])
        curves = samples.sample_curves(30, generator)
        assert not held & set(curves.rows.tolist())
        assert curves.tac.shape == curves.tau.shape == (30, samples.n_frames)
        assert torch.equal(curves.tac, samples.tac[curves.rows])  # every frame of each voxel
        assert torch.equal(curves.t, samples.frame_t.expand(30, -1))
        for batch in (points, curves):
            assert float(batch.tau.min()) >= samples.t_start
            assert float(batch.tau.max()) <= samples.t_end
    heldout = samples.heldout_batch()
    assert torch.equal(heldout.tac, samples.tac[samples.heldout_rows])


def test_aif_prefit_fits_the_samples() -> None:
    samples, fields = case_samples(), tiny_fields()
    with torch.no_grad():
        before = float(
            (fields.aif(samples.frame_t.unsqueeze(1)).squeeze(1) - samples.aif).abs().mean()
        )
    after = prefit_aif(fields, samples, steps=300, lr=1e-2)
    assert after < 0.25 * before


def test_unknown_loss_norm_is_a_clear_error() -> None:
    samples, fields = case_samples(), tiny_fields()
    batch = samples.sample_points(64, torch.Generator().manual_seed(0))
    with pytest.raises(PerfusionError, match="loss.norm: 'l3'"):
        compute_losses(
            fields, FeatureSource(fields, samples.x), samples, batch, LossConfig(norm="l3")
        )


def test_anchor_weight_falls_linearly_to_zero_at_its_share() -> None:
    loss = LossConfig(anchor=10.0, anchor_share=0.5)
    assert anchor_weight(loss, 0, 100) == pytest.approx(10.0)
    assert anchor_weight(loss, 25, 100) == pytest.approx(5.0)
    assert anchor_weight(loss, 50, 100) == 0.0 and anchor_weight(loss, 99, 100) == 0.0
    assert anchor_weight(LossConfig(), 0, 100) == 0.0  # off by default


def test_anchor_term_is_the_log_ratio_to_the_start_and_enters_the_total() -> None:
    samples, fields = case_samples(), tiny_fields()
    features = FeatureSource(fields, samples.x)
    batch = samples.sample_points(256, torch.Generator().manual_seed(0))
    loss = LossConfig(variant="integral", anchor=1.0)
    without = compute_losses(fields, features, samples, batch, loss, 5.0)
    assert float(without.anchor) == 0.0  # no pre-fit start: no term, whatever the weight
    with torch.no_grad():
        current = fields.ode(features(fields, torch.arange(samples.n_voxels)))
    samples.ode_start = current * math.e  # log-ratio exactly -1 for all three parameters
    torch.manual_seed(0)
    plain = compute_losses(fields, features, samples, batch, loss, 0.0)
    torch.manual_seed(0)
    pulled = compute_losses(fields, features, samples, batch, loss, 5.0)
    assert float(plain.anchor) == pytest.approx(1.0, rel=1e-4)
    assert float(pulled.total - plain.total) == pytest.approx(5.0, rel=1e-4)


def test_ode_lr_scale_slows_only_the_parameter_field() -> None:
    fields = tiny_fields()
    groups = optimizer_groups(fields, OptimConfig(lr=1e-2, ode_lr_scale=0.1))
    ode = {id(p) for p in fields.parameter_groups()["ode"]}
    assert {id(p) for p in groups[1]["params"]} == ode
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in fields.parameters())  # each exactly once
    optimizer, _ = make_optimizer(
        groups, OptimConfig(lr=1e-2, ode_lr_scale=0.1, warmup_steps=0), 100
    )
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-2, 1e-3], rel=1e-3)


def test_anchor_keeps_the_parameter_field_near_its_start() -> None:
    """A few steps from a start f_ODE does not fit: the anchored fit stays nearer to it."""

    def drift(anchor: float) -> float:
        torch.manual_seed(0)
        samples, fields = case_samples(), tiny_fields()
        features = FeatureSource(fields, samples.x)
        with torch.no_grad():
            start = fields.ode(features(fields, torch.arange(samples.n_voxels)))
        samples.ode_start = start.clone()
        cfg = OptimConfig(lr=1e-2)
        optimizer, scheduler = make_optimizer(optimizer_groups(fields, cfg), cfg, 30)
        loss, generator = LossConfig(anchor=anchor), torch.Generator().manual_seed(0)
        for step in range(30):
            batch = samples.sample_curves(16, generator)
            train_step(fields, features, samples, batch, loss, optimizer, scheduler, step, 30)
        with torch.no_grad():
            now = fields.ode(features(fields, torch.arange(samples.n_voxels)))
        return float((now.log() - start.log()).pow(2).mean())

    assert drift(100.0) < 0.5 * drift(0.0)


def test_held_out_and_batches_follow_the_voxels_not_their_places_in_the_list() -> None:
    """A voxel leaving the tissue mask (rounding a scan can do that) changes the held-out set
    and each batch by that voxel only, instead of reshuffling the whole fit."""
    times = np.arange(10.0)
    ids = np.arange(2000) * 3

    def build(voxel_ids: np.ndarray) -> CaseSamples:
        n = len(voxel_ids)
        x, tac = np.zeros((n, 3)), np.zeros((n, times.size))
        return CaseSamples.build(
            x, tac, times, np.ones(times.size), Domain(), 0.1, 100, seed=0, voxel_ids=voxel_ids
        )

    fewer = np.delete(ids, 17)
    a, b = build(ids), build(fewer)
    held_a, held_b = set(ids[a.heldout_rows.numpy()]), set(fewer[b.heldout_rows.numpy()])
    assert len(held_a ^ held_b) <= 2 and len(held_a) == 100
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(5):
        rows_a = a.sample_curves(64, gen_a).rows.numpy()
        rows_b = b.sample_curves(64, gen_b).rows.numpy()
        assert len(set(ids[rows_a]) ^ set(fewer[rows_b])) <= 4
        assert len(set(rows_a)) == 64  # a window: no voxel twice in a batch
