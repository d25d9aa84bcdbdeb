"""SIREN MLPs (Sitzmann et al. 2020): sine activations with the initialisation that keeps them.

A sine layer computes sin(omega_0 (W x + b)). omega_0 sets the frequencies the network starts
with: the first layer's W ~ U(-1/in, 1/in) spreads inputs in [-1, 1] over about +-omega_0
radians; later layers use W ~ U(-sqrt(6/in)/omega_0, +sqrt(6/in)/omega_0), so that each
pre-activation omega_0 W x stays ~ arcsine-distributed through depth. Table 2
gives "w0" = ``first_omega_0`` and "w" = ``hidden_omega_0``.

"3 layers x 16" (Table 2) is read as ``hidden_layers=3`` sine layers of width 16 (in -> 16,
16 -> 16, 16 -> 16), then a linear layer 16 -> out. Note that the reference implementation's
``hidden_layers`` counts the sine layers after the first one; ours counts all of them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SineLayer(nn.Module):
    """y = sin(omega_0 (W x + b)): float [N, in_features] -> [N, out_features].

    Args:
        in_features, out_features: layer sizes.
        omega_0: frequency factor.
        is_first: first layer of a SIREN (W ~ U(-1/in, 1/in)); else
            W ~ U(-sqrt(6/in)/omega_0, sqrt(6/in)/omega_0). Biases keep PyTorch's default
            U(-1/sqrt(in), 1/sqrt(in)), as in the reference.
    """

    def __init__(
        self, in_features: int, out_features: int, omega_0: float, is_first: bool = False
    ) -> None:
        super().__init__()
        self.omega_0 = float(omega_0)
        self.is_first = is_first
        self.linear = nn.Linear(in_features, out_features)
        bound = siren_weight_bound(in_features, self.omega_0, is_first)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


def siren_weight_bound(in_features: int, omega_0: float, is_first: bool) -> float:
    """Half-width of the uniform weight init: 1/in (first layer) or sqrt(6/in)/omega_0."""
    return 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / omega_0


class Siren(nn.Module):
    """SIREN: ``hidden_layers`` sine layers of width ``hidden_features``, then a linear output.

    float [N, in_features] -> [N, out_features]. The output layer is initialised like a hidden
    sine layer (bound sqrt(6/hidden)/hidden_omega_0); with ``outermost_linear=False`` it is a
    sine layer too.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        hidden_layers: int,
        out_features: int,
        first_omega_0: float,
        hidden_omega_0: float,
        outermost_linear: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("hidden_features", hidden_features),
            ("hidden_layers", hidden_layers),
            ("out_features", out_features),
        ):
            if value < 1:
                raise ValueError(f"Siren: {name} must be >= 1, got {value}")
        self.in_features, self.out_features = in_features, out_features
        self.hidden_features, self.hidden_layers = hidden_features, hidden_layers
        self.first_omega_0, self.hidden_omega_0 = float(first_omega_0), float(hidden_omega_0)
        self.outermost_linear = outermost_linear
        layers: list[nn.Module] = [SineLayer(in_features, hidden_features, first_omega_0, True)]
        layers += [
            SineLayer(hidden_features, hidden_features, hidden_omega_0)
            for _ in range(hidden_layers - 1)
        ]
        if outermost_linear:
            last = nn.Linear(hidden_features, out_features)
            bound = siren_weight_bound(hidden_features, hidden_omega_0, is_first=False)
            with torch.no_grad():
                last.weight.uniform_(-bound, bound)
            layers.append(last)
        else:
            layers.append(SineLayer(hidden_features, out_features, hidden_omega_0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def architecture(self) -> dict[str, float | int | bool]:
        """Sizes and frequencies, for refusing a checkpoint of another shape."""
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "hidden_layers": self.hidden_layers,
            "out_features": self.out_features,
            "first_omega_0": self.first_omega_0,
            "hidden_omega_0": self.hidden_omega_0,
            "outermost_linear": self.outermost_linear,
        }
