"""Rigid registration: frame-to-frame motion correction and the standard coordinate frame.

Motion correction registers every CTP frame to a reference frame with a rigid (Euler3D)
transform (SimpleITK, mean squares; one level, and a two-level pyramid for a frame that jumped
or did not converge) and reports per-frame rotations
(degrees) and translations (mm). It compares skull images (bone above ~300 HU, which contrast
does not reach outside vessels: raw HU would follow the bolus) block-averaged to ~3.6 mm, only
near the reference's skull, each frame starting from its neighbour's pose; the full-resolution
frame is resampled once, and only when it moved (bench/results/preprocess has the timings,
tests/test_registration.py the accuracy).

The standard frame (resppinn-paper.txt, Section 2.6: "aligned all scans to a standard
coordinate frame ... to ensure that the midline was properly centered") is estimated from
left-right symmetry: the yaw/roll rotation and x-shift that maximise the correlation between
the head and its mirror image define the mid-sagittal plane, which becomes x = 0; the origin
is the brain-mask centroid projected onto that plane. Pitch is not identifiable from symmetry
and is kept from the scan's axes. Data are never resampled for fitting: the fields evaluate
each scan voxel at its standard-frame position (PreparedCase.standard_mm), so maps stay on
the scan grid exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, optimize

from perfusion.errors import PerfusionError

MOTION_COLUMNS = ("rot_x_deg", "rot_y_deg", "rot_z_deg", "shift_x_mm", "shift_y_mm", "shift_z_mm")


MAX_BLUR_SHARE = 1.0
"""The largest share of its round-trip blur pattern a frame may lose
(:meth:`MotionResult.even_out_blur`): all of it, which is what a frame interpolated to its pose
holds. A fit against the baseline, itself a mean of blurred frames, can ask for a little more;
that over-corrects the sharpest edges."""

BLUR_FIT_FRAMES = 12
"""Frames, evenly spaced (plus as many of the resampled ones), whose blur patterns fit the
share of :meth:`MotionResult.even_out_blur`."""


@dataclass
class MotionResult:
    """Motion-corrected frames and the rigid parameters that produced them.

    Attributes:
        frames: float32 (X, Y, Z, T) frames resampled onto the reference frame (the input
            array itself when no frame moved enough to be resampled).
        params: float64 (T, 6) per frame: rotations about x, y, z (degrees) and translations
            (mm) of the Euler3D map from reference-frame points to moving-frame points, in
            the scan's voxel axes scaled to mm, about the volume centre.
        reference_frame: index of the reference frame (its row is zero).
        resampled: bool (T,) frames resampled; the others moved less than ``min_shift_vox``
            and are the acquired frames.
        covered: bool (X, Y, Z) voxels whose every resampled frame was read from inside the
            acquired volume (:func:`inside_volume`); the others took the fill in some frame
            (moved in from outside the scan's field of view). None: all are covered.
        transforms: per frame, the rigid map from reference-frame points to moving-frame
            points (mm, as ``params``); None when not kept.
    """

    frames: np.ndarray
    params: np.ndarray
    reference_frame: int
    resampled: np.ndarray | None = None
    covered: np.ndarray | None = None
    transforms: list[sitk.Euler3DTransform] | None = None

    def summary(self) -> dict[str, float]:
        """Largest absolute rotation (deg) and translation (mm) over frames, and how many
        frames were resampled."""
        moved = self.resampled if self.resampled is not None else np.ones(len(self.params), bool)
        return {
            "max_rotation_deg": float(np.abs(self.params[:, :3]).max()),
            "max_translation_mm": float(np.abs(self.params[:, 3:]).max()),
            "frames_resampled": int(moved.sum()),
        }

    def even_out_blur(
        self,
        anatomy: np.ndarray,
        spacing_mm: np.ndarray,
        box: tuple[slice, slice, slice] | None = None,
    ) -> float | None:
        """Take the pose-dependent blur of resampling out of the frames, in place.

        Resampling blurs a moved frame by an amount that depends on its sub-voxel pose, so next
        to bone, air or CSF every corrected frame holds a different mix of the two sides of an
        edge: a voxel's curve steps by tens to hundreds of HU whenever the head moves, more
        than a tissue bolus (10-15 HU). Each resampled frame's :func:`round_trip` of
        ``anatomy`` (X, Y, Z HU on the reference grid) predicts the pattern of that blur; how
        much of it a frame holds depends on how the scanner sampled the moved head (about half
        for a smooth head sampled point-wise, all of it for a frame that was itself
        interpolated). That share is fitted by least squares over the covered voxels of a
        sample of frames (:data:`BLUR_FIT_FRAMES`): the frames' deviations from their mean
        against the patterns' deviations from theirs, within 0 .. :data:`MAX_BLUR_SHARE`.
        Each resampled frame then loses that share of its pattern. Only the voxels of ``box``
        (slices, e.g. the brain's bounding box; None: all) are fitted and changed. Returns the
        share; None when no frame was resampled or the transforms were not kept.
        """
        if self.transforms is None or self.resampled is None or not self.resampled.any():
            return None
        box = box or tuple(slice(0, n) for n in anatomy.shape)
        moved = np.nonzero(self.resampled)[0]
        covered = self.covered if self.covered is not None else np.ones(anatomy.shape, bool)
        inside = covered[box]

        image = to_sitk(anatomy, spacing_mm)  # once for all frames

        def pattern(t: int) -> np.ndarray:
            return _round_trip(image, self.transforms[t], box) - anatomy[box]

        # the share from a sample of frames (a scalar needs few), their patterns kept
        n = self.frames.shape[3]
        step = -(-n // BLUR_FIT_FRAMES)
        sample = sorted({*range(0, n, step), *moved[::step].tolist()})
        kept = {t: pattern(t) for t in sample if self.resampled[t]}
        mean_frame = np.zeros(int(inside.sum()))
        for t in sample:  # one frame at a time: no copy of the scan
            mean_frame += self.frames[(*box, t)][inside] / len(sample)
        pattern_sum = np.zeros(mean_frame.shape)
        cross = square = 0.0
        for t, blur in kept.items():  # frames that were not resampled have no pattern
            blur = blur[inside].astype(np.float64)
            pattern_sum += blur
            cross += float(np.dot(self.frames[(*box, t)][inside], blur))
            square += float(np.dot(blur, blur))
        cross -= float(np.dot(mean_frame, pattern_sum))
        square -= float(np.dot(pattern_sum, pattern_sum)) / len(sample)
        share = float(np.clip(cross / square, 0.0, MAX_BLUR_SHARE)) if square > 0 else 0.0
        for t in moved:
            self.frames[(*box, t)] -= share * (kept.pop(t) if t in kept else pattern(t))
        return share


def to_sitk(volume: np.ndarray, spacing_mm: np.ndarray) -> sitk.Image:
    """A float32 SimpleITK image of an (X, Y, Z) array with voxel size ``spacing_mm``.

    Origin 0 and identity direction: registration works in the voxel axes scaled to mm.
    """
    image = sitk.GetImageFromArray(
        np.ascontiguousarray(np.transpose(volume, (2, 1, 0)), np.float32)
    )
    image.SetSpacing([float(s) for s in spacing_mm])
    return image


BONE_CAP_HU = 1000.0
"""Bone weight saturates this far above the threshold, so dense bone or metal cannot dominate."""
MIN_BONE_FRACTION = 0.005
"""Below this fraction of bone voxels in the reference (skull-stripped or bone-free data) the
clipped head image is registered instead of the bone image."""
AIR_HU = -200.0
"""Air: below this HU (the lower clip of the soft-tissue registration image)."""
MIN_AIR_FRACTION = 0.005
"""Without bone, the reference needs this fraction of air voxels (a head outline) to be
registered at all; a field of view filled with tissue (a block phantom, a zero-filled cropped
scan) holds nothing rigid, and a registration of its noise wanders off."""
MASK_MARGIN_MM = 3.0
"""Dilation of the metric mask beyond the reference's structure (at least one coarse voxel):
where bone may move to between neighbouring frames (the optimiser starts from the neighbouring
frame's pose)."""


def registration_image(
    frame_hu: np.ndarray, spacing_mm: np.ndarray, bone_hu: float | None, coarse_mm: float
) -> sitk.Image:
    """The image motion correction compares (float32 SimpleITK image, unitless weights).

    With ``bone_hu`` set, the bone weight clip(HU - bone_hu, 0, 1000) / 1000, averaged over
    blocks of round(coarse_mm / spacing) voxels per axis (at least 1; e.g. 2 x 2 x 1 for
    1.8 x 1.8 x 5 mm and 3 mm; block averaging anti-aliases). The skull does not enhance and
    fixes the rigid head pose, whereas the bolus raises brain tissue by tens of HU and only
    vessel voxels (partial-volumed, ~500 HU at most) past a threshold near 300 HU. With
    ``bone_hu`` None (no skull), clip(HU, -200, 300) at full resolution: the head outline and
    soft tissue carry all the pose information, so nothing is averaged away.
    """
    if bone_hu is None:
        weight = (np.clip(frame_hu, AIR_HU, 300.0) - AIR_HU) / (300.0 - AIR_HU)
        return to_sitk(weight, spacing_mm)
    weight = np.clip(frame_hu - bone_hu, 0.0, BONE_CAP_HU) / BONE_CAP_HU
    factors = [max(1, int(round(coarse_mm / s))) for s in spacing_mm]
    return sitk.BinShrink(to_sitk(weight, spacing_mm), factors)


def bone_threshold(reference_hu: np.ndarray, bone_hu: float) -> float | None:
    """``bone_hu``, or None when the reference has too little bone to register on."""
    return bone_hu if np.mean(reference_hu > bone_hu) >= MIN_BONE_FRACTION else None


def reference_index(reference_frame: int, n_frames: int, path: Path | str | None = None) -> int:
    """``reference_frame`` as an index in 0..n_frames - 1 (negative counts from the end); a
    PerfusionError, naming ``path`` when given, outside that range."""
    if not -n_frames <= reference_frame < n_frames:
        raise PerfusionError(f"reference_frame {reference_frame} outside 0..{n_frames - 1}", path)
    return reference_frame % n_frames


def nothing_to_register(reference_hu: np.ndarray, bone_hu: float) -> str | None:
    """Why ``reference_hu`` cannot be registered (no skull and no head outline), else None."""
    if bone_threshold(reference_hu, bone_hu) is not None:
        return None
    if np.mean(reference_hu < AIR_HU) >= MIN_AIR_FRACTION:
        return None
    return f"the reference frame has no bone above {bone_hu:g} HU and no air below {AIR_HU:g} HU"


def metric_mask(fixed: sitk.Image, margin_mm: float = MASK_MARGIN_MM) -> sitk.Image:
    """uint8 mask of the fixed image's non-zero voxels dilated by ``margin_mm``: the metric is
    evaluated only where the reference has structure or where it can move to (2x faster on a
    head: the bone shell and its margin are ~1/3 of the volume)."""
    radius = [max(1, int(np.ceil(margin_mm / s))) for s in fixed.GetSpacing()]
    return sitk.BinaryDilate(sitk.Cast(fixed > 1e-3, sitk.sitkUInt8), radius)


MIN_SLICES_3D = 4
"""A registration image with fewer slices than this is registered in plane only."""
IN_PLANE_WEIGHTS = (0.0, 0.0, 1.0, 1.0, 1.0, 0.0)
"""Optimiser weights of the Euler3D parameters (rx, ry, rz, tx, ty, tz) for a thin slab."""


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Euler3DTransform,
    iterations: int = 100,
    sampling: float = 1.0,
    seed: int = 0,
    mask: sitk.Image | None = None,
    min_step: float = 1e-4,
    coarse_to_fine: bool = True,
) -> tuple[sitk.Euler3DTransform, bool]:
    """Rigid (Euler3D) transform mapping ``fixed`` points to ``moving`` points, from ``initial``,
    and whether the optimiser converged (stopped on its step size, not on ``iterations``).

    Mean squares, regular-step gradient descent with scales from physical shift (degrees and
    mm move alike). ``coarse_to_fine``: a two-level pyramid (shrink 2, 1; smoothing 1, 0
    voxels) with a first step of 1 that shrinks by 0.8 at each turn, for a start that may be
    millimetres off. Without it one level, a first step of 0.1 shrinking by 0.7: for a start a
    fraction of a millimetre off, in a third of the time. Either way the steps stop at
    ``min_step`` (larger shrinks stop before the flat roll direction of a thin slab converges:
    0.2 degrees of false roll on a still phantom at 0.5). ``sampling`` is the fraction of the
    masked voxels the metric reads, drawn once with ``seed`` (deterministic), but never fewer
    than :data:`MIN_METRIC_POINTS`: on small volumes a fraction of a few thousand voxels
    leaves too few inside the moving image, and ITK warns that none are valid.

    A slab of fewer than :data:`MIN_SLICES_3D` slices moves in plane only (rotation about z,
    shifts along x and y): its few thick slices do not fix the out-of-plane pose, and ITK's
    Gaussian gradient and pyramid need four voxels per axis, so the metric takes plain
    finite-difference gradients at one level there.
    """
    transform = sitk.Euler3DTransform(initial)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    thin = fixed.GetSize()[2] < MIN_SLICES_3D
    if thin:
        method.SetMetricUseFixedImageGradientFilter(False)
        method.SetMetricUseMovingImageGradientFilter(False)
        method.SetOptimizerWeights(IN_PLANE_WEIGHTS)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    points = _mask_points(fixed, mask)
    fraction = min(1.0, max(float(sampling), MIN_METRIC_POINTS / max(points, 1)))
    if fraction < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(fraction, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0 if coarse_to_fine else 0.1,
        minStep=min_step,
        numberOfIterations=iterations,
        relaxationFactor=0.8 if coarse_to_fine else 0.7,
        gradientMagnitudeTolerance=1e-12,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    if coarse_to_fine and not thin:
        method.SetShrinkFactorsPerLevel([2, 1])
        method.SetSmoothingSigmasPerLevel([1, 0])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform, method.GetOptimizerIteration() < iterations


JUMP_MM = 1.5
"""A frame whose pose differs from its neighbour's by more than this (mm at a corner of the
volume's bounding box, rotations included) is registered again coarse to fine: a jerk of the
head, rather than the sub-millimetre drift between consecutive frames."""


def inside_volume(
    transform: sitk.Euler3DTransform, shape: tuple[int, ...], spacing_mm: np.ndarray
) -> np.ndarray:
    """Bool (X, Y, Z): voxels of the reference grid that ``transform`` maps inside the moving
    frame's volume (continuous voxel index within -0.5 .. n - 0.5 on every axis, ITK's buffer
    rule), i.e. that resampling reads from acquired voxels rather than the fill."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    rotation = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=np.float64)
    offset = centre + np.asarray(transform.GetTranslation()) - rotation @ centre
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    inside = np.ones(tuple(shape), dtype=bool)
    for a in range(3):  # moved position along axis a: a sum of one term per grid axis
        index = offset[a] / spacing[a]
        for b in range(3):
            view = [1, 1, 1]
            view[b] = -1
            index = index + (rotation[a, b] / spacing[a]) * axes[b].reshape(view)
        inside &= (index >= -0.5) & (index <= shape[a] - 0.5)
    return inside


def pose_change_mm(
    a: sitk.Euler3DTransform, b: sitk.Euler3DTransform, size_mm: np.ndarray
) -> float:
    """Largest displacement (mm) between two rigid poses over the corners of a box of
    ``size_mm`` (from the origin): rotations count by how far they move the far corners."""
    corners = np.array(np.meshgrid(*[[0.0, s] for s in size_mm], indexing="ij")).reshape(3, -1).T
    moved = [np.subtract(a.TransformPoint(c), b.TransformPoint(c)) for c in corners]
    return float(np.linalg.norm(moved, axis=1).max())


MIN_METRIC_POINTS = 5000
"""Fewest voxels the motion metric samples (all of them when the mask holds fewer)."""


def _mask_points(fixed: sitk.Image, mask: sitk.Image | None) -> int:
    """Voxels the metric may read: the mask's, or the whole image's."""
    if mask is None:
        return int(np.prod(fixed.GetSize()))
    return int(sitk.GetArrayViewFromImage(mask).sum())


def euler_params(transform: sitk.Euler3DTransform) -> np.ndarray:
    """(6,) rotations about x, y, z in degrees, then translations in mm."""
    p = np.asarray(transform.GetParameters(), dtype=np.float64)
    return np.r_[np.degrees(p[:3]), p[3:]]


def round_trip(
    image: np.ndarray,
    transform: sitk.Euler3DTransform,
    spacing_mm: np.ndarray,
    box: tuple[slice, slice, slice] | None = None,
) -> np.ndarray:
    """float32: ``image`` (X, Y, Z) resampled to the pose of a frame that ``transform``
    registers, then back onto its own grid, both linearly as :func:`motion_correct` resamples:
    the blur a frame acquired at that pose has after correction. Beyond the grid the nearest
    edge voxel is read. With ``box`` (slices with unit steps) only the box's voxels are
    computed, as the whole grid's round trip has them: the moved image is made only where the
    way back reads it (the box moved by the transform, a voxel more, within the grid)."""
    return _round_trip(to_sitk(image, spacing_mm), transform, box)


def _round_trip(
    original: sitk.Image,
    transform: sitk.Euler3DTransform,
    box: tuple[slice, slice, slice] | None = None,
) -> np.ndarray:
    """:func:`round_trip` of an image already made with :func:`to_sitk` (made once when many
    transforms take the same image)."""
    linear, float32 = sitk.sitkLinear, sitk.sitkFloat32
    if box is None:
        target = reach = original
    else:
        target = _sub_grid(original, box)
        reach = _sub_grid(original, _moved_box(box, transform, original))
    moved = sitk.Resample(original, reach, transform.GetInverse(), linear, 0.0, float32, True)
    back = sitk.Resample(moved, target, transform, linear, 0.0, float32, True)
    return np.transpose(sitk.GetArrayFromImage(back), (2, 1, 0))


def _sub_grid(image: sitk.Image, box: tuple[slice, ...]) -> sitk.Image:
    """An empty image on the voxels ``box`` of ``image``'s grid (a resampling target)."""
    start = [b.start for b in box]
    grid = sitk.Image([b.stop - b.start for b in box], sitk.sitkFloat32)
    grid.SetSpacing(image.GetSpacing())
    grid.SetOrigin(image.TransformIndexToPhysicalPoint(start))
    return grid


def _moved_box(
    box: tuple[slice, ...], transform: sitk.Euler3DTransform, image: sitk.Image
) -> tuple[slice, ...]:
    """The voxels of ``image``'s grid around where ``transform`` takes ``box``, one voxel
    beyond: all that linear interpolation at the moved points reads."""
    corners = np.array(np.meshgrid(*[[b.start, b.stop - 1] for b in box], indexing="ij"))
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    moved = np.array([transform.TransformPoint(c * spacing) for c in corners.reshape(3, -1).T])
    low = np.maximum(np.floor(moved.min(axis=0) / spacing).astype(int) - 1, 0)
    high = np.minimum(np.ceil(moved.max(axis=0) / spacing).astype(int) + 2, image.GetSize())
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))


def registration_order(n_frames: int, reference: int) -> list[tuple[int, int]]:
    """(frame, neighbour) pairs outward from ``reference``: each frame starts from its
    neighbour's transform (motion is smooth in time, so the optimiser starts close)."""
    after = [(t, t - 1) for t in range(reference + 1, n_frames)]
    return after + [(t, t + 1) for t in range(reference - 1, -1, -1)]


def motion_correct(
    ctp_hu: np.ndarray,
    spacing_mm: np.ndarray,
    reference_frame: int = 0,
    iterations: int = 100,
    sampling: float = 0.5,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
    bone_hu: float = 300.0,
    coarse_mm: float = 3.6,
    min_shift_vox: float = 0.25,
) -> MotionResult:
    """Register every frame of ``ctp_hu`` (X, Y, Z, T) HU to ``reference_frame``.

    Registration compares coarse bone images (:func:`registration_image`; the clipped head at
    full resolution when the reference has no skull above ``bone_hu``) inside the dilated
    reference structure (:func:`metric_mask`; ``sampling`` applies to bone images only), each
    frame starting from its neighbour's
    transform (:func:`registration_order`) with the fast one-level search; a frame that jumped
    more than :data:`JUMP_MM` from its neighbour, or did not converge, is registered again
    coarse to fine. Each full-resolution frame is then resampled once, unless its transform
    moves no corner of the volume's box by ``min_shift_vox`` voxels (of the smallest spacing):
    such a frame is kept as acquired (its parameters are still reported). A slab of fewer than
    :data:`MIN_SLICES_3D` slices is registered in plane at full resolution (block averages
    leave too few points there to fix the rotation).
    Voxels that move in from outside the field of view take the frame's minimum (air); they
    are left out of ``covered``.
    """
    n_frames = ctp_hu.shape[3]
    reference_frame = reference_index(reference_frame, n_frames)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, threads))
    reference = ctp_hu[..., reference_frame]
    if reference.shape[2] < MIN_SLICES_3D:  # in plane only: full resolution fixes the rotation
        coarse_mm = 0.0
    bone = bone_threshold(reference, bone_hu)
    fixed = registration_image(reference, spacing_mm, bone, coarse_mm)
    mask, min_step = metric_mask(fixed), 1e-4 if bone is None else 1e-3
    if bone is None:  # the full-resolution soft-tissue image: every voxel counts
        sampling = 1.0
    fixed_full = to_sitk(reference, spacing_mm)
    found = {reference_frame: sitk.Euler3DTransform()}
    found[reference_frame].SetCenter(
        list(np.asarray(spacing_mm) * (np.array(reference.shape) - 1) / 2)
    )
    # copied on the first frame that moved: a still scan is returned as it is
    frames, covered = None, None
    params = np.zeros((n_frames, 6))
    resampled = np.zeros(n_frames, dtype=bool)
    still_mm = min_shift_vox * float(np.min(spacing_mm))
    size_mm = np.asarray(spacing_mm) * (np.array(reference.shape) - 1)
    for done, (t, neighbour) in enumerate(registration_order(n_frames, reference_frame), 2):
        moving = registration_image(ctp_hu[..., t], spacing_mm, bone, coarse_mm)
        start, args = found[neighbour], (iterations, sampling, t, mask, min_step)
        found[t], converged = register_rigid(fixed, moving, start, *args, coarse_to_fine=False)
        if not converged or pose_change_mm(found[t], start, size_mm) > JUMP_MM:
            found[t], _ = register_rigid(fixed, moving, start, *args, coarse_to_fine=True)
        params[t] = euler_params(found[t])
        if pose_change_mm(found[t], found[reference_frame], size_mm) >= still_mm:
            resampled[t] = True
            if frames is None:
                frames = np.array(ctp_hu, dtype=np.float32, copy=True)
                covered = np.ones(reference.shape, dtype=bool)
            covered &= inside_volume(found[t], reference.shape, spacing_mm)
            moving_full, fill = to_sitk(ctp_hu[..., t], spacing_mm), float(ctp_hu[..., t].min())
            resampled_image = sitk.Resample(
                moving_full, fixed_full, found[t], sitk.sitkLinear, fill
            )
            frames[..., t] = np.transpose(sitk.GetArrayViewFromImage(resampled_image), (2, 1, 0))
        if progress is not None and done % 10 == 0:
            progress(f"motion correction: frame {done}/{n_frames}")
    if frames is None:
        frames = np.asarray(ctp_hu, dtype=np.float32)
    transforms = [found[t] for t in range(n_frames)]
    return MotionResult(frames, params, reference_frame, resampled, covered, transforms)


