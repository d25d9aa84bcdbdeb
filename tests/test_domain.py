"""Domain: fixed scales, the chain rule for (flow, mtt, delay) and dC/dt, and the Eq. (4) residual
of an analytic noiseless voxel taken through the real normalisation code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfusion.domain import Domain, DomainConfig
from perfusion.errors import PerfusionError
from perfusion.gamma_variate import GammaVariate
from perfusion.physics import ode_residual
from perfusion.units import cbf_to_flow

AIF = GammaVariate(t0_s=6.0, alpha=3.0, beta_s=1.5, peak_hu=300.0)
DOMAIN = Domain.from_config(DomainConfig(), time_origin_s=6.0)  # 256 mm, 10 s, 10 HU, 100 HU


def tissue_hu(time_s: np.ndarray, flow: float, mtt: float, delay: float) -> np.ndarray:
    """Closed-form Eq. (1) (ΔHU): F [cumA(t - t_d) - cumA(t - t_d - MTT)]."""
    return flow * (AIF.cumulative(time_s - delay) - AIF.cumulative(time_s - delay - mtt))


def test_scales_by_hand() -> None:
    assert DOMAIN.flow_factor == pytest.approx(10.0 * 100.0 / 10.0)  # St Sa / Sc
    assert DOMAIN.time_unit(26.0) == pytest.approx(2.0)  # (26 - 6) / 10
    assert DOMAIN.time_s(DOMAIN.time_unit(13.7)) == pytest.approx(13.7)
    assert DOMAIN.duration_unit(4.0) == pytest.approx(0.4)  # no offset for durations
    assert DOMAIN.tissue_unit(25.0) == pytest.approx(2.5)
    assert DOMAIN.aif_hu(3.0) == pytest.approx(300.0)
    assert DOMAIN.dcdt_unit(2.0) == pytest.approx(2.0 * 10.0 / 10.0)
    np.testing.assert_allclose(
        DOMAIN.space_unit(np.array([[0.0, -64.0, 128.0]])), [[0.5, 0.25, 1.0]]
    )


def test_space_outside_the_domain_is_refused() -> None:
    with pytest.raises(PerfusionError, match="standard-frame origin"):
        DOMAIN.space_unit(np.array([[0.0, 0.0, 140.0]]))


def test_scales_are_the_same_for_every_patient() -> None:
    other = Domain.from_config(DomainConfig(), time_origin_s=11.0)
    assert other.scales() == DOMAIN.scales()
    assert other.time_unit(11.0) == 0.0


@pytest.mark.parametrize("cbf, mtt, delay", [(60.0, 4.0, 1.0), (12.0, 9.0, 4.0)])
def test_residual_of_a_noiseless_voxel_is_zero_in_units(
    cbf: float, mtt: float, delay: float
) -> None:
    flow = float(cbf_to_flow(cbf))
    f_u, mtt_u, delay_u = DOMAIN.params_unit(flow, mtt, delay)
    tau = torch.linspace(DOMAIN.time_unit(0.0), DOMAIN.time_unit(50.0), 201, dtype=torch.float64)
    tau = tau.unsqueeze(1)

    def c_unit(t_unit: np.ndarray) -> np.ndarray:  # the data as the fit sees them
        return DOMAIN.tissue_unit(tissue_hu(DOMAIN.time_s(t_unit), flow, mtt, delay))

    def aif_unit(t_unit: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(DOMAIN.aif_unit(AIF(DOMAIN.time_s(t_unit.numpy()))))

    h = 1e-5  # central difference in unit time
    dc = torch.from_numpy((c_unit(tau.numpy() + h) - c_unit(tau.numpy() - h)) / (2 * h))
    as_t = lambda v: torch.full_like(tau, v)  # noqa: E731
    t_start = DOMAIN.time_unit(0.0)
    r = ode_residual(dc, as_t(f_u), as_t(mtt_u), as_t(delay_u), aif_unit, tau, t_start)
    assert dc.abs().max() > 0.05  # the curve does move
    assert r.abs().max() < 1e-6 * max(1.0, float(dc.abs().max()))
    wrong = ode_residual(dc, as_t(1.3 * f_u), as_t(mtt_u), as_t(delay_u), aif_unit, tau, t_start)
    assert wrong.abs().max() > 0.1 * dc.abs().max()  # the check can fail
    back = DOMAIN.params_physical(f_u, mtt_u, delay_u)
    assert back == pytest.approx((flow, mtt, delay), rel=1e-12)
    # dC/dt back in HU/s equals the derivative taken in seconds
    t_s = DOMAIN.time_s(tau.numpy())
    physical = (
        tissue_hu(t_s + 1e-4, flow, mtt, delay) - tissue_hu(t_s - 1e-4, flow, mtt, delay)
    ) / 2e-4
    np.testing.assert_allclose(DOMAIN.dcdt_hu_per_s(dc.numpy()), physical, atol=1e-6)
