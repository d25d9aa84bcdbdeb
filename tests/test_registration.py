"""Motion correction and standard-frame alignment on small synthetic heads with known poses."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from perfusion.registration import (
    MotionResult,
    bone_threshold,
    estimate_standard_frame,
    inside_volume,
    motion_correct,
    motion_table,
    plot_motion,
    registration_order,
    rotation_matrix,
    round_trip,
    standard_transform,
    to_sitk,
)

# 2.5 mm slices: with thicker ones, linear interpolation across slices biases the tilts (rotations
# about x and y) by ~1 degree on a head this small, whatever the optimiser
SPACING = np.array([1.5, 1.5, 2.5])
SHAPE = (48, 48, 16)


def _inside(r: np.ndarray, radius_mm: float) -> np.ndarray:
    """Soft indicator of ``r < 1`` for an ellipsoid radius ``r`` (edge ~2 mm wide, like thick-slice
    partial volume), so that point samples of a moved head agree with interpolated ones."""
    return 1.0 / (1.0 + np.exp(-(1.0 - r) * radius_mm / EDGE_MM))


EDGE_MM = 2.0
BLOBS = [
    (16.0, 10.0, 10.0, 70.0),
    (18.0, -18.0, -8.0, 55.0),
    (8.0, 18.0, -12.0, 65.0),
    (20.0, 0.0, 4.0, 50.0),
]


def head_hu(points_mm: np.ndarray) -> np.ndarray:
    """A left-right symmetric head (HU) at standard-frame points (N, 3) mm.

    Skull shell (1000 HU) around brain (35 HU), with two ventricles (5 HU) at x = ±9 mm, pairs of
    mirrored blobs (50-70 HU) at varied heights and a frontal blob that breaks the front-back
    symmetry; -1000 HU outside.
    """
    x, y, z = points_mm.T
    r = np.sqrt((x / 30.0) ** 2 + (y / 36.0) ** 2 + (z / 26.0) ** 2)
    hu = -1000.0 + 2000.0 * _inside(r, 30.0)
    hu += (35.0 - 1000.0) * _inside(r / 0.88, 26.0)
    for side in (-9.0, 9.0):
        vent = np.sqrt(((x - side) / 5.0) ** 2 + ((y + 4.0) / 12.0) ** 2 + (z / 10.0) ** 2)
        hu += (5.0 - 35.0) * _inside(vent, 6.0)
    for bx, by, bz, value in BLOBS:
        for sx in (-1.0, 1.0):
            blob = np.sqrt(((x - sx * bx) ** 2 + (y - by) ** 2) / 36.0 + (z - bz) ** 2 / 49.0)
            hu += (value - 35.0) * _inside(blob, 6.0)
    front = np.sqrt((x / 12.0) ** 2 + ((y - 22.0) / 6.0) ** 2 + ((z - 4.0) / 8.0) ** 2)
    return hu + (60.0 - 35.0) * _inside(front, 8.0)


def scan_affine(origin_mm: np.ndarray) -> np.ndarray:
    affine = np.diag(np.r_[SPACING, 1.0])
    affine[:3, 3] = origin_mm
    return affine


def sample_head(affine: np.ndarray, world_to_std: np.ndarray) -> np.ndarray:
    """The head on the scan grid of ``affine`` when the head's standard frame is ``world_to_std``."""
    vox = np.indices(SHAPE).reshape(3, -1).T.astype(float)
    world = vox @ affine[:3, :3].T + affine[:3, 3]
    std = world @ world_to_std[:3, :3].T + world_to_std[:3, 3]
    return head_hu(std).reshape(SHAPE).astype(np.float32)


def euler(params_deg_mm: list[float], centre: np.ndarray) -> sitk.Euler3DTransform:
    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(c) for c in centre])
    rx, ry, rz, tx, ty, tz = params_deg_mm
    transform.SetRotation(*np.radians([rx, ry, rz]))
    transform.SetTranslation([tx, ty, tz])
    return transform


