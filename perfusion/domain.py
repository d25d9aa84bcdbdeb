"""The fit's normalised units and the one place that converts them to physical units and back.

The neural fields see coordinates, time and attenuation on FIXED scales that are the same for
every patient (never per-scan extents), so that a meta-learned initialisation means the same
anatomy, the same moment after bolus arrival and the same contrast level in every aligned case:

- space: ``x_unit = 0.5 + x_mm / mm_per_unit`` per standard-frame axis (one isotropic scale;
  origin at the brain centre, so the head sits in the middle of [0, 1]^d);
- time: ``t_unit = (t_s - time_origin_s) / s_per_unit``, the origin being the case's bolus
  arrival (the only per-case quantity, and it only shifts time);
- attenuation: ``c_unit = tissue_hu / tissue_hu_per_unit``, ``a_unit = aif_hu / aif_hu_per_unit``.

Under these scales Eq. (1) of the ReSPPINN paper, ``dC/dt = F [A(t - t_d) - A(t - t_d - MTT)]``,
keeps its form by the chain rule: with ``C = Sc c``, ``A = Sa a`` and ``t = St tau``,
``dc/dtau = (F St Sa / Sc) [a(tau - t_d/St) - a(tau - t_d/St - MTT/St)]``. So the unit flow is
``F St Sa / Sc``, durations (MTT, t_d) divide by ``St`` (no offset: they are differences of
times), and ``dC/dt [HU/s] = (Sc / St) dc/dtau``. The defaults put grey matter at unit flow ~1.4,
MTT ~0.4 and delays 0-1, all O(1) for the SIREN heads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from perfusion.errors import PerfusionError

ArrayT = TypeVar("ArrayT")


@dataclass
class DomainConfig:
    """Fixed normalisation scales (the same for every patient; stored in checkpoints)."""

    mm_per_unit: float = 256.0
    """Standard-frame millimetres per unit coordinate; +-128 mm around the brain centre -> [0, 1]."""
    s_per_unit: float = 10.0
    """Seconds per unit of time; time is measured from the case's bolus arrival."""
    tissue_hu_per_unit: float = 10.0
    """Tissue enhancement (ΔHU) per unit; grey matter peaks near 5-15 HU."""
    aif_hu_per_unit: float = 100.0
    """Arterial enhancement (ΔHU) per unit; VOF-corrected AIFs peak near 100-400 HU."""


