"""``perfusion inspect PATH``: print what a case folder, ISLES case, DICOM series or NIfTI holds.

Reads through the same validating readers as every other command, so a bad input fails here
with the same one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfusion.datasets import ReadOptions, read_with
from perfusion.help import Options
from perfusion.io import Case

UNIFORM_TOL_S = 0.05  # interval spread below which frames count as uniformly spaced


@dataclass
class InspectConfig(ReadOptions):
    """Options of ``perfusion inspect``."""

    times: bool = False
    """Also print every frame time (s)."""


OPTIONS = Options(InspectConfig)


def timing_line(times_s: np.ndarray) -> str:
    """One line on the frame times: count, span, and uniform interval or its range."""
    steps = np.diff(times_s)
    span = f"{len(times_s)} frames, {times_s[0]:.2f}-{times_s[-1]:.2f} s"
    if np.ptp(steps) <= UNIFORM_TOL_S:
        return f"{span}, uniform every {np.mean(steps):.2f} s"
    return (
        f"{span}, NON-uniform: intervals {steps.min():.2f}-{steps.max():.2f} s "
        f"(median {np.median(steps):.2f} s)"
    )


def describe(case: Case, show_times: bool = False) -> list[str]:
    """The lines ``inspect`` prints for a case (units in every line)."""
    x, y, z, t = case.ctp_hu.shape
    sx, sy, sz = case.spacing_mm
    hu = case.ctp_hu
    origin = " ".join(filter(None, (case.meta.get("layout", "case"), case.meta.get("subject"))))
    lines = [
        f"source: {case.path} ({origin})",
        f"scan: {x} x {y} x {z} voxels x {t} frames, spacing {sx:.3g} x {sy:.3g} x {sz:.3g} mm",
        f"frames: {timing_line(case.frame_times_s)}",
        f"HU: {hu.min():.0f} to {hu.max():.0f} (first-frame median {np.median(hu[..., 0]):.0f})",
    ]
    if show_times:
        lines.append("frame times (s): " + " ".join(f"{v:.2f}" for v in case.frame_times_s))
    if case.curves is not None:
        c = case.curves
        peak = int(np.argmax(c.aif_hu))
        vof = "with VOF" if c.vof_hu is not None else "no VOF"
        lines.append(
            f"AIF: from {c.source} ({len(c.time_s)} samples, peak {c.aif_hu[peak]:.0f} HU at "
            f"{c.time_s[peak]:.1f} s, {vof})"
        )
    else:
        lines.append("AIF: automatic (no aif.tsv; selected by `perfusion preprocess`)")
    lines.append(_mask_line("brain mask", case.brainmask, case, "none (computed by preprocess)"))
    lines.append(_mask_line("core", case.core, case, "none"))
    vendor = case.meta.get("vendor_maps")
    if vendor:
        lines.append(f"vendor maps ({case.meta.get('vendor', '?')}): {', '.join(sorted(vendor))}")
    return lines


def _mask_line(label: str, mask: np.ndarray | None, case: Case, absent: str) -> str:
    if mask is None:
        return f"{label}: {absent}"
    n = int(np.count_nonzero(mask))
    return f"{label}: {n} voxels, {n * case.voxel_volume_ml:.2f} ml"


def main(argv: list[str]) -> None:
    path, cfg = OPTIONS.parse(__doc__, argv)
    case = read_with(path, cfg)
    print("\n".join(describe(case, cfg.times)))
