"""bSVD and box-model NLR on noiseless box-model curves with known parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perfusion.baselines import BsvdConfig, NlrConfig, bsvd_maps, fit_bsvd, fit_nlr, nlr_maps
from perfusion.baselines.bsvd import (
    circulant_spectrum,
    cut_weights,
    oscillation_index,
    resample_uniform,
)
from perfusion.baselines.nlr import BoxModel
from perfusion.errors import PerfusionError
from perfusion.gamma_variate import GammaVariate
from perfusion.prepared import PreparedCase
from perfusion.units import cbf_to_flow, cbv_from_cbf_mtt, tmax_box

AIF = GammaVariate(t0_s=5.0, alpha=3.0, beta_s=1.5, peak_hu=300.0)
TIME = np.arange(60.0)
# (CBF ml/100g/min, MTT s, delay s): grey matter, white matter, penumbra, ischaemic
PARAMS = np.array(
    [(60.0, 4.0, 0.0), (60.0, 4.0, 3.0), (22.0, 5.0, 2.0), (20.0, 12.0, 6.0), (10.0, 8.0, 1.0)]
)


def box_curves(params: np.ndarray, time_s: np.ndarray = TIME) -> np.ndarray:
    """Eq. (1) with the analytic gamma-variate AIF: F * (S(t - td) - S(t - td - MTT))."""
    flow = cbf_to_flow(params[:, :1])
    late = time_s[None] - params[:, 2:3]
    return flow * (AIF.cumulative(late) - AIF.cumulative(late - params[:, 1:2]))


def test_units_of_a_unit_flow_and_its_volume():
    # F = 0.01 /s -> 0.01 * 6000 * 0.73 / 1.04 = 42.115 ml/100g/min; CBV at MTT 6 s = 4.21 ml/100g
    assert cbf_to_flow(42.11538461538461) == pytest.approx(0.01)
    assert cbv_from_cbf_mtt(42.11538461538461, 6.0) == pytest.approx(4.2115, rel=1e-4)


def test_resampling_puts_non_uniform_frames_on_the_shortest_step():
    grid, values = resample_uniform(np.array([0.0, 1.0, 3.0]), np.array([[0.0, 2.0, 6.0]]))
    np.testing.assert_allclose(grid, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(values, [[0.0, 2.0, 4.0, 6.0]])


def test_spectrum_is_the_circulant_matrix_eigenvalues():
    aif = np.array([0.0, 2.0, 1.0])
    spectrum = circulant_spectrum(aif, dt_s=2.0)
    # first column dt * (a_{k-1} + 4 a_k + a_{k+1}) / 6 on the zero-padded, wrapped AIF
    column = 2.0 * np.array([2.0, 9.0, 6.0, 1.0, 0.0, 0.0]) / 6.0
    matrix = np.stack([np.roll(column, j) for j in range(6)], axis=1)
    np.testing.assert_allclose(
        np.sort(np.abs(spectrum)), np.sort(np.abs(np.linalg.eigvals(matrix)))
    )


def test_oscillation_index_of_a_hand_curve():
    # second differences of [0, 2, 0, 0]: |0-4+0| = 4, |2-0+0| = 2 -> 6 / (4 * 2)
    assert oscillation_index(np.array([0.0, 2.0, 0.0, 0.0]))[()] == pytest.approx(0.75)


@pytest.mark.parametrize("threshold", [None, 0.1])
def test_bsvd_recovers_box_parameters_within_its_known_bias(threshold):
    maps = bsvd_maps(box_curves(PARAMS), AIF(TIME), TIME, cfg=BsvdConfig(threshold=threshold))
    cbf, mtt, delay = PARAMS.T
    # SVD under-regularised overshoots a box's edges, truncation rounds them: ~10-20 % (field.md 5)
    np.testing.assert_allclose(maps["cbf"], cbf, rtol=0.2)
    np.testing.assert_allclose(maps["cbv"], cbv_from_cbf_mtt(cbf, mtt), rtol=0.01)  # area ratio
    np.testing.assert_allclose(maps["mtt"] * maps["cbf"] / 60.0, maps["cbv"], rtol=1e-5)
    short = mtt <= 5.0  # a short box's smoothed residue peaks at its centre
    np.testing.assert_allclose(maps["tmax"][short], tmax_box(delay, mtt)[short], atol=0.3)
    np.testing.assert_allclose(maps["tmax"] - maps["mtt"] / 2, maps["delay"], atol=1e-5)


def test_bsvd_is_delay_insensitive_and_sees_tissue_ahead_of_the_aif():
    params = np.array([(45.0, 4.0, d) for d in (0.0, 3.0, 8.0)])
    maps = bsvd_maps(box_curves(params), AIF(TIME), TIME)
    assert np.ptp(maps["cbf"]) < 0.01 * maps["cbf"][0]
    np.testing.assert_allclose(np.diff(maps["tmax"]), [3.0, 5.0], atol=0.05)
    # shift the tissue 2 s ahead of the AIF: the circulant wraps it to a negative Tmax
    early = bsvd_maps(box_curves(np.array([(45.0, 4.0, 0.0)]), TIME + 2.0), AIF(TIME), TIME)
    assert early["tmax"][0] == pytest.approx(maps["tmax"][0] - 2.0, abs=0.1)


def test_bsvd_masks_and_handles_non_uniform_frames():
    times = np.r_[np.arange(0.0, 20.0), np.arange(20.0, 60.0, 2.0)]
    curves = box_curves(PARAMS[:3], times).reshape(3, 1, 1, -1)
    mask = np.array([True, False, True]).reshape(3, 1, 1)
    maps = bsvd_maps(curves, AIF(times), times, mask=mask)
    assert maps["cbf"].shape == (3, 1, 1) and maps["cbf"][1, 0, 0] == 0.0
    np.testing.assert_allclose(maps["cbf"][[0, 2], 0, 0], PARAMS[[0, 2], 0], rtol=0.2)


def test_box_model_table_integrates_a_linear_aif_exactly():
    model = BoxModel(np.array([0.0, 2.0, 4.0]), np.array([0.0, 4.0, 8.0]))
    t = torch.tensor([-1.0, 1.0, 3.0, 6.0], dtype=torch.float64)
    # ramp 2t (PCHIP keeps a straight line straight): 1 by 1 s, 9 by 3 s, 16 by 4 s; then held
    # at 8: 16 + 2 * 8 by 6 s
    np.testing.assert_allclose(model.cumulative(t).numpy(), [0.0, 1.0, 9.0, 32.0], atol=1e-9)
    np.testing.assert_allclose(model.aif_at(t).numpy(), [0.0, 2.0, 6.0, 8.0])


def test_nlr_recovers_parameters_of_its_own_model_exactly():
    model = BoxModel(TIME, AIF(TIME))
    truth = torch.as_tensor(np.c_[cbf_to_flow(PARAMS[:, 0]), PARAMS[:, 2], PARAMS[:, 1]])
    curves = truth[:, :1] * model.shape(truth[:, 1], truth[:, 2])
    maps = nlr_maps(curves.numpy(), AIF(TIME), TIME)
    np.testing.assert_allclose(maps["cbf"], PARAMS[:, 0], rtol=0.02)
    np.testing.assert_allclose(maps["mtt"], PARAMS[:, 1], rtol=0.02)
    np.testing.assert_allclose(maps["delay"], PARAMS[:, 2], atol=0.05)
    np.testing.assert_allclose(maps["tmax"], tmax_box(PARAMS[:, 2], PARAMS[:, 1]), atol=0.05)


def test_nlr_on_analytic_curves_is_limited_only_by_frame_sampling():
    maps = nlr_maps(box_curves(PARAMS), AIF(TIME), TIME, cfg=NlrConfig())
    # a 1 s sampled AIF misses some of a 5 s wide bolus: a few % on short MTT
    np.testing.assert_allclose(maps["cbf"], PARAMS[:, 0], rtol=0.07)
    np.testing.assert_allclose(maps["cbv"], cbv_from_cbf_mtt(PARAMS[:, 0], PARAMS[:, 1]), rtol=0.02)
    np.testing.assert_allclose(maps["tmax"], tmax_box(PARAMS[:, 2], PARAMS[:, 1]), atol=0.1)


def test_baselines_refuse_an_aif_without_a_bolus():
    for method in (bsvd_maps, nlr_maps):
        with pytest.raises(PerfusionError, match="AIF"):
            method(box_curves(PARAMS), np.zeros_like(TIME), TIME)


def test_prepared_case_entry_points_agree_with_arrays_and_zero_outside_the_brain():
    tissue = box_curves(PARAMS[:2]).reshape(2, 1, 1, -1).astype(np.float32)
    brain = np.array([True, False]).reshape(2, 1, 1)
    none = np.zeros_like(brain)
    case = PreparedCase(tissue, TIME, AIF(TIME), np.eye(4), brain, none, none)
    for by_case, by_arrays in ((fit_bsvd, bsvd_maps), (fit_nlr, nlr_maps)):
        maps = by_case(case)
        expected = by_arrays(tissue[:1], AIF(TIME), TIME)
        assert set(maps) == {"cbf", "cbv", "mtt", "tmax", "delay"}
        assert maps["cbf"][0, 0, 0] == pytest.approx(expected["cbf"][0, 0, 0], rel=1e-5)
        assert all(m[1, 0, 0] == 0.0 and m.dtype == np.float32 for m in maps.values())


def test_the_method_registry_names_every_classical_method():
    from perfusion.fitting.config import CLASSICAL_METHODS
    from perfusion.fitting.run import BASELINES

    assert tuple(BASELINES) == CLASSICAL_METHODS


def test_cut_weights_edge():
    relative = np.array([0.0, 0.089, 0.09, 0.1, 0.11, 0.111, 1.0])
    np.testing.assert_array_equal(cut_weights(relative, 0.1, 0.0), [0, 0, 0, 1, 1, 1, 1])
    soft = cut_weights(relative, 0.1, 0.1)
    np.testing.assert_allclose(soft[[0, 1, 2, 4, 5, 6]], [0, 0, 0, 1, 1, 1], atol=1e-12)
    assert soft[3] == pytest.approx(0.5)


def test_a_tapered_cut_moves_the_maps_gradually_with_the_aif():
    """A fixed threshold exactly at one frequency's singular value: a change of the AIF far
    below a HU flips that frequency in or out of Wu's hard cut, and the CBF jumps; with the
    taper it moves in proportion to the change."""
    curves = box_curves(PARAMS)
    aif = AIF(TIME)
    modulus = np.abs(circulant_spectrum(aif, 1.0))
    edge = float(np.sort(modulus / modulus.max())[len(modulus) // 2])  # a mid-band frequency
    bump = 1e-4 * np.exp(-0.5 * ((TIME - 12.0) / 3.0) ** 2)  # 1e-4 HU
    change = {}
    for taper in (0.0, 0.1):
        cfg = BsvdConfig(threshold=edge, taper=taper)
        up, down = (bsvd_maps(curves, aif + s * bump, TIME, cfg=cfg)["cbf"] for s in (1, -1))
        change[taper] = float(np.max(np.abs(up - down) / up))
    assert change[0.1] < 1e-3
    assert change[0.0] > 10 * change[0.1]
