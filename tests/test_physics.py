"""Eq. (1)/(4) and the L1 losses, hand-computed on a linear AIF A(t) = t (t >= 0)."""

from __future__ import annotations

import torch

from perfusion.physics import (
    baseline_before,
    box_inflow,
    box_model_tac,
    l1,
    ode_residual,
    total_loss,
)


def ramp(t: torch.Tensor) -> torch.Tensor:
    return t.clone()  # A(t) = t; the baseline rule must zero it before t_start


def col(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).unsqueeze(1)


def test_aif_is_baseline_before_the_first_frame() -> None:
    out = baseline_before(ramp, col(-2.0, 0.0, 3.0), t_start=0.0)
    assert out.squeeze(1).tolist() == [0.0, 0.0, 3.0]


def test_box_inflow_by_hand() -> None:
    # t = 10, t_d = 1, MTT = 4: A(9) - A(5) = 4; t = 3: A(2) - 0 (5 s before the start) = 2
    inflow = box_inflow(ramp, col(10.0, 3.0), col(4.0, 4.0), col(1.0, 1.0), t_start=0.0)
    assert inflow.squeeze(1).tolist() == [4.0, 2.0]


def test_residual_by_hand() -> None:
    # dC/dt = 1.0, F = 0.2, bracket 4 -> r = 1 - 0.8 = 0.2
    r = ode_residual(col(1.0), col(0.2), col(4.0), col(1.0), ramp, col(10.0), t_start=0.0)
    assert torch.allclose(r, col(0.2))


def test_box_model_tac_closed_form() -> None:
    # cumA(t) = t^2 / 2 for A(t) = t: C(10) = F [(9^2 - 5^2) / 2] = 0.1 * 28 = 2.8
    cumulative = lambda t: torch.where(t > 0, t * t / 2, torch.zeros_like(t))  # noqa: E731
    tac = box_model_tac(cumulative, col(10.0), col(0.1), col(4.0), col(1.0))
    assert torch.allclose(tac, col(2.8))


def test_l1_and_equal_weights() -> None:
    assert float(l1(col(1.0, -1.0), col(0.0, 1.0))) == 1.5  # (1 + 2) / 2
    assert float(total_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0))) == 6.0


def test_cumulative_aif_integrates_the_ramp() -> None:
    from perfusion.physics import CumulativeAif

    cumulative = CumulativeAif(ramp, t_start=0.0, t_end=10.0, n=101)
    t = col(-1.0, 0.0, 2.5, 10.0, 12.0)
    expected = col(0.0, 0.0, 2.5**2 / 2, 50.0, 50.0 + 10.0 * 2.0)  # past the end: last value held
    assert torch.allclose(cumulative(t).double(), expected, atol=2e-3)
    t = col(4.0).requires_grad_(True)
    (slope,) = torch.autograd.grad(cumulative(t).sum(), t)  # d cumA / dt = A
    assert abs(float(slope) - 4.0) < 0.06


def test_l2_is_the_mean_squared_error() -> None:
    from perfusion.physics import l2

    assert float(l2(col(1.0, 3.0), col(0.0, 0.0))) == 5.0


def test_aif_between_frames_keeps_the_baseline_and_the_last_value() -> None:
    import numpy as np

    from perfusion.physics import aif_between_frames

    t, a = np.array([0.0, 2.0, 4.0, 6.0]), np.array([0.0, 10.0, 4.0, 2.0])
    out = aif_between_frames(np.array([-1.0, 0.0, 2.0, 3.0, 6.0, 9.0]), t, a)
    assert out[0] == 0.0 and out[1] == 0.0 and out[2] == 10.0 and out[-2:].tolist() == [2.0, 2.0]
    assert 4.0 <= out[3] <= 10.0  # monotone between frames: no overshoot past the samples


def test_measured_cumulative_aif_fits_the_box_model_between_sparse_frames() -> None:
    """A sharp gamma-variate bolus sampled every 2 s: Eq. (1) with the measured AIF against the
    closed form misfits a grey-matter curve by ~1 % RMS (linear interpolation: ~4 %)."""
    import sys
    from pathlib import Path

    import numpy as np

    from perfusion.physics import CumulativeAif
    from perfusion.units import cbf_to_flow

    sys.path.insert(0, str(Path(__file__).parent))
    from fitting_case import AIF, box_tac

    t = np.arange(0.0, 40.0, 2.0)
    exact = box_tac(t, 60.0, 4.0, 1.0)
    cumulative = CumulativeAif.from_samples(torch.tensor(t), torch.tensor(AIF(t)))
    times = torch.tensor(t)
    fitted = cbf_to_flow(60.0) * (cumulative(times - 1.0) - cumulative(times - 5.0))
    error = np.sqrt(np.mean((fitted.numpy() - exact) ** 2) / np.mean(exact**2))
    assert error < 0.015


def test_one_aif_convention_after_the_last_frame_in_every_box_model() -> None:
    """Eq. (1) past the last frame: the AIF holds its last value (never drops to 0), the same in
    the table the fits read, in NLR's model and in the fit-quality map; before the first frame
    it is 0. A negative delay reads the AIF after the scan, so the three agree on such a voxel."""
    import numpy as np

    from perfusion.baselines.nlr import BoxModel
    from perfusion.fitting.maps import box_model_fitqc
    from perfusion.physics import CumulativeAif
    from perfusion.units import flow_to_cbf

    t = np.array([0.0, 2.0, 4.0])
    aif = np.array([0.0, 4.0, 8.0])  # a ramp 2t that PCHIP keeps straight
    table = CumulativeAif.from_samples(torch.tensor(t), torch.tensor(aif))
    query = col(-1.0, 4.0, 6.0, 10.0)
    # cumA: 0 before, 16 at the last frame, then + 8 per second; A: 0, 8, 8, 8
    assert torch.allclose(table(query), col(0.0, 16.0, 32.0, 64.0))
    assert torch.allclose(table.aif_at(query), col(0.0, 8.0, 8.0, 8.0))
    # F = 1, MTT = 2, t_d = -2 at t = 4: cumA(6) - cumA(4) = 16 (0 if the AIF dropped to 0)
    tac = box_model_tac(table, col(4.0), col(1.0), col(2.0), col(-2.0))
    assert torch.allclose(tac, col(16.0))
    nlr = BoxModel(t, aif).shape(torch.tensor([-2.0], dtype=torch.float64), torch.tensor([2.0]))
    assert torch.allclose(nlr[0, -1], torch.tensor(16.0, dtype=torch.float64))
    maps = {
        "cbf": np.full((1, 1, 1), float(flow_to_cbf(1.0))),
        "mtt": np.full((1, 1, 1), 2.0),
        "delay": np.full((1, 1, 1), -2.0),
    }
    exact = np.array([4.0, 12.0, 16.0])  # cumA(t + 2) - cumA(t) at t = 0, 2, 4
    mask = np.ones((1, 1, 1), dtype=bool)
    assert box_model_fitqc(maps, mask, exact.reshape(1, 1, 1, 3), t, aif)[0, 0, 0] < 1e-9
