"""The f_ODE pre-fit: the box-model grid start, its median filter and the pre-fit itself."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fitting_case import AIF, TISSUES, box_tac  # noqa: E402

from perfusion.baselines.nlr import (  # noqa: E402
    BoxModel,
    NlrConfig,
    baseline_offsets,
    node_prior,
    start_nodes,
)
from perfusion.domain import Domain, DomainConfig  # noqa: E402
from perfusion.errors import PerfusionError  # noqa: E402
from perfusion.fields import FieldsConfig, build_fields  # noqa: E402
from perfusion.fitting.ode_start import (  # noqa: E402
    block_ids,
    grid_start_units,
    local_priors,
    prefit_ode,
    refit_baseline,
    smoothed_start,
    with_floor,
)
from perfusion.fitting.steps import FeatureSource  # noqa: E402
from perfusion.units import cbf_to_flow  # noqa: E402

DOMAIN = Domain.from_config(DomainConfig(), time_origin_s=AIF.t0_s)
TIMES = np.arange(40) * 1.0


def test_grid_start_lands_in_the_right_basin() -> None:
    """Noiseless curves of each tissue start near their true parameters (grid spacing 1 s in
    delay, log-spaced MTT), in particular the delayed, long-MTT lesion."""
    curves = np.stack([box_tac(TIMES, *params) for params in TISSUES.values()])
    start = grid_start_units(curves, TIMES, AIF(TIMES), DOMAIN).double().numpy()
    flow, mtt, delay = DOMAIN.params_physical(start[:, 0], start[:, 1], start[:, 2])
    for k, (cbf, true_mtt, true_delay) in enumerate(TISSUES.values()):
        assert abs(delay[k] - true_delay) <= 1.0, (k, delay[k])
        assert abs(np.log(mtt[k] / true_mtt)) < 0.25, (k, mtt[k])
        assert abs(np.log(flow[k] / cbf_to_flow(cbf))) < 0.35, (k, flow[k])


def test_node_prior_recovers_the_voxels_node_shares() -> None:
    """Voxels sharply at node 0 (70 %) or node 2 (30 %): the learnt prior finds the shares and
    leaves node 1 empty; no iteration is the flat prior."""
    log_likelihood = torch.full((1000, 3), -50.0, dtype=torch.float64)
    log_likelihood[:700, 0] = 0.0
    log_likelihood[700:, 2] = 0.0
    shares = node_prior(log_likelihood, 10).exp()
    torch.testing.assert_close(shares, torch.tensor([0.7, 0.0, 0.3], dtype=torch.float64))
    flat = node_prior(log_likelihood, 0).exp()
    torch.testing.assert_close(flat, torch.full((3,), 1 / 3.0, dtype=torch.float64))


def test_tissue_prior_removes_the_flat_grids_late_tmax() -> None:
    """Noise SD 10 HU on curves that peak at 10-13 HU: a flat prior starts healthy tissue
    (Tmax 3 s) near the middle of the grid, a third of it over 6 s; the prior learnt from the
    tissue starts it near 3 s and keeps the 10 % lesion (Tmax 10 s) apart."""
    rng = np.random.default_rng(0)
    healthy, lesion = box_tac(TIMES, 50.0, 4.0, 1.0), box_tac(TIMES, 25.0, 8.0, 6.0)
    curves = np.concatenate(
        [healthy + rng.normal(0, 10, (2700, 40)), lesion + rng.normal(0, 10, (300, 40))]
    )
    over = {}
    for iterations in (0, 10):
        start = grid_start_units(curves, TIMES, AIF(TIMES), DOMAIN, iterations).double().numpy()
        _, mtt, delay = DOMAIN.params_physical(start[:, 0], start[:, 1], start[:, 2])
        tmax = delay + mtt / 2
        over[iterations] = int((tmax > 6).sum())
        if iterations == 0:
            assert tmax[:2700].mean() > 5.0
        else:
            assert abs(tmax[:2700].mean() - 3.0) < 0.5
            assert tmax[2700:].mean() > tmax[:2700].mean() + 2.0
    assert abs(over[10] - 300) < abs(over[0] - 300) / 3, over


def test_likelihood_tmax_keeps_a_small_lesion_the_tissue_prior_pulls_in() -> None:
    """Noise SD 8 HU, a 5 % lesion (Tmax 8 s, peak 8 HU) in healthy tissue (Tmax 3 s): the
    prior learnt from the tissue starts most of the lesion under 6 s; with each voxel's own
    best Tmax (``ode_prefit_tmax=likelihood``) most of it stays over 6 s, while far fewer
    healthy starts pass 6 s than under the flat prior."""
    rng = np.random.default_rng(0)
    healthy, lesion = box_tac(TIMES, 50.0, 4.0, 1.0), box_tac(TIMES, 20.0, 8.0, 4.0)
    curves = np.concatenate(
        [healthy + rng.normal(0, 8, (2850, 40)), lesion + rng.normal(0, 8, (150, 40))]
    )
    over = {}
    for iterations, by_likelihood in ((0, False), (10, False), (10, True)):
        start = grid_start_units(
            curves, TIMES, AIF(TIMES), DOMAIN, iterations, tmax_by_likelihood=by_likelihood
        ).double()
        _, mtt, delay = DOMAIN.params_physical(*start.numpy().T)
        tmax = delay + mtt / 2
        over[iterations, by_likelihood] = ((tmax[:2850] > 6).sum(), (tmax[2850:] > 6).sum())
        if by_likelihood:
            assert abs(tmax[2850:].mean() - 8.0) < 1.5, tmax[2850:].mean()
    assert over[10, False][1] < 0.5 * 150 < over[10, True][1], over
    assert over[10, True][0] < 0.5 * over[0, False][0], over


def test_local_priors_are_the_mean_posterior_of_a_block_and_its_neighbours() -> None:
    """An 8 x 4 slice, voxels sharply at node 0 (x < 4) or node 2 (x >= 4), blocks of 2 x 2:
    the first block's neighbourhood (x 0-3) is all node 0, the second's (x 0-5) two thirds;
    share 0 is the tissue's prior, share 0.5 the even mixture."""
    tissue = np.ones((8, 4, 1), dtype=bool)
    x = np.argwhere(tissue)[:, 0]
    log_likelihood = torch.full((32, 3), -50.0, dtype=torch.float64)
    log_likelihood[x < 4, 0] = 0.0
    log_likelihood[x >= 4, 2] = 0.0
    blocks, coarse = block_ids(tissue, (2, 2, 1))
    assert coarse == (4, 2, 1) and blocks[x == 0].unique().tolist() == [0, 1]
    tissue_prior = node_prior(log_likelihood, 10)
    local = local_priors(log_likelihood, blocks, coarse, tissue_prior, 1.0, 10).exp()
    torch.testing.assert_close(local[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(local[2], torch.tensor([2 / 3, 0.0, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(local[7], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    none = local_priors(log_likelihood, blocks, coarse, tissue_prior, 0.0, 10).exp()
    torch.testing.assert_close(none, tissue_prior.exp().expand(8, 3))
    half = local_priors(log_likelihood, blocks, coarse, tissue_prior, 0.5, 10).exp()
    torch.testing.assert_close(half[0], torch.tensor([0.75, 0.0, 0.25], dtype=torch.float64))


def _lesion_in_tissue(length: int, width: int, noise_hu: float):
    """A 30 x 10 x 10 block of healthy tissue (CBF 50, MTT 4 s, delay 1 s) holding a lesion
    (CBF 20, MTT 8 s, delay 4 s: Tmax 8 s) of ``length`` x ``width`` x ``width`` voxels, under
    white noise: (tissue, the voxels' lesion flags, their curves (3000, 40))."""
    rng = np.random.default_rng(0)
    tissue = np.ones((30, 10, 10), dtype=bool)
    lesion_mask = np.zeros_like(tissue)
    lesion_mask[12 : 12 + length, 2 : 2 + width, 2 : 2 + width] = True
    lesion_voxels = lesion_mask[tissue]
    healthy, lesion = box_tac(TIMES, 50.0, 4.0, 1.0), box_tac(TIMES, 20.0, 8.0, 4.0)
    noise = rng.normal(0, noise_hu, (3000, 40))
    return tissue, lesion_voxels, np.where(lesion_voxels[:, None], lesion, healthy) + noise


def test_local_prior_keeps_a_small_lesion_the_tissue_prior_pulls_in() -> None:
    """The 5 % lesion above as a 6 x 5 x 5 cube in 3,000 voxels of healthy tissue: the tissue's
    prior starts most of it under 6 s, a local prior (blocks of 2 voxels, ``share`` 1) most of
    it over 6 s, with far fewer healthy starts over 6 s than under the flat prior."""
    tissue, lesion_voxels, curves = _lesion_in_tissue(6, 5, 8.0)
    over = {}
    for iterations, block in ((0, None), (10, None), (10, (2, 2, 2))):
        start = grid_start_units(
            curves, TIMES, AIF(TIMES), DOMAIN, iterations, tissue=tissue, block=block, share=1.0
        ).double()
        _, mtt, delay = DOMAIN.params_physical(*start.numpy().T)
        late = (delay + mtt / 2) > 6
        over[iterations, block] = (late[~lesion_voxels].sum(), late[lesion_voxels].sum())
    assert over[10, None][1] < 0.5 * 150 < over[10, (2, 2, 2)][1], over
    assert over[10, (2, 2, 2)][0] < 0.5 * over[0, None][0], over


def test_floor_mixes_the_flat_prior_into_the_learnt_one() -> None:
    prior = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64).log()
    assert with_floor(prior, 0.0) is prior
    torch.testing.assert_close(with_floor(prior, 1.0).exp(), torch.full((2, 3), 1 / 3).double())
    floored = with_floor(prior, 0.3).exp()
    torch.testing.assert_close(floored[1], torch.tensor([0.45, 0.45, 0.1], dtype=torch.float64))
    torch.testing.assert_close(floored.sum(1), torch.ones(2, dtype=torch.float64))


def test_floor_lets_a_lesion_its_neighbourhood_outnumbers_keep_its_delay() -> None:
    """A 4 x 4 x 4 lesion (Tmax 8 s) in 3,000 voxels under SD 10 HU noise, local blocks of 3
    voxels: the learnt prior starts most of it under 6 s at a short delay; with a floor of 0.2
    many more of it start over 6 s, and a few per cent of the flat prior's healthy starts."""
    tissue, lesion_voxels, curves = _lesion_in_tissue(4, 4, 10.0)
    over, delays = {}, {}
    for iterations, floor in ((0, 0.0), (10, 0.0), (10, 0.2)):
        block = (3, 3, 3) if iterations else None
        start = grid_start_units(
            curves, TIMES, AIF(TIMES), DOMAIN, iterations, tissue=tissue, block=block, share=1.0,
            floor=floor,
        ).double()  # fmt: skip
        _, mtt, delay = DOMAIN.params_physical(*start.numpy().T)
        late = (delay + mtt / 2) > 6
        over[iterations, floor] = (late[~lesion_voxels].sum(), late[lesion_voxels].sum())
        delays[iterations, floor] = float(np.median(delay[lesion_voxels]))
    assert over[10, 0.2][1] > 2 * over[10, 0.0][1] + 10, over
    assert over[10, 0.2][0] < 0.1 * over[0, 0.0][0], over
    assert delays[10, 0.0] < 2.0 < delays[10, 0.2], delays  # true delay 4 s


def test_refit_baseline_finds_a_constant_offset_and_leaves_a_clean_curve() -> None:
    """Grey, white and lesion curves with a little noise (0.1 HU): shifted by +3 / -2 HU (a
    baseline of noise 6 HU over 4 frames could do that) the shift is found within the start
    grid's spacing; unshifted they stay as they are; a noiseless scan is left alone."""
    rng = np.random.default_rng(0)
    names = ("grey", "white", "lesion")
    clean = np.stack([box_tac(TIMES, *TISSUES[name]) for name in names])
    clean = clean + rng.normal(0, 0.1, clean.shape)
    shifted = clean + np.array([3.0, -2.0, 3.0])[:, None]
    found = (shifted - refit_baseline(shifted, TIMES, AIF(TIMES), 6.0, 4.0)).mean(1)
    np.testing.assert_allclose(found, [3.0, -2.0, 3.0], atol=0.3)
    np.testing.assert_allclose(refit_baseline(clean, TIMES, AIF(TIMES), 6.0, 4.0), clean, atol=0.3)
    np.testing.assert_allclose(
        refit_baseline(shifted, TIMES, AIF(TIMES), 0.0, 4.0), shifted, atol=1e-5
    )


def test_refit_baseline_leaves_a_misfit_larger_than_the_noise_alone() -> None:
    """A white-matter curve with a late 1 HU hump the box model cannot follow, under noise of
    0.1 HU: its misfit is several times the noise, so the offset's prior holds the offset
    near 0, where the fit without that prior (``noise_sd_hu`` 100 HU) takes a third of the
    hump into it."""
    rng = np.random.default_rng(1)
    hump = np.where(TIMES >= 24, np.sin(np.pi * (TIMES - 24) / 15.0), 0.0)
    curves = box_tac(TIMES, *TISSUES["white"]) + hump + rng.normal(0, 0.1, (50, TIMES.size))
    held = (curves - refit_baseline(curves, TIMES, AIF(TIMES), 0.1, 4.0)).mean(1)
    free = (curves - refit_baseline(curves, TIMES, AIF(TIMES), 100.0, 4.0)).mean(1)
    assert np.abs(held).mean() < 0.15 < 0.3 < np.abs(free).mean(), (held.mean(), free.mean())


def _ridge_fit(c: torch.Tensor, g: torch.Tensor, ridge: float) -> tuple[float, float, float]:
    """(F, b, |c - F g - b|^2 + ridge b^2) of ``c`` fitted as F g + b, F >= 0."""
    n_t = c.numel()
    a = torch.tensor([[g @ g, g.sum()], [g.sum(), n_t + ridge]], dtype=torch.float64)
    flow, b = torch.linalg.solve(a, torch.stack([g @ c, c.sum()]))
    if flow < 0:  # the box's flow held at 0: b alone
        flow, b = torch.tensor(0.0, dtype=torch.float64), c.sum() / (n_t + ridge)
    r = c - flow * g - b
    return float(flow), float(b), float(r @ r + ridge * b * b)


def test_baseline_offsets_equal_a_per_node_penalised_least_squares() -> None:
    """The closed form against each node's 2 x 2 ridge problem solved directly (float64): at
    every node, F >= 0 and b fitted to the curve with a ridge on b, then b averaged over the
    nodes with weights exp(-SSE / 2 s^2), s^2 the residual variance at the best node without
    the ridge; noisy grey, white and lesion curves, one offset per curve."""
    rng = np.random.default_rng(3)
    curves = np.stack([box_tac(TIMES, *TISSUES[n]) for n in ("grey", "white", "lesion")])
    curves = torch.as_tensor(curves + 2.0 + rng.normal(0, 2.0, curves.shape))
    model, cfg, noise, frames = BoxModel(TIMES, AIF(TIMES)), NlrConfig(), 3.0, 4.0
    shapes = start_nodes(model, cfg)[1].to(torch.float64)  # (K, T)
    n_t, expected = curves.shape[1], []
    for c in curves:
        s2 = min(_ridge_fit(c, g, 0.0)[2] for g in shapes) / (n_t - 4)
        fits = [_ridge_fit(c, g, frames * s2 / noise**2) for g in shapes]
        sse = torch.tensor([f[2] for f in fits])
        weight = torch.softmax(-sse / (2 * s2), 0)
        expected.append(float(weight @ torch.tensor([f[1] for f in fits])))
    found = baseline_offsets(model, curves, cfg, noise, frames)
    np.testing.assert_allclose(found.numpy(), expected, atol=1e-6)


def test_centred_refit_puts_back_a_shift_shared_by_every_curve() -> None:
    clean = np.stack([box_tac(TIMES, *TISSUES[name]) for name in ("grey", "white", "lesion")])
    clean = clean + np.random.default_rng(2).normal(0, 0.1, clean.shape)
    shifted = clean + 3.0
    found = (shifted - refit_baseline(shifted, TIMES, AIF(TIMES), 6.0, 4.0, centred=True)).mean(1)
    np.testing.assert_allclose(found, 0.0, atol=0.05)
    found = (shifted - refit_baseline(shifted, TIMES, AIF(TIMES), 6.0, 4.0)).mean(1)
    np.testing.assert_allclose(found, 3.0, atol=0.3)


def test_refit_baseline_halves_the_error_of_a_four_frame_baseline() -> None:
    """White-matter curves (peak about 9 HU) under SD 3 HU noise, baseline-subtracted with the
    mean of the 4 frames before the bolus as preprocessing does: every curve is shifted by
    that mean's error (SD 1.5 HU); removing the fitted offsets leaves under half of it."""
    rng = np.random.default_rng(0)
    true = np.tile(box_tac(TIMES, *TISSUES["white"]), (2000, 1))
    raw = true + rng.normal(0, 3.0, true.shape)
    data = raw - raw[:, :4].mean(1, keepdims=True)
    error_before = (data - true)[:, 4:].mean(1)
    error_after = (refit_baseline(data, TIMES, AIF(TIMES), 3.0, 4.0) - true)[:, 4:].mean(1)
    assert np.std(error_after) < 0.5 * np.std(error_before), (
        np.std(error_before),
        np.std(error_after),
    )
    assert abs(np.mean(error_after)) < 0.2


def test_median_filter_removes_an_isolated_start() -> None:
    tissue = np.ones((5, 5, 1), dtype=bool)
    start = torch.ones((25, 3))
    start[12] = 50.0  # the centre voxel
    smooth = smoothed_start(start, tissue, (3, 3, 1))
    assert torch.allclose(smooth, torch.ones((25, 3)), atol=1e-5)
    assert smoothed_start(start, tissue, (1, 1, 1)) is start  # size 1: unchanged


def test_median_windows_per_parameter() -> None:
    """One window per column (flow, mtt, delay): a 3x3 core of low flow keeps its flow under
    a 1-voxel window, while a 5x5 window on the times removes an isolated delay."""
    tissue = np.ones((7, 7, 1), dtype=bool)
    start = torch.ones((49, 3))
    core = torch.as_tensor(np.isin(np.arange(49), [16, 17, 18, 23, 24, 25, 30, 31, 32]))
    start[core, 0] = 0.1
    start[24, 2] = 50.0
    smooth = smoothed_start(start, tissue, [(1, 1, 1), (5, 5, 1), (5, 5, 1)])
    torch.testing.assert_close(smooth[:, 0], start[:, 0])
    torch.testing.assert_close(smooth[:, 2], torch.ones(49), atol=1e-5, rtol=0)
    assert smoothed_start(start, tissue, (5, 5, 1))[24, 0] > 0.5  # one window: the core goes


def _prefit_eps_values() -> list[float]:
    from perfusion.config import to_object  # noqa: PLC0415
    from perfusion.fitting.init import build_fit_config  # noqa: PLC0415

    return sorted({1e-15, to_object(build_fit_config()).ode_prefit_eps})


@pytest.mark.parametrize("eps", _prefit_eps_values())
def test_prefit_fits_a_distinct_region(eps: float) -> None:
    """Two regions with different starts: after the pre-fit f_ODE tells them apart, at the
    former Adam epsilon and at configs/fit.yaml's."""
    torch.manual_seed(0)
    cfg = FieldsConfig()
    cfg.encoding.n_levels, cfg.encoding.log2_hashmap_size, cfg.encoding.finest_resolution = (
        4,
        12,
        64,
    )
    fields = build_fields(cfg, 3)
    x = torch.rand(2000, 3) * 0.5 + 0.25
    lesion = x[:, 0] < 0.4
    start = torch.tensor([1.0, 0.4, 0.1]).repeat(2000, 1)
    start[lesion] = torch.tensor([0.2, 0.8, 0.5])
    features = FeatureSource(fields, x)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = fields.ode(features(fields, torch.arange(2000)))
    before = float((out.log() - start.log()).abs().mean())
    final = prefit_ode(fields, features, start, 150, 1e-2, 1000, generator, eps=eps)
    with torch.no_grad():
        out = fields.ode(features(fields, torch.arange(2000)))
    after = float((out.log() - start.log()).abs().mean())
    assert final < 0.05 and after < 0.3 * before
    assert float(out[lesion, 2].median()) > 2.5 * float(out[~lesion, 2].median())  # delays apart


def test_the_anchor_gets_a_grid_start_without_the_prefit() -> None:
    """The anchor pulls f_ODE toward the grid start, so the start is computed whenever the
    pre-fit or the anchor needs it, and only then."""
    from fitting_case import make_prepared  # noqa: PLC0415

    from perfusion.fitting.config import FitConfig, LossConfig  # noqa: PLC0415
    from perfusion.fitting.neural import case_samples  # noqa: PLC0415

    prepared = make_prepared()
    region = np.ones(prepared.shape, dtype=bool)
    plain = FitConfig(ode_prefit_steps=0)
    assert case_samples(prepared, plain, DOMAIN, region).ode_start is None
    anchored = FitConfig(ode_prefit_steps=0, loss=LossConfig(anchor=10.0))
    start = case_samples(prepared, anchored, DOMAIN, region).ode_start
    assert start is not None and start.shape == (int(prepared.tissue.sum()), 3)
    assert torch.isfinite(start).all() and (start > 0).all()


def test_prefit_rate_falls_to_zero_under_the_linear_schedule(monkeypatch) -> None:
    """``linear``: the rate falls from lr towards 0 over the steps; ``constant`` holds it."""
    from perfusion.fitting import ode_start

    rates: list[float] = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):  # noqa: ANN001, ANN202
            rates.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(ode_start.torch.optim, "Adam", Recording)
    cfg = FieldsConfig()
    cfg.encoding.n_levels, cfg.encoding.log2_hashmap_size, cfg.encoding.finest_resolution = 2, 8, 32
    x = torch.rand(50, 3)
    start = torch.tensor([1.0, 0.4, 0.1]).repeat(50, 1)
    for schedule in ("linear", "constant"):
        fields = build_fields(cfg, 3)
        prefit_ode(
            fields, FeatureSource(fields, x), start, 4, 1e-2, 10, schedule=schedule, eps=1e-6
        )
    assert rates == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3, 1e-2, 1e-2, 1e-2, 1e-2])
    with pytest.raises(PerfusionError, match="ode_prefit_schedule"):
        prefit_ode(
            fields, FeatureSource(fields, x), start, 4, 1e-2, 10, schedule="cosine", eps=1e-6
        )


def test_the_start_priors_block_in_mm_is_the_nearest_whole_voxels_of_the_grid() -> None:
    """[7.2, 7.2, 10] mm is [4, 4, 2] voxels of 1.8 x 1.8 x 5 mm, [2, 2, 1] of 3.6 x 3.6 x 10 mm
    and [8, 8, 2] of 0.9 x 0.9 x 5 mm; never less than one voxel; a block in voxels is kept."""
    from perfusion.config import load_config
    from perfusion.fitting.config import FitConfig, prior_block_voxels

    mm = load_config(FitConfig, ["fit.yaml"], ["ode_prefit_prior_block_mm=[7.2,7.2,10]"])
    assert prior_block_voxels(mm, (1.8, 1.8, 5.0)) == [4, 4, 2]
    assert prior_block_voxels(mm, (3.6, 3.6, 10.0)) == [2, 2, 1]
    assert prior_block_voxels(mm, (0.9, 0.9, 5.0)) == [8, 8, 2]
    assert prior_block_voxels(mm, (2.0, 2.0, 30.0)) == [4, 4, 1]
    voxels = ["ode_prefit_prior_block=[3,3,1]", "ode_prefit_prior_block_mm=null"]
    assert prior_block_voxels(load_config(FitConfig, ["fit.yaml"], voxels), (9, 9, 9)) == [3, 3, 1]
    none = ["ode_prefit_prior_block_mm=null"]
    assert prior_block_voxels(load_config(FitConfig, ["fit.yaml"], none), (1, 1, 1)) is None


def test_the_start_merges_voxels_finer_than_start_mm() -> None:
    """0.45, 0.9 and 2.5 mm voxels merge 4, 2 and 2 to a side under [1.8, 1.8, 5] mm; the
    default grid's 1.8 x 1.8 x 5 mm and coarser ones keep their voxels, as does None."""
    from perfusion.config import load_config
    from perfusion.fitting.config import FitConfig, start_block_voxels

    mm = load_config(FitConfig, ["fit.yaml"], ["ode_prefit_start_mm=[1.8,1.8,5]"])
    assert start_block_voxels(mm, (0.45, 0.45, 5.0)) == [4, 4, 1]
    assert start_block_voxels(mm, (0.9, 0.9, 2.5)) == [2, 2, 2]
    assert start_block_voxels(mm, (1.8, 1.8, 5.0)) == [1, 1, 1]
    assert start_block_voxels(mm, (1.2, 3.6, 10.0)) == [1, 1, 1]
    none = load_config(FitConfig, ["fit.yaml"], ["ode_prefit_start_mm=null"])
    assert start_block_voxels(none, (0.45, 0.45, 0.5)) == [1, 1, 1]


def test_a_finer_grid_of_the_same_scan_gets_the_same_start() -> None:
    """The noisy lesion case above on 1.8 x 1.8 x 5 mm voxels, and the same scan on a grid
    twice as fine in plane (each voxel's curve in its four 0.9 mm voxels): with
    ``ode_prefit_start_mm`` [1.8, 1.8, 5] every fine voxel starts where its coarse voxel does
    (local prior blocks and median filter included); without it the fine grid's start differs."""
    from types import SimpleNamespace

    from perfusion.config import load_config
    from perfusion.fitting.config import FitConfig
    from perfusion.fitting.neural import prefit_target

    tissue, _, curves = _lesion_in_tissue(6, 5, 8.0)
    volume = np.zeros((*tissue.shape, curves.shape[1]), dtype=np.float32)
    volume[tissue] = curves
    fine_volume = volume.repeat(2, axis=0).repeat(2, axis=1)
    fine_tissue = tissue.repeat(2, axis=0).repeat(2, axis=1)
    scan = {"frame_times_s": TIMES, "aif_hu": AIF(TIMES)}
    coarse_scan = SimpleNamespace(spacing_mm=(1.8, 1.8, 5.0), **scan)
    fine_scan = SimpleNamespace(spacing_mm=(0.9, 0.9, 5.0), **scan)
    starts = {}
    for start_mm in ("[1.8,1.8,5]", "null"):
        cfg = load_config(FitConfig, ["fit.yaml"], [f"ode_prefit_start_mm={start_mm}"])
        coarse = prefit_target(volume[tissue], coarse_scan, tissue, DOMAIN, cfg)
        fine = prefit_target(fine_volume[fine_tissue], fine_scan, fine_tissue, DOMAIN, cfg)
        on_fine = np.zeros((*tissue.shape, 3), dtype=np.float32)
        on_fine[tissue] = coarse.numpy()
        starts[start_mm] = (fine.numpy(), on_fine.repeat(2, axis=0).repeat(2, axis=1)[fine_tissue])
    np.testing.assert_array_equal(*starts["[1.8,1.8,5]"])
    assert not np.allclose(*starts["null"], rtol=1e-3)