@dataclass(frozen=True)
class Domain:
    """Normalisation of one case: the fixed :class:`DomainConfig` scales plus its time origin.

    Every method works on numpy arrays, torch tensors and floats alike (plain arithmetic).
    """

    mm_per_unit: float = 256.0
    s_per_unit: float = 10.0
    tissue_hu_per_unit: float = 10.0
    aif_hu_per_unit: float = 100.0
    time_origin_s: float = 0.0

    @classmethod
    def from_config(cls, cfg: DomainConfig, time_origin_s: float = 0.0) -> Domain:
        """The domain of a case whose bolus arrives at ``time_origin_s`` (s, scan clock)."""
        return cls(
            mm_per_unit=float(cfg.mm_per_unit),
            s_per_unit=float(cfg.s_per_unit),
            tissue_hu_per_unit=float(cfg.tissue_hu_per_unit),
            aif_hu_per_unit=float(cfg.aif_hu_per_unit),
            time_origin_s=float(time_origin_s),
        )

    def to_dict(self) -> dict[str, float]:
        """Plain values for summaries and checkpoints."""
        return asdict(self)

    def scales(self) -> dict[str, float]:
        """The patient-independent scales (what an initialisation must share)."""
        return {k: v for k, v in asdict(self).items() if k != "time_origin_s"}

    # -- space ------------------------------------------------------------------------------
    def space_unit(self, standard_mm: np.ndarray) -> np.ndarray:
        """Standard-frame positions (N, d) mm -> float32 (N, d) in [0, 1]; raises if outside."""
        unit = 0.5 + np.asarray(standard_mm, dtype=np.float64) / self.mm_per_unit
        if unit.size and (unit.min() < 0.0 or unit.max() > 1.0):
            raise PerfusionError(
                f"brain reaches {np.abs(np.asarray(standard_mm)).max():.0f} mm from the standard-"
                f"frame origin, beyond the domain's +-{self.mm_per_unit / 2:.0f} mm "
                "(is the scan aligned to the standard frame?)"
            )
        return unit.astype(np.float32)

    # -- time -------------------------------------------------------------------------------
    def time_unit(self, time_s: ArrayT) -> ArrayT:
        """Scan-clock seconds -> unit time since bolus arrival."""
        return (time_s - self.time_origin_s) / self.s_per_unit

    def time_s(self, time_unit: ArrayT) -> ArrayT:
        """Unit time -> scan-clock seconds."""
        return time_unit * self.s_per_unit + self.time_origin_s

    def duration_unit(self, duration_s: ArrayT) -> ArrayT:
        """A time difference (MTT, delay) in s -> units (no offset)."""
        return duration_s / self.s_per_unit

    def duration_s(self, duration_unit: ArrayT) -> ArrayT:
        """A time difference in units -> s."""
        return duration_unit * self.s_per_unit

    # -- attenuation ------------------------------------------------------------------------
    def tissue_unit(self, tissue_hu: ArrayT) -> ArrayT:
        return tissue_hu / self.tissue_hu_per_unit

    def tissue_hu(self, tissue_unit: ArrayT) -> ArrayT:
        return tissue_unit * self.tissue_hu_per_unit

    def aif_unit(self, aif_hu: ArrayT) -> ArrayT:
        return aif_hu / self.aif_hu_per_unit

    def aif_hu(self, aif_unit: ArrayT) -> ArrayT:
        return aif_unit * self.aif_hu_per_unit

    # -- Eq. (1) parameters by the chain rule ----------------------------------------------
    @property
    def flow_factor(self) -> float:
        """Unit flow per physical flow (1/s): ``St Sa / Sc``."""
        return self.s_per_unit * self.aif_hu_per_unit / self.tissue_hu_per_unit

    def flow_unit(self, flow_per_s: ArrayT) -> ArrayT:
        """F [1/s] (tissue ΔHU per s per arterial ΔHU) -> unit flow."""
        return flow_per_s * self.flow_factor

    def flow_per_s(self, flow_unit: ArrayT) -> ArrayT:
        """Unit flow -> F [1/s]."""
        return flow_unit / self.flow_factor

    def dcdt_unit(self, dcdt_hu_per_s: ArrayT) -> ArrayT:
        """dC/dt [ΔHU/s] -> dc/dtau [unit/unit]: multiply by ``St / Sc``."""
        return dcdt_hu_per_s * (self.s_per_unit / self.tissue_hu_per_unit)

    def dcdt_hu_per_s(self, dcdt_unit: ArrayT) -> ArrayT:
        """dc/dtau -> dC/dt [ΔHU/s]."""
        return dcdt_unit * (self.tissue_hu_per_unit / self.s_per_unit)

    def params_unit(self, flow_per_s: Any, mtt_s: Any, delay_s: Any) -> tuple[Any, Any, Any]:
        """Physical (F [1/s], MTT [s], t_d [s]) -> unit (flow, mtt, delay)."""
        return self.flow_unit(flow_per_s), self.duration_unit(mtt_s), self.duration_unit(delay_s)

    def params_physical(self, flow_u: Any, mtt_u: Any, delay_u: Any) -> tuple[Any, Any, Any]:
        """Unit (flow, mtt, delay) -> physical (F [1/s], MTT [s], t_d [s])."""
        return self.flow_per_s(flow_u), self.duration_s(mtt_u), self.duration_s(delay_u)
