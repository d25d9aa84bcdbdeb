"""PerfusionFields: shapes, positive f_ODE head, dC/dt by autograd, checkpoints, presets."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from perfusion.config import load_config
from perfusion.errors import PerfusionError
from perfusion.fields import (
    FieldsConfig,
    PerfusionFields,
    Siren,
    build_fields,
    sppinn_fields_config,
)

TINY = ["encoding.n_levels=4", "encoding.log2_hashmap_size=12", "encoding.finest_resolution=64"]


def tiny(*extra: str, n_dims: int = 3) -> PerfusionFields:
    return build_fields(load_config(FieldsConfig, [], [*TINY, *extra]), n_dims)


def test_shapes() -> None:
    fields = tiny()
    x, t = torch.rand(7, 3), torch.rand(7, 1)
    feat = fields.features(x)
    assert feat.shape == (7, 8) and fields.n_features == 8
    assert fields.tac(feat, t).shape == (7, 1)
    assert fields.aif(t).shape == (7, 1)
    assert fields.ode(feat).shape == (7, 3)
    plan = fields.plan(x)
    assert torch.equal(fields.features_plan(plan, torch.tensor([2, 5])), feat[[2, 5]])


def test_ode_head_is_typical_times_exp() -> None:
    fields = tiny("ode_output_scale=2.0")
    last = fields.f_ode.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -20.0, 0.0]))
    out = fields.ode(fields.features(torch.rand(3, 3)))
    expected = [1.0 * math.e, 0.4 * math.exp(-40.0), 0.1]  # typical (1, 0.4, 0.1) * exp(2 raw)
    assert out[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert (out > 0).all()


def test_fresh_ode_starts_near_typical_and_positive() -> None:
    fields = tiny()
    out = fields.ode(fields.features(torch.rand(500, 3)))
    ratio = out / torch.tensor([1.0, 0.4, 0.1])
    assert (out > 0).all() and ratio.max() < math.e and ratio.min() > 1 / math.e


def test_ode_typical_override() -> None:
    cfg = load_config(FieldsConfig, [], TINY)
    fields = build_fields(cfg, 3, ode_typical=[2.0, 0.5, 0.2])
    assert torch.allclose(fields.ode_log_typical.exp(), torch.tensor([2.0, 0.5, 0.2]))
    with pytest.raises(PerfusionError, match="ode_typical"):
        build_fields(cfg, 3, ode_typical=[1.0, 0.0, 1.0])


def test_dcdt_by_autograd_matches_finite_difference() -> None:
    fields = tiny().double()
    feat = fields.features(torch.rand(5, 3))
    t = torch.rand(5, 1, dtype=torch.float64, requires_grad=True)
    (dcdt,) = torch.autograd.grad(fields.tac(feat, t).sum(), t, create_graph=True)
    h = 1e-6
    with torch.no_grad():
        numeric = (fields.tac(feat, t + h) - fields.tac(feat, t - h)) / (2 * h)
    assert torch.allclose(dcdt, numeric, atol=1e-7)
    # the residual's gradient reaches every part with first derivatives of the encoding only
    # (its autograd Function is once_differentiable: a second derivative through it would raise)
    (dcdt.square().sum() + fields.ode(feat).sum()).backward()
    assert fields.encoding.params.grad.abs().max() > 0
    # the output bias drops out of dC/dt, the first layer does not
    assert fields.f_tac.net[0].linear.weight.grad.abs().max() > 0


def test_time_never_enters_the_encoding() -> None:
    fields = tiny()
    feat = fields.features(torch.rand(4, 3))
    t = torch.rand(4, 1, requires_grad=True)
    c = fields.tac(feat, t)
    assert torch.autograd.grad(feat.sum(), t, allow_unused=True)[0] is None
    assert c.requires_grad


def test_parameter_groups_cover_all_parameters() -> None:
    fields = tiny()
    groups = fields.parameter_groups()
    assert list(groups) == ["encoding", "aif", "tac", "ode"]
    assert groups["encoding"] == [fields.encoding.params]
    ids = [id(p) for group in groups.values() for p in group]
    assert sorted(ids) == sorted(id(p) for p in fields.parameters())


def test_state_dict_round_trip_and_architecture() -> None:
    a, b = tiny(), tiny("encoding.seed=3")
    torch.manual_seed(1)
    b2 = tiny("encoding.seed=3")
    assert not torch.equal(a.encoding.params, b.encoding.params)
    b.load_state_dict(a.state_dict())
    x, t = torch.rand(6, 3), torch.rand(6, 1)
    assert torch.equal(a.tac(a.features(x), t), b.tac(b.features(x), t))
    assert torch.equal(a.ode(a.features(x)), b.ode(b.features(x)))
    assert a.architecture() == b2.architecture()
    assert "encoding.params" in a.state_dict() and "ode_log_typical" in a.state_dict()
    assert tiny("encoding.log2_hashmap_size=13").architecture() != a.architecture()
    assert tiny("tac.hidden_features=8").architecture() != a.architecture()


def test_sppinn_preset_uses_raw_coordinates() -> None:
    fields = build_fields(OmegaConf.structured(sppinn_fields_config()), 2)
    assert fields.encoding is None and fields.n_features == 2
    assert fields.f_tac.hidden_features == 128 and fields.f_ode.hidden_features == 64
    assert fields.parameter_groups()["encoding"] == []
    x = torch.tensor([[0.0, 0.25], [1.0, 0.5]])
    assert fields.features(x).tolist() == [[-1.0, -0.5], [1.0, 0.0]]
    assert torch.equal(
        fields.features_plan(fields.plan(x), torch.tensor([1])), fields.features(x)[1:]
    )
    assert fields.architecture()["encoding"] is None
    with pytest.raises(PerfusionError, match="outside"):
        fields.features(torch.tensor([[1.5, 0.0]]))


def test_paper_defaults() -> None:
    fields = build_fields(load_config(FieldsConfig), 3)
    assert fields.encoding.params.numel() == 953_344 and fields.n_features == 32
    arch = fields.architecture()
    assert (arch["tac"]["in_features"], arch["ode"]["out_features"]) == (33, 3)
    assert (arch["aif"]["first_omega_0"], arch["tac"]["hidden_omega_0"]) == (1.0, 15.0)


def test_mismatched_networks_raise() -> None:
    with pytest.raises(PerfusionError, match="f_tac"):
        PerfusionFields(
            None,
            3,
            Siren(1, 4, 1, 1, 1, 1),
            Siren(3, 4, 1, 1, 15, 15),
            Siren(3, 4, 1, 3, 15, 15),
            [1, 1, 1],
        )


def test_coarse_mtt_reads_only_the_coarsest_levels() -> None:
    fields = tiny("mtt_levels=2")
    assert fields.mtt_levels == 2 and fields.f_ode.out_features == 2
    feat = fields.features(torch.rand(9, 3))
    fine_changed = feat.clone()
    fine_changed[:, 4:] += 0.3  # levels 2 and 3 (columns l * F + f, F = 2)
    before, after = fields.ode(feat), fields.ode(fine_changed)
    assert torch.equal(before[:, 1], after[:, 1])  # MTT: coarse levels only
    assert not torch.allclose(before[:, [0, 2]], after[:, [0, 2]])  # flow and delay: all levels
    fields.ode(fields.features(torch.rand(50, 3)))[:, 1].sum().backward()
    grad = fields.encoding.params.grad.view(-1, 2)
    coarse_rows = fields.encoding.levels[2].offset
    assert grad[:coarse_rows].abs().sum() > 0 and grad[coarse_rows:].abs().sum() == 0
    assert fields.architecture()["mtt"]["levels"] == 2 and "mtt" not in tiny().architecture()
    ids = {id(p) for p in fields.parameter_groups()["ode"]}
    assert all(id(p) in ids for p in fields.f_mtt.parameters())


def test_coarse_mtt_refuses_bad_levels_and_sppinn() -> None:
    with pytest.raises(PerfusionError, match="mtt_levels"):
        tiny("mtt_levels=5")  # the tiny encoding has 4 levels
    cfg = OmegaConf.structured(sppinn_fields_config())
    cfg.mtt_levels = 2
    with pytest.raises(PerfusionError, match="mtt_levels"):
        build_fields(cfg, 2)


def test_f_mtt_must_read_whole_coarse_levels() -> None:
    fields = tiny()
    args = (fields.encoding, 3, fields.f_aif, fields.f_tac, Siren(8, 4, 1, 2, 15, 15), [1, 1, 1])
    with pytest.raises(PerfusionError, match="f_mtt maps 3 -> 1"):
        PerfusionFields(*args, f_mtt=Siren(3, 4, 1, 1, 15, 15))  # 1.5 levels of F = 2
    assert PerfusionFields(*args, f_mtt=Siren(4, 4, 1, 1, 15, 15)).mtt_levels == 2
