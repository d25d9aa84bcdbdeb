"""SIREN layers: initialisation ranges of style.md section 5 and a hand-computed forward."""

from __future__ import annotations

import math

import pytest
import torch

from perfusion.fields import SineLayer, Siren


def test_first_layer_init_range() -> None:
    layer = SineLayer(40, 400, omega_0=15.0, is_first=True)
    weight = layer.linear.weight
    assert weight.abs().max() <= 1 / 40 and weight.abs().max() > 0.95 / 40


def test_hidden_layer_init_range() -> None:
    layer = SineLayer(24, 400, omega_0=15.0)
    bound = math.sqrt(6 / 24) / 15
    assert (
        layer.linear.weight.abs().max() <= bound and layer.linear.weight.abs().max() > 0.95 * bound
    )


def test_siren_structure_and_init() -> None:
    net = Siren(1, 16, 3, 1, first_omega_0=1.0, hidden_omega_0=30.0)
    sines = [m for m in net.net if isinstance(m, SineLayer)]
    assert len(sines) == 3 and isinstance(net.net[-1], torch.nn.Linear)
    assert [s.omega_0 for s in sines] == [1.0, 30.0, 30.0]
    assert sines[0].is_first and not sines[1].is_first
    # (1*16 + 16) + 2 (16*16 + 16) + (16 + 1) parameters
    assert sum(p.numel() for p in net.parameters()) == 593
    assert net.net[-1].weight.abs().max() <= math.sqrt(6 / 16) / 30


def test_sine_layer_forward_by_hand() -> None:
    layer = SineLayer(2, 1, omega_0=15.0, is_first=True)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[0.1, -0.2]]))
        layer.linear.bias.fill_(0.05)
    out = layer(torch.tensor([[1.0, 0.5]]))
    assert out.item() == pytest.approx(math.sin(15 * (0.1 - 0.1 + 0.05)), abs=1e-6)


def test_sine_output_when_not_outermost_linear() -> None:
    net = Siren(2, 8, 2, 3, 15.0, 15.0, outermost_linear=False)
    assert isinstance(net.net[-1], SineLayer)
    assert net(torch.rand(5, 2)).abs().max() <= 1.0


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="hidden_layers"):
        Siren(1, 16, 0, 1, 1.0, 1.0)