def homogeneous(transform: sitk.Euler3DTransform) -> np.ndarray:
    """4x4 matrix of p -> M (p - c) + c + t."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.reshape(transform.GetMatrix(), (3, 3))
    c = np.array(transform.GetCenter())
    matrix[:3, 3] = np.array(transform.GetTranslation()) + c - matrix[:3, :3] @ c
    return matrix


def moved_heads(poses: list[list[float]]) -> list[np.ndarray]:
    """The head sampled point-wise on the scan grid (origin 0, registration's physical space)
    moved by each Euler pose about the grid's centre: frame t(x) = reference(E_t(x))."""
    centre = SPACING * (np.array(SHAPE) - 1) / 2
    to_head = np.eye(4)
    to_head[:3, 3] = -centre
    affine = scan_affine(np.zeros(3))
    return [sample_head(affine, to_head @ homogeneous(euler(p, centre))) for p in poses]


def test_motion_correction_recovers_known_rigid_motion(tmp_path) -> None:
    centre = SPACING * (np.array(SHAPE) - 1) / 2
    truths = [
        [0, 0, 0, 0, 0, 0],
        [0.0, 0.0, 3.0, 2.0, -1.5, 0.0],
        [1.0, -1.5, -2.0, -1.0, 2.5, 1.5],
    ]
    # frame t shows the head moved by E_t: frame_t(x) = reference(E_t(x)), sampled analytically
    frames = moved_heads(truths)
    reference = frames[0]
    ctp = np.stack(frames, axis=-1)
    # this head's soft 3.6 mm shell peaks at ~260 HU: the no-skull path (clipped head image at
    # full resolution) registers it
    assert bone_threshold(reference, 300.0) is None
    result = motion_correct(ctp, SPACING, reference_frame=0, iterations=100)
    for t, truth in enumerate(truths):
        # the registration maps reference points to moving points: the inverse of the simulation
        expected = euler(truth, centre).GetInverse()
        got = euler(list(result.params[t]), centre)
        vox = np.indices(SHAPE).reshape(3, -1).T[::7] * SPACING
        moved = np.array([got.TransformPoint(p) for p in vox])
        wanted = np.array([expected.TransformPoint(p) for p in vox])
        error_vox = np.abs((moved - wanted) / SPACING).max()
        angle_error = np.abs(result.params[t, :3] - np.degrees(expected.GetParameters()[:3])).max()
        assert error_vox < 0.5, (t, error_vox)
        assert angle_error < 0.5, (t, angle_error)
    brain = (reference > 0) & (reference < 100)
    # the voxels the motion moves out of the field of view in some frame, as the true poses do
    truly = np.logical_and.reduce(
        [inside_volume(euler(p, centre).GetInverse(), SHAPE, SPACING) for p in truths]
    )
    assert (~truly[..., 0]).any() and (~truly[..., -1]).any() and truly[3:-3, 3:-3, 3:-3].all()
    assert np.mean(result.covered == truly) > 0.99
    brain &= result.covered
    residual = np.abs(result.frames[..., 2] - reference)[brain].mean()
    assert residual < np.abs(ctp[..., 2] - reference)[brain].mean() / 3
    (tmp_path / "motion.tsv").write_text(motion_table(result.params, np.array([0.0, 1.0, 2.5])))
    assert (
        plot_motion(result.params, np.array([0.0, 1.0, 2.5]), tmp_path / "motion.png")
        .stat()
        .st_size
        > 1000
    )
    assert (tmp_path / "motion.tsv").read_text().count("\n") == 4


def bony_head_hu(points_mm: np.ndarray, enhancement: float) -> np.ndarray:
    """:func:`head_hu` inside a 1100 HU skull ~4 mm thick with two asymmetric bony bumps (a real
    skull is no ellipsoid), at bolus phase ``enhancement`` (0-1): brain +40 HU and an artery
    (2 mm radius, along z) +450 HU at the peak."""
    x, y, z = points_mm.T
    r = np.sqrt((x / 30.0) ** 2 + (y / 36.0) ** 2 + (z / 26.0) ** 2)
    hu = head_hu(points_mm) + 2100.0 * (_inside(r / 1.15, 34.5) - _inside(r, 30.0))
    for bx, by, bz in ((0.0, -38.0, -8.0), (22.0, 24.0, 8.0)):
        bump = np.sqrt((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / 6.0
        hu += 2100.0 * _inside(bump, 6.0) * (1.0 - _inside(r / 1.15, 34.5))
    artery = np.sqrt((x - 8.0) ** 2 + (y - 10.0) ** 2) / 2.0
    return hu + enhancement * (40.0 * _inside(r / 0.88, 26.0) + 450.0 * _inside(artery, 2.0))


@pytest.mark.parametrize("sampling", [1.0, 0.02])
def test_bone_registration_ignores_contrast_enhancement(sampling: float, capfd) -> None:
    """Skull-weighted registration on the coarse grid recovers motion while the bolus passes;
    on this small volume even a tiny sampling share keeps enough metric points (ITK would
    otherwise print "No valid points were found" warnings)."""
    shape, spacing = (48, 48, 14), np.array([1.8, 1.8, 5.0])
    centre = spacing * (np.array(shape) - 1) / 2
    vox = np.indices(shape).reshape(3, -1).T.astype(float) * spacing
    truths = [[0] * 6, [0.5, -1.0, 2.0, 1.5, -1.0, 0.5], [1.0, -1.5, 3.0, -1.0, 2.5, 1.5]]
    frames = []
    for truth, enhancement in zip(truths, (0.0, 1.0, 0.6), strict=True):
        world = vox @ homogeneous(euler(truth, centre))[:3, :3].T
        world += homogeneous(euler(truth, centre))[:3, 3] - centre
        frames.append(bony_head_hu(world, enhancement).reshape(shape).astype(np.float32))
    assert bone_threshold(frames[0], 300.0) == 300.0  # the skull path, not the fallback
    result = motion_correct(np.stack(frames, axis=-1), spacing, iterations=100, sampling=sampling)
    assert "WARNING" not in capfd.readouterr().err
    for t, truth in enumerate(truths):
        expected = homogeneous(euler(truth, centre).GetInverse())
        got = homogeneous(euler(list(result.params[t]), centre))
        error_vox = np.abs((vox @ (got - expected)[:3, :3].T + (got - expected)[:3, 3]) / spacing)
        assert error_vox.max() < 0.5, (t, error_vox.max())
        angle_error = np.abs(
            result.params[t, :3] - np.degrees(euler(truth, centre).GetInverse().GetParameters()[:3])
        )
        assert angle_error.max() < 0.5, (t, angle_error)


@pytest.mark.parametrize("slices", [1, 2, 3])
def test_a_thin_slab_is_registered_in_plane(slices: int) -> None:
    """Slabs of 1-3 thick slices (ISLES 2018 has 2-slice cases): in-plane motion is recovered
    during the bolus, the out-of-plane pose stays at zero (ITK's Gaussian gradients need four
    voxels per axis, and a 3D search would fail on them)."""
    shape, spacing = (64, 64, slices), np.array([1.2, 1.2, 10.0])
    centre = spacing * (np.array(shape) - 1) / 2
    vox = np.indices(shape).reshape(3, -1).T.astype(float) * spacing
    truths = [[0] * 6, [0.0, 0.0, 1.0, 1.5, -1.0, 0.0], [0.0, 0.0, 1.5, 1.0, -1.5, 0.0]]
    frames = []
    for truth, enhancement in zip(truths, (0.0, 1.0, 0.6), strict=True):
        moved = homogeneous(euler(truth, centre))
        world = vox @ moved[:3, :3].T + moved[:3, 3] - centre
        frames.append(bony_head_hu(world, enhancement).reshape(shape).astype(np.float32))
    result = motion_correct(np.stack(frames, axis=-1), spacing, iterations=100)
    for t, truth in enumerate(truths):
        assert np.all(result.params[t, [0, 1, 5]] == 0.0), result.params[t]
        expected = homogeneous(euler(truth, centre).GetInverse())
        got = homogeneous(euler(list(result.params[t]), centre))
        error_vox = np.abs((vox @ (got - expected)[:3, :3].T + (got - expected)[:3, 3]) / spacing)
        assert error_vox.max() < 0.5, (t, error_vox.max())


def test_registration_order_starts_each_frame_from_its_neighbour() -> None:
    assert registration_order(5, 2) == [(3, 2), (4, 3), (1, 2), (0, 1)]
    assert registration_order(3, 0) == [(1, 0), (2, 1)]


@pytest.mark.parametrize(
    ("yaw", "roll", "shift"), [(12.0, 4.0, np.array([7.0, -5.0, 3.0])), (-20.0, 0.0, np.zeros(3))]
)
def test_standard_frame_centres_a_rotated_shifted_head(
    yaw: float, roll: float, shift: np.ndarray
) -> None:
    # The head's true standard frame: world = R^T std + shift, so std = R (world - shift).
    truth = standard_transform(shift, yaw, roll, 0.0)
    affine = scan_affine(-SPACING * (np.array(SHAPE) - 1) / 2)
    image = sample_head(affine, truth)
    brain = (image > -50) & (image < 100)
    got, info = estimate_standard_frame(image, affine, brain)
    assert np.allclose(got[:3, :3] @ got[:3, :3].T, np.eye(3), atol=1e-9)
    normal_true = rotation_matrix(yaw, roll)[0]
    normal_got = got[0, :3]
    angle = np.degrees(np.arccos(min(1.0, abs(normal_true @ normal_got))))
    assert angle < 2.0, info
    # points on the true mid-sagittal plane land within one voxel of x = 0
    plane = np.array([[0.0, y, z] for y in (-20, 0, 20) for z in (-10, 0, 10)])
    world = (np.c_[plane, np.ones(len(plane))] @ np.linalg.inv(truth).T)[:, :3]
    x_std = (np.c_[world, np.ones(len(world))] @ got.T)[:, 0]
    assert np.abs(x_std).max() < SPACING[0], x_std


def test_motion_phantom_within_the_recorded_accuracy(tmp_path) -> None:
    """The moving phantom (seed 3, 128 x 128 x 32, 20 frames of drift and one jerk): every
    brain voxel within 0.22 voxel and every rotation within 0.29 degrees of the truth, the
    accuracy motion correction had before it was made faster (bench/results/preprocess)."""
    import json

    from omegaconf import OmegaConf
    from scipy.spatial.transform import Rotation

    from perfusion.config import load_config
    from perfusion.io import read_case
    from perfusion.phantom import make_cohort
    from perfusion.phantom.config import PhantomConfig

    cfg = load_config(PhantomConfig, ["phantom.yaml"], ["motion=true", "seed=3", "n_frames=20"])
    make_cohort(OmegaConf.to_object(cfg), tmp_path, progress=False)
    case = read_case(tmp_path / "patient-000")
    truth = np.array(json.loads((tmp_path / "patient-000/truth/meta.json").read_text())[
        "motion_frame_to_reference"])  # fmt: skip
    result = motion_correct(case.ctp_hu, case.spacing_mm)
    to_q = np.diag([*case.spacing_mm, 1.0]) @ np.linalg.inv(case.affine)
    points = np.c_[np.argwhere(case.brainmask) * case.spacing_mm, np.ones(case.brainmask.sum())]
    centre = case.spacing_mm * (np.array(case.brainmask.shape) - 1) / 2
    for t, motion in enumerate(truth):
        # the registration maps reference points to moving points: the phantom's inverse motion
        wanted = to_q @ np.linalg.inv(motion) @ np.linalg.inv(to_q)
        got = homogeneous(euler(list(result.params[t]), centre))
        error_vox = np.abs(((got - wanted) @ points.T)[:3].T / case.spacing_mm).max()
        angle = np.degrees(Rotation.from_matrix(got[:3, :3] @ wanted[:3, :3].T).magnitude())
        assert error_vox <= 0.22 and angle <= 0.29, (t, error_vox, angle)


def test_inside_volume_is_where_resampling_reads_acquired_voxels() -> None:
    """The coverage of a rigid pose is exactly what SimpleITK's resampling fills from the image
    (everything else takes the fill value)."""
    shape, spacing = (40, 36, 12), np.array([1.8, 1.8, 5.0])
    ones = sitk.GetImageFromArray(np.ones(shape[::-1], dtype=np.float32))
    ones.SetSpacing([float(s) for s in spacing])
    centre = spacing * (np.array(shape) - 1) / 2
    for pose in ([1.1, -1.7, 2.9, 1.0, -2.0, 3.0], [0, 0, 0, 0, 0, -7.0]):
        transform = euler(pose, centre)
        filled = sitk.Resample(ones, ones, transform, sitk.sitkNearestNeighbor, 0.0)
        read = np.transpose(sitk.GetArrayFromImage(filled), (2, 1, 0)) > 0.5
        covered = inside_volume(transform, shape, spacing)
        np.testing.assert_array_equal(covered, read)
        assert 0 < covered.sum() < covered.size


def test_even_out_blur_takes_the_resampling_blur_out_of_the_curves() -> None:
    """Frames of a still, contrast-free head at sub-voxel poses. Sampled point-wise (as a
    scanner samples) and resampled with the true poses, a brain voxel near an edge still changes
    from frame to frame, by how much resampling blurred the edge: about half of the round trip's
    blur, and the fitted share says so. Frames that were themselves interpolated to their pose
    (as the phantom moves them) hold all of it. Either way the curves come out flat to a
    fraction of what they were; with registered poses, too."""
    centre = SPACING * (np.array(SHAPE) - 1) / 2
    poses = [
        [0, 0, 0, 0, 0, 0],
        [0.0, 0.0, 0.0, 0.7, -0.5, 0.0],
        [0.0, 0.0, 1.5, -0.6, 0.8, 1.0],
        [1.0, -0.8, 0.0, 1.1, 0.3, -0.9],
        [0.0, 0.0, -1.2, 0.0, -0.9, 0.6],
    ]
    truths = [euler(p, centre).GetInverse() for p in poses]  # reference -> moving points
    sampled = moved_heads(poses)
    reference = to_sitk(sampled[0], SPACING)
    interpolated = [  # the reference moved to each pose linearly, as the phantom moves frames
        np.transpose(sitk.GetArrayFromImage(sitk.Resample(reference, t.GetInverse())), (2, 1, 0))
        for t in truths
    ]

    def corrected(frames: list[np.ndarray]) -> MotionResult:
        resampled = [
            sitk.Resample(to_sitk(f, SPACING), reference, t, sitk.sitkLinear, 0.0)
            for f, t in zip(frames, truths, strict=True)
        ]
        stack = np.stack(
            [np.transpose(sitk.GetArrayFromImage(r), (2, 1, 0)) for r in resampled], -1
        )
        moved = np.array([False] + [True] * (len(poses) - 1))
        covered = np.logical_and.reduce([inside_volume(t, SHAPE, SPACING) for t in truths])
        return MotionResult(stack, np.zeros((len(poses), 6)), 0, moved, covered, truths)

    brain = (sampled[0] > 0) & (sampled[0] < 100)
    for frames, (low, high) in ((sampled, (0.4, 0.75)), (interpolated, (0.75, 1.0))):
        result = corrected(frames)
        before = result.frames.std(axis=-1)[brain & result.covered]
        share = result.even_out_blur(result.frames.mean(axis=-1), SPACING)
        after = result.frames.std(axis=-1)[brain & result.covered]
        assert low <= share <= high
        assert np.percentile(before, 95) > 5.0  # HU: a tissue bolus is 10-15 HU
        assert np.percentile(after, 95) < np.percentile(before, 95) / 3
    result = motion_correct(np.stack(sampled, axis=-1), SPACING, reference_frame=0)
    before = result.frames.std(axis=-1)[brain & result.covered]
    assert result.even_out_blur(result.frames.mean(axis=-1), SPACING) is not None
    assert result.frames.std(axis=-1)[brain & result.covered].mean() < 0.75 * before.mean()
    still = MotionResult(np.stack(sampled[:1] * 3, -1), np.zeros((3, 6)), 0, np.zeros(3, bool))
    assert still.even_out_blur(sampled[0], SPACING) is None


def test_round_trip_in_a_box_is_the_whole_grids_there() -> None:
    """A round trip computed in a box of the grid is exactly the whole grid's round trip there,
    wherever the box lies (the moved image is made only where the way back reads it)."""
    image = np.random.default_rng(0).normal(0.0, 100.0, (40, 36, 10)).astype(np.float32)
    spacing = np.array([1.8, 1.8, 5.0])
    transform = euler([1.5, -1.0, 3.0, 1.3, -2.1, 0.8], spacing * (np.array(image.shape) - 1) / 2)
    whole = round_trip(image, transform, spacing)
    for box in (
        (slice(8, 30), slice(5, 31), slice(2, 9)),
        (slice(0, 12), slice(24, 36), slice(0, 2)),
    ):
        np.testing.assert_array_equal(round_trip(image, transform, spacing, box), whole[box])
