"""Which DICOM image belongs to which CTP frame, and when each frame was taken.

A CTP series repeats each slice position once per frame, so the k-th acquisition (in time) at
every position belongs to frame k. What scanner exports get wrong, and what is done about it:

- **Time tag:** the first of AcquisitionTime, ContentTime, TriggerTime (ms) and
  TemporalPositionTimeOffset (s) that is present in every image and distinct at each position
  orders and times the frames (some exports freeze AcquisitionTime at the scan's start).
- **Midnight:** with the date frozen or removed, a scan over midnight reads 86390, 86395, 0, 5 s
  of day; a jump of more than half a day between sorted times is a wrap, undone by adding 24 h
  to the times after it, and said so.
- **Gaps:** frames more than :data:`~perfusion.io.MAX_FRAME_GAP_S` apart (two acquisitions in one
  series): refused.
- **Incomplete frames:** a position lacking a frame is matched to the others' frame times; the
  frame is named with the missing positions, and dropped when asked (``drop_incomplete``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perfusion.errors import PerfusionError
from perfusion.io import check_frame_gaps

POSITION_TOL_MM = 0.01
HALF_DAY_S = 43200.0
TIME_TAGS = ("AcquisitionTime", "ContentTime", "TriggerTime", "TemporalPositionTimeOffset")
CLOCK_TAGS = ("AcquisitionTime", "ContentTime")  # time of day: these can wrap at midnight


@dataclass
class DicomSlice:
    """One image: position along the slice normal (mm) and its times (s) from each time tag.

    ``times_s`` maps a tag of :data:`TIME_TAGS` to seconds: of the day (plus the date's days
    when a date is present) for AcquisitionTime and ContentTime, from the scan start for
    TriggerTime and TemporalPositionTimeOffset.
    """

    path: Path
    series_uid: str
    position_mm: float
    times_s: dict[str, float] = field(default_factory=dict)
    series_number: int | None = None
    description: str = ""

    @property
    def time_s(self) -> float | None:
        """The first time tag present (AcquisitionTime, else ContentTime, ...), or None."""
        return next((self.times_s[t] for t in TIME_TAGS if t in self.times_s), None)


@dataclass
class Frames:
    """The frames of a series: their images, times (s from the first) and what was fixed."""

    members: list[list[DicomSlice]]
    times_s: np.ndarray | None
    source: str
    notes: list[str] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)


def _position_keys(slices: list[DicomSlice]) -> np.ndarray:
    return np.round(np.array([s.position_mm for s in slices]) / POSITION_TOL_MM).astype(np.int64)


def choose_time_tag(slices: list[DicomSlice], keys: np.ndarray) -> str | None:
    """The first tag present in every image whose times are distinct at each position."""
    for tag in TIME_TAGS:
        if not all(tag in s.times_s for s in slices):
            continue
        values = np.array([s.times_s[tag] for s in slices])
        if all(len(np.unique(values[keys == k])) == np.sum(keys == k) for k in np.unique(keys)):
            return tag
    return None


def unwrap_midnight(times: np.ndarray) -> tuple[np.ndarray, bool]:
    """Times of day with a wrap at midnight made continuous: (times, whether it wrapped)."""
    ordered = np.unique(times)
    if len(ordered) < 2:
        return times, False
    gaps = np.diff(ordered)
    cut = int(np.argmax(gaps))
    if gaps[cut] <= HALF_DAY_S:
        return times, False
    return np.where(times <= ordered[cut], times + 86400.0, times), True


def group_frames(slices: list[DicomSlice], folder: Path, drop_incomplete: bool = False) -> Frames:
    """Assign every image to a frame and time the frames (see the module docstring).

    Raises:
        PerfusionError: frames cannot be ordered (no time tag varies), a position holds more
            images than the others, a frame is incomplete (unless ``drop_incomplete``), or two
            frames are more than :data:`~perfusion.io.MAX_FRAME_GAP_S` apart.
    """
    keys = _position_keys(slices)
    tag = choose_time_tag(slices, keys)
    if tag is None:
        if len(np.unique(keys)) < len(slices) and all(TIME_TAGS[0] in s.times_s for s in slices):
            raise PerfusionError(
                f"AcquisitionTime repeats at a slice position and no {', '.join(TIME_TAGS[1:])} "
                "tells the frames apart: the frame times are unknown",
                folder,
            )
        return Frames([list(slices)], None, "none")  # dcm2niix's times, else the NIfTI step
    times, notes = _unwrapped_times(slices, tag)
    per_position = [
        np.flatnonzero(keys == k)[np.argsort(times[keys == k])] for k in np.unique(keys)
    ]
    members, missing = _match_frames(slices, times, per_position, folder)
    dropped = sorted(missing)
    if dropped and not drop_incomplete:
        counts = sorted({len(p) for p in per_position})
        first = dropped[0]
        raise PerfusionError(
            f"slice positions hold different numbers of frames ({', '.join(map(str, counts))}): "
            f"{_missing_text(first, len(members), missing[first])}"
            + (f" (and {len(dropped) - 1} more incomplete frames)" if len(dropped) > 1 else "")
            + "; drop_incomplete=true leaves incomplete frames out",
            folder,
        )
    for index in dropped:
        notes.append(f"dropped {_missing_text(index, len(members), missing[index])}")
    kept = [m for i, m in enumerate(members) if i not in missing]
    if not kept:
        raise PerfusionError("every frame lacks a slice: not a CTP series", folder)
    frame_times = np.array([min(times[j] for j in m) for m in kept])
    frame_times = frame_times - frame_times[0]
    check_frame_gaps(frame_times, [i for i in range(len(members)) if i not in missing], folder)
    slices_of = [[slices[j] for j in m] for m in kept]
    return Frames(slices_of, frame_times, tag, notes, dropped)


def _unwrapped_times(slices: list[DicomSlice], tag: str) -> tuple[np.ndarray, list[str]]:
    """Each image's time (s) from ``tag``, a midnight wrap undone, and a note when it was."""
    times = np.array([s.times_s[tag] for s in slices])
    if tag not in CLOCK_TAGS:
        return times, []
    times, wrapped = unwrap_midnight(times)
    if not wrapped:
        return times, []
    note = (
        f"frame times cross midnight ({tag} without a running date); "
        "times after 00:00:00 moved on by 24 h"
    )
    return times, [note]


