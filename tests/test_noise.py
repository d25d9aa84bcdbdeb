"""The label-free noise estimate against noise of known SD: synthetic curves, and phantoms of
known sigma (white and CT-textured) after the in-plane smoothing the fit sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perfusion.gamma_variate import GammaVariate
from perfusion.noise import estimate_noise, tissue_contrast
from perfusion.preprocess import smooth_in_plane

BOLUS = GammaVariate(t0_s=8.0, alpha=3.0, beta_s=1.5, peak_hu=12.0)


def curves(sigma: float, times: np.ndarray, n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return BOLUS(times)[None, :] + sigma * rng.standard_normal((n, len(times)))


@pytest.mark.parametrize("sigma", [1.0, 5.0])
def test_pre_bolus_differences_find_white_noise(sigma: float) -> None:
    times = np.arange(40.0)
    estimate = estimate_noise(curves(sigma, times), times, arrival_s=8.0)
    assert estimate.method == "pre-bolus frame differences" and estimate.frames == 8
    assert estimate.sd_hu == pytest.approx(sigma, rel=0.05) and estimate.warnings == []


def test_few_pre_bolus_frames_fall_back_with_a_warning() -> None:
    times = np.arange(40.0)
    estimate = estimate_noise(curves(5.0, times), times, arrival_s=2.5)
    assert estimate.method == "temporal second differences" and len(estimate.warnings) == 1
    assert estimate.sd_hu == pytest.approx(5.0, rel=0.1)


def test_two_pre_bolus_frames_suffice_when_asked() -> None:
    """Frames 0 and 1 before the bolus: the default falls back to second differences; with
    ``min_pre_frames=2`` (the baseline offset's prior) their one difference per voxel is used,
    and on noiseless curves it finds no noise where second differences read the bolus."""
    times = np.arange(40.0)
    noisy = estimate_noise(curves(5.0, times), times, arrival_s=2.5, min_pre_frames=2)
    assert noisy.method == "pre-bolus frame differences" and noisy.frames == 2
    assert noisy.sd_hu == pytest.approx(5.0, rel=0.05)
    clean = curves(0.0, times, n=10)
    assert estimate_noise(clean, times, arrival_s=2.5, min_pre_frames=2).sd_hu == 0.0
    assert estimate_noise(clean, times, arrival_s=2.5).sd_hu > 0.0


def test_a_changing_frame_interval_is_reported() -> None:
    times = np.r_[np.arange(30.0), 30.0 + 3.0 * np.arange(1, 8)]
    estimate = estimate_noise(curves(2.0, times), times, arrival_s=8.0)
    assert any("interval changes" in w for w in estimate.warnings)
    assert estimate.sd_hu == pytest.approx(2.0, rel=0.05)


def test_expected_residual_counts_the_baseline_mean() -> None:
    estimate = estimate_noise(curves(2.0, np.arange(40.0)), np.arange(40.0), arrival_s=8.0)
    # sigma^2 (1 + 1/n_b - 2/T) with n_b = 8, T = 40
    assert estimate.residual_rms_hu(40, 8) == pytest.approx(
        estimate.sd_hu * np.sqrt(1 + 1 / 8 - 2 / 40)
    )


@pytest.mark.parametrize("texture", ["white", "correlated"])
def test_phantom_noise_after_smoothing_within_ten_percent(texture: str, tmp_path: Path) -> None:
    """The same phantom with and without noise: the smoothed difference is the true noise of
    the data as fitted; the estimate from the noisy case alone must be within +-10 % of its SD."""
    from omegaconf import OmegaConf

    from perfusion.config import load_config
    from perfusion.io import read_case
    from perfusion.phantom import make_cohort
    from perfusion.phantom.config import PhantomConfig

    made = {}
    for sigma in (0.0, 5.0):
        overrides = [
            "shape=[40,40,6]",
            "n_frames=40",
            f"noise_hu={sigma}",
            f"noise_texture={texture}",
        ]
        cfg = load_config(PhantomConfig, ["phantom.yaml"], overrides)
        make_cohort(OmegaConf.to_object(cfg), tmp_path / f"s{sigma:g}", progress=False)
        made[sigma] = read_case(tmp_path / f"s{sigma:g}" / "patient-000")
    noisy, clean = made[5.0], made[0.0]
    brain = clean.brainmask
    arrival = 4.0  # the parametric AIF arrives 4-10 s after the first frame
    for sigma_mm in (0.0, 2.7):
        data = smooth_in_plane(noisy.ctp_hu.astype(np.float32), brain, noisy.spacing_mm, sigma_mm)
        noise = (noisy.ctp_hu - clean.ctp_hu).astype(np.float32)
        truth = smooth_in_plane(noise, brain, noisy.spacing_mm, sigma_mm)[brain]
        data = data[brain]
        estimate = estimate_noise(data, noisy.frame_times_s, arrival)
        assert estimate.sd_hu == pytest.approx(float(truth.std()), rel=0.10), sigma_mm


@pytest.mark.parametrize("sigma", [2.0, 24.0])
def test_tissue_contrast_is_the_bolus_peak_over_one_voxels_noise(sigma: float) -> None:
    """The mean curve of many voxels keeps the bolus (peak 12 ΔHU) and loses the noise; the
    ratio to the noise SD is the contrast a single voxel has, above 1 at sigma 2, below at 24."""
    times = np.arange(40.0)
    volume = curves(sigma, times, n=30 * 30 * 5).reshape(30, 30, 5, -1)
    tissue = np.zeros((30, 30, 5), dtype=bool)
    tissue[5:25, 5:25] = True  # the rest of the volume is not read
    volume[~tissue] = 1e4
    contrast = tissue_contrast(np.asfortranarray(volume.astype(np.float32)), tissue, times, 8.0)
    peak = BOLUS(times).max()  # as sampled
    assert contrast["peak_hu"] == pytest.approx(peak, abs=4 * sigma / 20)
    assert contrast["noise_sd_hu"] == pytest.approx(sigma, rel=0.05)
    assert contrast["cnr"] == pytest.approx(peak / sigma, rel=0.06)
    assert (contrast["cnr"] < 1.0) == (sigma > peak)
    assert tissue_contrast(volume, np.zeros_like(tissue), times, 8.0)["cnr"] is None