def motion_table(params: np.ndarray, frame_times_s: np.ndarray) -> str:
    """``motion.tsv`` text: frame, time (s) and the six parameters per row."""
    header = "\t".join(("frame", "time_s", *MOTION_COLUMNS))
    rows = [
        "\t".join([str(i), f"{t:.3f}", *(f"{v:.4f}" for v in row)])
        for i, (t, row) in enumerate(zip(frame_times_s, params, strict=True))
    ]
    return header + "\n" + "\n".join(rows) + "\n"


def plot_motion(params: np.ndarray, frame_times_s: np.ndarray, path: str | Path) -> Path:
    """Save a two-panel PNG (rotations in degrees, translations in mm against time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for k in range(3):
        axes[0].plot(frame_times_s, params[:, k], label=MOTION_COLUMNS[k])
        axes[1].plot(frame_times_s, params[:, 3 + k], label=MOTION_COLUMNS[3 + k])
    axes[0].set_ylabel("rotation (deg)")
    axes[1].set_ylabel("translation (mm)")
    axes[1].set_xlabel("time (s)")
    for ax in axes:
        ax.legend(fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
    fig.suptitle("Estimated rigid motion per frame (relative to the reference frame)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Standard frame


def rotation_matrix(yaw_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) rotation: roll about the anterior (y) axis, then yaw about the superior (z) axis."""
    a, b = np.radians(yaw_deg), np.radians(roll_deg)
    yaw = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    roll = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    return yaw @ roll


