"""Closed-form checks of the phantom's tissue curves; none uses the simulator's integration code.

Box-car AIF: the box residue gives the overlap length of two intervals (piecewise linear in t),
the exponential residue an exponential integral; gamma-variate AIF: the box residue gives
differences of GammaVariate.cumulative, the linear residue the integral of the regularised
incomplete gamma function, int_0^x P(a, v) dv = x P(a, x) - a P(a + 1, x).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammainc

from perfusion.errors import PerfusionError
from perfusion.gamma_variate import GammaVariate
from perfusion.phantom.inputs import FINE_STEP_S, InputFunctions, fine_grid
from perfusion.phantom.signal import tissue_curves, true_tmax
from perfusion.units import cbf_to_flow, flow_to_cbf, tmax_box

FRAMES = np.arange(0.0, 40.0, 1.0)
FLOW = np.array([0.01, 0.02, 0.005])
MTT = np.array([4.0, 7.5, 2.3])
DELAY = np.array([0.0, 1.3, 3.7])


def _boxcar_inputs(start: float = 5.0, stop: float = 11.0, level: float = 100.0) -> InputFunctions:
    grid = fine_grid(FRAMES[-1])
    aif = np.where((grid >= start) & (grid <= stop), level, 0.0)
    return InputFunctions(grid, aif, aif, FRAMES)


def test_boxcar_aif_box_residue_is_overlap_length() -> None:
    # C(t) = F * 100 * |[t - d - MTT, t - d] ∩ [5, 11]|, e.g. F 0.01, MTT 4, d 0, t 7: 0.01*100*2 = 2
    curves = tissue_curves(_boxcar_inputs(), FLOW, MTT, DELAY, "box")
    hi = FRAMES[None, :] - DELAY[:, None]
    lo = hi - MTT[:, None]
    overlap = np.clip(np.minimum(hi, 11.0) - np.maximum(lo, 5.0), 0.0, None)
    expected = FLOW[:, None] * 100.0 * overlap
    # a discontinuous AIF is smeared over one fine step h by the trapezoid: |error| <= F*100*h
    tolerance = FLOW.max() * 100.0 * FINE_STEP_S + 1e-3
    assert curves[0, 7] == pytest.approx(2.0, abs=tolerance)
    np.testing.assert_allclose(curves, expected, atol=tolerance)


def test_boxcar_aif_exponential_residue() -> None:
    # C(s) = F * 100 * MTT * (exp(-max(0, s-11)/MTT) - exp(-max(0, s-5)/MTT)), s = t - d
    curves = tissue_curves(_boxcar_inputs(), FLOW, MTT, DELAY, "exponential")
    s = FRAMES[None, :] - DELAY[:, None]
    m = MTT[:, None]
    expected = (
        FLOW[:, None]
        * 100.0
        * m
        * (np.exp(-np.clip(s - 11.0, 0, None) / m) - np.exp(-np.clip(s - 5.0, 0, None) / m))
    )
    np.testing.assert_allclose(curves, expected, atol=FLOW.max() * 100.0 * FINE_STEP_S + 1e-3)


def _gamma_inputs() -> tuple[InputFunctions, GammaVariate]:
    gv = GammaVariate(t0_s=6.0, alpha=3.0, beta_s=1.5, peak_hu=300.0)
    grid = fine_grid(FRAMES[-1])
    return InputFunctions(grid, gv(grid), gv(grid), FRAMES), gv


def test_gamma_aif_box_residue_matches_analytic_integral() -> None:
    inputs, gv = _gamma_inputs()
    curves = tissue_curves(inputs, FLOW, MTT, DELAY, "box")
    s = FRAMES[None, :] - DELAY[:, None]
    expected = FLOW[:, None] * (gv.cumulative(s) - gv.cumulative(s - MTT[:, None]))
    assert expected.max() > 10.0  # a real bolus, not a trivial zero
    np.testing.assert_allclose(curves, expected, atol=2e-3 * expected.max())


def test_gamma_aif_linear_residue_matches_analytic_integral() -> None:
    inputs, gv = _gamma_inputs()
    curves = tissue_curves(inputs, FLOW, MTT, DELAY, "linear")

    def double_integral(t: np.ndarray) -> np.ndarray:  # B(t) = int A, A = area * P(a+1, x)
        x = np.clip((t - gv.t0_s) / gv.beta_s, 0.0, None)
        a = gv.alpha + 1.0
        return gv.area() * gv.beta_s * (x * gammainc(a, x) - a * gammainc(a + 1.0, x))

    s = FRAMES[None, :] - DELAY[:, None]
    width = 2.0 * MTT[:, None]
    expected = FLOW[:, None] * (
        gv.cumulative(s) - (double_integral(s) - double_integral(s - width)) / width
    )
    np.testing.assert_allclose(curves, expected, atol=2e-3 * expected.max())


def test_tmax_conventions_and_units_round_trip() -> None:
    assert true_tmax("box", np.array(2.0), np.array(4.0)) == pytest.approx(4.0)
    assert true_tmax("box", np.array(1.0), np.array(6.0)) == pytest.approx(tmax_box(1.0, 6.0))
    assert true_tmax("linear", np.array(1.0), np.array(6.0)) == pytest.approx(5.0)
    assert true_tmax("exponential", np.array(1.0), np.array(6.0)) == pytest.approx(7.0)
    # 60 ml/100g/min -> F = 60 * 1.04 / (6000 * 0.73) = 0.014247 1/s, and back
    assert cbf_to_flow(60.0) == pytest.approx(0.0142466, rel=1e-5)
    assert flow_to_cbf(cbf_to_flow(np.array([22.0, 60.0]))) == pytest.approx([22.0, 60.0])
    with pytest.raises(PerfusionError):
        true_tmax("gamma", np.array(1.0), np.array(1.0))


@pytest.mark.parametrize("dilution", [0.4, 3.0])
def test_real_aif_truth_uses_the_preprocessing_partial_volume_factor(tmp_path, dilution) -> None:
    """The phantom's true AIF is the file's AIF scaled by perfusion.aif.correct_partial_volume,
    the factor preprocessing applies: the VOF's first-pass area over the AIF's, at least 1 (a
    VOF weaker than the AIF leaves the AIF as it is)."""
    from perfusion.aif import correct_partial_volume
    from perfusion.phantom.inputs import real_inputs

    t = np.arange(0.0, 45.0, 1.0)
    vof = GammaVariate(t0_s=8.0, alpha=3.0, beta_s=2.0, peak_hu=300.0)(t)
    aif = dilution * GammaVariate(t0_s=5.0, alpha=3.0, beta_s=1.5, peak_hu=250.0)(t)
    rows = "\n".join(f"1\t{a}\t{b}\t{c}" for a, b, c in zip(t, aif, vof, strict=True))
    path = tmp_path / "curves.tsv"
    path.write_text("case\tt_s\taif_hu\tvof_hu\n" + rows + "\n")
    inputs = real_inputs(np.random.default_rng(0), path, 1, 2.0, 20)
    expected = correct_partial_volume(t, aif, vof)[1]
    assert inputs.meta["vof_scale"] == expected
    if dilution < 1:  # a diluted AIF is scaled up to the VOF's area
        assert expected > 1.5
        area = np.trapezoid(inputs.aif_hu, inputs.time_s)
        assert area == pytest.approx(np.trapezoid(vof, t), rel=0.05)
    else:
        assert expected == 1.0