def _missing_text(index: int, n_frames: int, positions_mm: list[float]) -> str:
    where = ", ".join(f"{p:.2f}" for p in positions_mm)
    return (
        f"frame {index + 1} of {n_frames} (index {index}) lacks the slice"
        f"{'s' if len(positions_mm) > 1 else ''} at {where} mm"
    )


def _match_frames(
    slices: list[DicomSlice], times: np.ndarray, per_position: list[np.ndarray], folder: Path
) -> tuple[list[list[int]], dict[int, list[float]]]:
    """Image indices of each frame, and the positions (mm) each incomplete frame lacks.

    The usual count T of images per position is the reference: its positions' k-th times
    (median) are the frame times, and each image of a shorter position joins the nearest frame.
    """
    counts = np.array([len(p) for p in per_position])
    values, freq = np.unique(counts, return_counts=True)
    n_frames = int(values[freq == freq.max()].max())
    if counts.max() > n_frames:
        extra = per_position[int(np.argmax(counts))]
        raise PerfusionError(
            f"the slice at {slices[extra[0]].position_mm:.2f} mm holds {counts.max()} images, "
            f"the others {n_frames} (duplicate files or two series with one UID?)",
            folder,
        )
    full = np.stack([times[p] for p in per_position if len(p) == n_frames])
    reference = np.median(full, axis=0)
    members: list[list[int]] = [[] for _ in range(n_frames)]
    missing: dict[int, list[float]] = {}
    for indices in per_position:
        frame_of = (
            np.arange(n_frames)
            if len(indices) == n_frames
            else np.argmin(np.abs(times[indices][:, None] - reference[None, :]), axis=1)
        )
        if len(np.unique(frame_of)) < len(frame_of):
            raise PerfusionError(
                f"slice positions hold different numbers of frames ({n_frames} and "
                f"{len(indices)}) that cannot be matched by time",
                folder,
            )
        for j, k in zip(indices, frame_of, strict=True):
            members[int(k)].append(int(j))
        for k in sorted(set(range(n_frames)) - {int(k) for k in frame_of}):
            missing.setdefault(k, []).append(slices[indices[0]].position_mm)
    return members, {k: sorted(v) for k, v in missing.items()}
