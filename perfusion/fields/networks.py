"""``PerfusionFields``: the shared spatial encoding and the three SIRENs of ReSPPINN (Table 2).

- features(x): hash encoding of the standard-frame coordinate in [0, 1]^d (E = L*F), or, for
  the SPPINN preset, the raw coordinate mapped to [-1, 1] (E = d), the range SIREN's first-layer
  initialisation assumes;
- f_TAC(features, t) -> tissue concentration, f_AIF(t) -> arterial concentration;
- f_ODE(features) -> positive (flow, mtt, delay) = typical * exp(scale * raw) (Table 2 "Exp");
  optionally (``mtt_levels``) MTT from a separate SIREN ``f_mtt`` of the coarsest levels only.

Time never enters the encoding, so dC/dt by autograd needs no derivative through the grid
(paper section 2.2). All quantities are in the fit's normalised (Domain) units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from perfusion.errors import PerfusionError
from perfusion.fields.config import FieldsConfig, SirenConfig
from perfusion.fields.encoding import GridPlan, HashGridEncoding
from perfusion.fields.siren import Siren

ODE_OUTPUTS = ("flow", "mtt", "delay")


class PerfusionFields(nn.Module):
    """The neural fields of one fit.

    Args:
        encoding: shared spatial encoding, or None for raw coordinates (SPPINN).
        n_input_dims: d of the coordinates (2 for slice-wise SPPINN, 3 for volumes).
        f_aif: Siren 1 -> 1; f_tac: Siren E+1 -> 1; f_ode: Siren E -> 3, or E -> 2 (flow,
            delay) with ``f_mtt``.
        ode_typical: typical (flow, mtt, delay) > 0 in Domain units.
        ode_output_scale: s in typical * exp(s * raw).
        f_mtt: optional Siren k*F -> 1: raw MTT from the first k levels' features (the encoding's
            output is level-major, column l * F + f), k = ``f_mtt.in_features / F``.
    """

    def __init__(
        self,
        encoding: HashGridEncoding | None,
        n_input_dims: int,
        f_aif: Siren,
        f_tac: Siren,
        f_ode: Siren,
        ode_typical: Sequence[float],
        ode_output_scale: float = 1.0,
        f_mtt: Siren | None = None,
    ) -> None:
        super().__init__()
        self.encoding = encoding
        self.n_input_dims = n_input_dims
        self.n_features = n_input_dims if encoding is None else encoding.n_output_dims
        self.mtt_features = 0 if f_mtt is None else f_mtt.in_features
        expected = {
            "f_aif": (1, 1),
            "f_tac": (self.n_features + 1, 1),
            "f_ode": (self.n_features, 3 if f_mtt is None else 2),
        }
        for name, net in (("f_aif", f_aif), ("f_tac", f_tac), ("f_ode", f_ode)):
            if (net.in_features, net.out_features) != expected[name]:
                raise PerfusionError(
                    f"fields: {name} maps {net.in_features} -> {net.out_features}, "
                    f"expected {expected[name][0]} -> {expected[name][1]}"
                )
        if len(ode_typical) != 3 or min(ode_typical) <= 0:
            raise PerfusionError(f"fields.ode_typical: need 3 positive values, got {ode_typical}")
        if encoding is not None and encoding.n_input_dims != n_input_dims:
            raise PerfusionError("fields: encoding and n_input_dims disagree")
        if f_mtt is not None:
            if encoding is None:
                raise PerfusionError("fields.mtt_levels needs a hash encoding (SPPINN has none)")
            per_level = encoding.n_features_per_level
            whole_levels = self.mtt_features % per_level == 0
            if f_mtt.out_features != 1 or not whole_levels or self.mtt_features > self.n_features:
                raise PerfusionError(
                    f"fields: f_mtt maps {self.mtt_features} -> {f_mtt.out_features}, expected "
                    f"k * {per_level} (the k coarsest levels, k <= {encoding.n_levels}) -> 1"
                )
        self.f_aif, self.f_tac, self.f_ode, self.f_mtt = f_aif, f_tac, f_ode, f_mtt
        log_typical = torch.tensor([math.log(float(v)) for v in ode_typical])
        self.register_buffer("ode_log_typical", log_typical)
        self.ode_output_scale = float(ode_output_scale)

    # -- spatial features ---------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 [N, d] in [0, 1] -> features [N, E]."""
        if self.encoding is not None:
            return self.encoding(x)
        _check_raw(x, self.n_input_dims)
        return 2.0 * x - 1.0

    def plan(self, x: torch.Tensor) -> GridPlan:
        """Precompute the encoding of fixed points (voxel centres); see ``features_plan``."""
        if self.encoding is not None:
            return self.encoding.plan(x)
        _check_raw(x, self.n_input_dims)
        empty = torch.empty(0, device=x.device)
        return GridPlan(x.detach(), empty.long(), empty)

    def features_plan(self, plan: GridPlan, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Features of planned points ``plan.x[rows]`` (all when None): [B, E] = features(...)."""
        if self.encoding is not None:
            return self.encoding.forward_plan(plan, rows)
        x = plan.x if rows is None else plan.x[rows]
        return 2.0 * x - 1.0

    # -- the three fields ---------------------------------------------------------------------
    def tac(self, feat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f_TAC: features [N, E] and time [N, 1] (Domain units) -> tissue concentration [N, 1]."""
        return self.f_tac(torch.cat([feat, t], dim=-1))

    def aif(self, t: torch.Tensor) -> torch.Tensor:
        """f_AIF: time [N, 1] (Domain units) -> arterial concentration [N, 1]."""
        return self.f_aif(t)

    def ode(self, feat: torch.Tensor) -> torch.Tensor:
        """f_ODE: features [N, E] -> positive [N, 3] (flow, mtt, delay) in Domain units."""
        raw = self.f_ode(feat)
        if self.f_mtt is not None:
            raw_mtt = self.f_mtt(feat[:, : self.mtt_features])
            raw = torch.cat([raw[:, :1], raw_mtt, raw[:, 1:]], dim=1)
        return torch.exp(self.ode_log_typical + self.ode_output_scale * raw)

    @property
    def mtt_levels(self) -> int | None:
        """k of ``f_mtt`` (the coarsest levels MTT reads), None for the paper's f_ODE."""
        if self.f_mtt is None:
            return None
        return self.mtt_features // self.encoding.n_features_per_level

    # -- checkpoints --------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by part: ``encoding`` (the flat table), ``aif``, ``tac``, ``ode``."""
        groups = {
            "encoding": [] if self.encoding is None else [self.encoding.params],
            "aif": list(self.f_aif.parameters()),
            "tac": list(self.f_tac.parameters()),
            "ode": list(self.f_ode.parameters()),
        }
        if self.f_mtt is not None:
            groups["ode"] += list(self.f_mtt.parameters())
        return groups

    def architecture(self) -> dict[str, Any]:
        """Everything that fixes parameter shapes and meaning; compare before loading a state."""
        arch = {
            "n_input_dims": self.n_input_dims,
            "n_features": self.n_features,
            "encoding": None if self.encoding is None else self.encoding.architecture(),
            "aif": self.f_aif.architecture(),
            "tac": self.f_tac.architecture(),
            "ode": self.f_ode.architecture(),
            "ode_outputs": list(ODE_OUTPUTS),
            "ode_output_scale": self.ode_output_scale,
        }
        if self.f_mtt is not None:  # absent = the paper's f_ODE (keeps older checkpoints valid)
            arch["mtt"] = {**self.f_mtt.architecture(), "levels": self.mtt_levels}
        return arch


def _check_raw(x: torch.Tensor, n_dims: int) -> None:
    if x.ndim != 2 or x.shape[1] != n_dims:
        raise PerfusionError(f"fields input: shape {tuple(x.shape)}, expected [N, {n_dims}]")
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise PerfusionError("fields input: coordinates outside [0, 1] (or not finite)")


def _siren(cfg: SirenConfig, in_features: int, out_features: int) -> Siren:
    return Siren(
        in_features,
        int(cfg.hidden_features),
        int(cfg.hidden_layers),
        out_features,
        float(cfg.first_omega_0),
        float(cfg.hidden_omega_0),
        outermost_linear=True,
    )


def build_fields(
    cfg: FieldsConfig, n_input_dims: int, ode_typical: Sequence[float] | None = None
) -> PerfusionFields:
    """``PerfusionFields`` from a FieldsConfig (dataclass or DictConfig).

    ``ode_typical`` (Domain units) overrides ``cfg.ode_typical``, so fitting code can convert
    physical typical values with its Domain.
    """
    encoding = None
    if cfg.encoding is not None:
        enc = cfg.encoding
        keys = ("otype", "n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution")
        tcnn_like = {k: getattr(enc, k) for k in keys}
        tcnn_like["per_level_scale"] = enc.per_level_scale
        tcnn_like["finest_resolution"] = enc.finest_resolution
        encoding = HashGridEncoding(n_input_dims, tcnn_like, backend=enc.backend, seed=enc.seed)
    n_features = n_input_dims if encoding is None else encoding.n_output_dims
    typical = list(cfg.ode_typical if ode_typical is None else ode_typical)
    levels = cfg.mtt_levels
    f_mtt = None
    if levels is not None:
        if encoding is None:
            raise PerfusionError("fields.mtt_levels needs a hash encoding (SPPINN has none)")
        if not 1 <= int(levels) <= encoding.n_levels:
            raise PerfusionError(
                f"fields.mtt_levels: {levels} is not in 1..{encoding.n_levels} (n_levels)"
            )
        f_mtt = _siren(cfg.ode, int(levels) * encoding.n_features_per_level, 1)
    return PerfusionFields(
        encoding,
        n_input_dims,
        f_aif=_siren(cfg.aif, 1, 1),
        f_tac=_siren(cfg.tac, n_features + 1, 1),
        f_ode=_siren(cfg.ode, n_features, 3 if f_mtt is None else 2),
        ode_typical=[float(v) for v in typical],
        ode_output_scale=float(cfg.ode_output_scale),
        f_mtt=f_mtt,
    )