def standard_transform(
    centre_mm: np.ndarray, yaw_deg: float, roll_deg: float, shift_mm: float
) -> np.ndarray:
    """4x4 map world mm -> standard mm: p' = R (p - centre) - (shift, 0, 0)."""
    matrix = np.eye(4)
    rotation = rotation_matrix(yaw_deg, roll_deg)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = -rotation @ centre_mm - np.array([shift_mm, 0.0, 0.0])
    return matrix


def _symmetry_cost(
    theta: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    points_vox: np.ndarray,
    centre: np.ndarray,
) -> float:
    """Minus the correlation of the image at ``points_vox`` with the image at their mirrors."""
    to_std = standard_transform(centre, *theta)
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    vox_map = np.linalg.inv(affine) @ np.linalg.inv(to_std) @ mirror @ to_std @ affine
    coords = points_vox @ vox_map[:3, :3].T + vox_map[:3, 3]
    mirrored = ndimage.map_coordinates(image, coords.T, order=1, mode="constant", cval=np.nan)
    # mirrors that leave the slab carry no information (a tilted slab is not symmetric itself)
    seen = np.isfinite(mirrored)
    if seen.sum() < 100:
        return 1.0
    original = image[tuple(points_vox[seen].astype(np.intp).T)]
    a, b = original - original.mean(), mirrored[seen] - mirrored[seen].mean()
    return -float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


