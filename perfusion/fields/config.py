"""Configuration schema of the neural fields: hash-grid encoding and the three SIRENs (Table 2).

The encoding keys are tiny-cuda-nn's ``HashGrid`` keys, verbatim, plus
``finest_resolution``, which is converted once to ``per_level_scale`` and never passed to tcnn.
SPPINN is a preset of the same schema: ``encoding: null`` (raw coordinates), wider SIRENs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EncodingConfig:
    """Multi-resolution hash encoding of the spatial coordinate (tcnn ``HashGrid``)."""

    otype: str = "HashGrid"
    """tcnn encoding type; only ``HashGrid`` is implemented."""
    n_levels: int = 16
    """L, number of grid levels (Table 2: 16)."""
    n_features_per_level: int = 2
    """F, features stored per vertex: 1, 2, 4 or 8 (Table 2: 2)."""
    log2_hashmap_size: int = 15
    """T, log2 of the maximum number of rows per level (Table 2: 15)."""
    base_resolution: int = 16
    """N_min, vertices per axis of the coarsest level (Table 2: 16)."""
    per_level_scale: float | None = None
    """b, growth factor between levels; leave null when ``finest_resolution`` is set."""
    finest_resolution: int | None = 4096
    """N_max (Table 2: 4096); gives b = exp((ln N_max - ln N_min)/(L - 1)). Null to use b."""
    backend: str = "auto"
    """``torch`` (pure PyTorch, CPU/GPU), ``tcnn`` (tiny-cuda-nn, CUDA) or ``auto``."""
    seed: int = 1337
    """Seed of the U(-1e-4, 1e-4) table initialisation (tcnn's default seed)."""


@dataclass
class SirenConfig:
    """One SIREN MLP: ``hidden_layers`` sine layers of width ``hidden_features``, linear output.

    Table 2's "3 layers x 16" is read as 3 sine layers of width 16 (the first maps the input to
    16, two more map 16 to 16), then a linear layer to the output.
    """

    hidden_features: int = 16
    """Width of every sine layer."""
    hidden_layers: int = 3
    """Number of sine layers (the first one included); >= 1."""
    first_omega_0: float = 15.0
    """omega_0 of the first sine layer (Table 2 "w0")."""
    hidden_omega_0: float = 15.0
    """omega_0 of the other sine layers (Table 2 "w")."""


@dataclass
class FieldsConfig:
    """The ReSPPINN fields: shared encoding, f_AIF(t), f_TAC(x, t), f_ODE(x) (Table 2)."""

    encoding: EncodingConfig | None = field(default_factory=EncodingConfig)
    """Hash encoding of x; null feeds the raw coordinates (SPPINN)."""
    aif: SirenConfig = field(
        default_factory=lambda: SirenConfig(
            hidden_features=16, first_omega_0=1.0, hidden_omega_0=1.0
        )
    )
    """f_AIF: t -> AIF concentration (Table 2: 3 x 16, w = w0 = 1)."""
    tac: SirenConfig = field(default_factory=SirenConfig)
    """f_TAC: (features(x), t) -> tissue concentration (Table 2: 3 x 16, w = w0 = 15)."""
    ode: SirenConfig = field(default_factory=SirenConfig)
    """f_ODE: features(x) -> (flow, mtt, delay) (Table 2: 3 x 16, w = w0 = 15)."""
    mtt_levels: int | None = None
    """Null: the paper's f_ODE (MTT, like flow and delay, reads every encoding level). k >= 1:
    MTT comes from its own SIREN (shape of ``ode``) that reads only the k coarsest levels, so the
    MTT field is smooth on the scale of level k's cells while flow and delay keep full resolution.
    MTT is poorly identified per voxel at clinical noise; pooling it over neighbours keeps noisy
    voxels out of the short-box minimum of Eq. (1) (docs/method.md). Needs an encoding."""
    ode_typical: list[float] = field(default_factory=lambda: [1.0, 0.4, 0.1])
    """Typical (flow, mtt, delay) in the fit's (Domain) units; a fresh f_ODE starts near them.

    The defaults are F = 0.01 /s (CBF ~42 ml/100g/min), MTT 4 s, delay 1 s under the default
    DomainConfig (10 s, 100 HU arterial, 10 HU tissue per unit: unit flow = 100 F). Fitting code
    may instead pass ``Domain.params_unit(...)`` of physical values to ``build_fields``.
    """
    ode_output_scale: float = 1.0
    """s in params = typical * exp(s * raw): raw +-1 spans a factor e^s around ``ode_typical``."""


def sppinn_fields_config() -> FieldsConfig:
    """The SPPINN preset (paper section 2.4): no encoding, f_TAC 3 x 128, f_ODE 3 x 64."""
    cfg = FieldsConfig()
    cfg.encoding = None
    cfg.tac = SirenConfig(hidden_features=128)
    cfg.ode = SirenConfig(hidden_features=64)
    return cfg
