"""Noise level and texture, motion transforms and truncated acquisition of the phantom."""

from __future__ import annotations

import numpy as np
import pytest

from perfusion.errors import PerfusionError
from perfusion.phantom.inputs import frame_times
from perfusion.phantom.noise import add_noise, apply_motion, motion_transforms

SPACING = np.array([1.8, 1.8, 5.0])


@pytest.mark.parametrize("texture", ["white", "correlated"])
def test_noise_sd_is_sigma(texture: str) -> None:
    ctp = np.zeros((48, 48, 6, 20), dtype=np.float32)
    add_noise(np.random.default_rng(0), ctp, 7.0, texture, 1.2, SPACING)
    assert ctp.std() == pytest.approx(7.0, rel=0.02)
    assert abs(ctp.mean()) < 0.1
    in_plane = np.corrcoef(ctp[1:].ravel(), ctp[:-1].ravel())[0, 1]
    across = np.corrcoef(ctp[:, :, 1:].ravel(), ctp[:, :, :-1].ravel())[0, 1]
    assert abs(across) < 0.03
    if texture == "white":
        assert abs(in_plane) < 0.03
    else:  # Gaussian sd 1.2/1.8 vox: neighbour correlation exp(-1/(4 s^2)) = exp(-0.5625) = 0.57
        assert in_plane == pytest.approx(np.exp(-1.0 / (4 * (1.2 / 1.8) ** 2)), abs=0.05)
    with pytest.raises(PerfusionError):
        add_noise(np.random.default_rng(0), ctp, 1.0, "pink", 1.0, SPACING)


def test_motion_moves_frames_by_the_recorded_transform() -> None:
    ctp = np.zeros((20, 20, 4, 3), dtype=np.float32)
    ctp[5:10, 5:10, 1:3] = 100.0
    affine = np.diag([*SPACING, 1.0])
    transforms = np.tile(np.eye(4), (3, 1, 1))
    transforms[2, 0, 3] = 1.8  # frame 2 samples the reference 1.8 mm (one voxel) further in +x
    apply_motion(ctp, affine, transforms)
    np.testing.assert_array_equal(ctp[:, :, :, 1], ctp[:, :, :, 0])
    assert ctp[4, 7, 1, 2] == 100.0 and ctp[9, 7, 1, 2] == 0.0  # the block shifted to 4..8
    assert (ctp[19, :, :, 2] == 0.0).all()  # past the grid's edge: the edge's value, not air
    drift = motion_transforms(np.random.default_rng(1), 30, max_mm=2.0, max_deg=2.0)
    np.testing.assert_array_equal(drift[0], np.eye(4))
    assert np.abs(drift[:, :3, 3]).max() <= 2.0 + 1e-9
    rotation = drift[:, :3, :3]
    np.testing.assert_allclose(
        rotation @ rotation.transpose(0, 2, 1), np.tile(np.eye(3), (30, 1, 1)), atol=1e-12
    )


def test_truncated_acquisition() -> None:
    assert frame_times(60, 1.0, truncate_s=25.0)[-1] == 25.0
    assert frame_times(60, 1.0, truncate_s=25.0).size == 26
    assert frame_times(30, 2.0).tolist()[-1] == 58.0