def estimate_standard_frame(
    image_hu: np.ndarray, affine: np.ndarray, brain: np.ndarray, max_points: int = 40000
) -> tuple[np.ndarray, dict[str, float]]:
    """Rigid 4x4 map scan world mm -> standard-frame mm from left-right symmetry.

    A coarse grid over yaw (-30..30 deg) and roll (-10..10 deg) seeds a Powell search over
    (yaw, roll, x-shift) of the symmetry correlation, evaluated on (a sample of) the voxels of
    the dilated brain mask of an in-plane smoothed, clipped (-100..200 HU) image.

    Args:
        image_hu: (X, Y, Z) pre-contrast image in HU.
        affine: (4, 4) voxel-to-world affine (mm).
        brain: bool (X, Y, Z) brain mask (non-empty).

    Returns:
        (4x4 scan_to_standard, {"yaw_deg", "roll_deg", "shift_mm", "symmetry"}).
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = ndimage.gaussian_filter(
        np.clip(image_hu, -100.0, 200.0), [1.0 / spacing[0], 1.0 / spacing[1], 0]
    )
    centre = (affine @ np.r_[np.argwhere(brain).mean(axis=0), 1.0])[:3]
    region = ndimage.binary_dilation(brain, iterations=2)
    points = np.argwhere(region).astype(np.float64)
    if len(points) > max_points:
        points = points[np.random.default_rng(0).choice(len(points), max_points, replace=False)]
    args = (image.astype(np.float32), affine, points, centre)
    grid = [(y, r, 0.0) for y in range(-30, 31, 5) for r in range(-10, 11, 5)]
    start = min(grid, key=lambda theta: _symmetry_cost(np.array(theta), *args))
    result = optimize.minimize(
        _symmetry_cost,
        np.array(start),
        args=args,
        method="Powell",
        options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 600},
    )
    yaw, roll, shift = map(float, result.x)
    info = {"yaw_deg": yaw, "roll_deg": roll, "shift_mm": shift, "symmetry": -float(result.fun)}
    return standard_transform(centre, yaw, roll, shift), info


def centring_transform(affine: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """4x4 translation putting the brain-mask centroid at the origin (no rotation)."""
    matrix = np.eye(4)
    matrix[:3, 3] = -(affine @ np.r_[np.argwhere(brain).mean(axis=0), 1.0])[:3]
    return matrix
