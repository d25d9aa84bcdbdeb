"""The clinical page (``report.png``), laid out like commercial CTP summaries (RAPID-like).

Left: CBF, CBV, MTT and Tmax (rows) on the axial slices holding the most core and Tmax > 6 s
tissue (columns), radiological orientation with R/L marks, outlines of the core, of Tmax > 6 s
and, when a reference exists, of the reference core; a colour bar with units per row. Right: the
DEFUSE-3 numbers in large type, the AIF/VOF curves with their source and confidence, warnings,
and the AIF/VOF positions. The header names the case, its acquisition time when known, and that
the page is for research use only.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import offset_copy

from perfusion.clinical import CORE_MIN_COMPONENT_ML, summary_warnings
from perfusion.report.inputs import ArterialInput, mark_positions, plot_curves
from perfusion.report.orientation import mark_sides
from perfusion.report.panels import (
    OUTLINES,
    SCALES,
    MapSet,
    blank,
    colorbar,
    draw_map,
    outline_legend,
)
from perfusion.report.slices import lesion_slices

RESEARCH_ONLY = "Research use only — not for clinical decisions"
NO_LESION = "No perfusion lesion found"
N_SLICES = 5
COLUMN_IN = 2.4
"""Width of one slice column (inches, at 100 dpi 240 px): brains fill their panels."""
SIDE_IN = 5.4
WARNING_WIDTH = 60
"""Characters per line of the summary's warnings under the numbers."""
# The numbers panel is laid out in points below its top, as its fonts are sized, so that its
# rows keep their spacing on any page height; the panel is as tall as its text needs.
TOP_PT = 6.0
"""The space above the first row of the numbers."""
N_ROWS = 6
"""Rows of the numbers (:func:`_numbers`): core, Tmax > 6 s, mismatch volume and ratio, HIR,
the verdict (a row more would overlap the affected side: the report's overlap test)."""
ROW_PT = 32.0
"""One row of the numbers: a 16 pt label over its 10 pt note, beside the 26 pt value."""
SIDE_PT = 26.0
"""The affected-side line (17 pt) and the reference core's (12 pt) each take this much."""
WARNING_LINE_PT = 13.0
"""One line of the summary's warnings (10.5 pt)."""
BELOW = (1.0, 0.32, 1.0)
"""Height ratios of the AIF curves, the input warnings and the vessel thumbnail."""
BELOW_MIN_IN = 3.0
"""The least height (inches) those three get: the page grows rather than squeeze them."""
GAP_IN = 0.3
"""The vertical gap (inches) between the side column's panels."""
MARGINS_IN = 1.1
"""The page's height outside the map grid and the side column (title 0.85, bottom 0.25)."""


@dataclass
class Header:
    """The page's title line: case name, acquisition time (None: omitted), method."""

    case: str
    method: str
    acquired: str | None = None


@dataclass
class Reference:
    """A reference core (``core.nii.gz``): its volume (ml) and the Dice of the predicted core."""

    volume_ml: float
    dice: float


def clinical_figure(
    mapset: MapSet,
    numbers: dict,
    header: Header,
    inputs: ArterialInput | None = None,
    reference: Reference | None = None,
    n_slices: int = N_SLICES,
) -> Figure:
    """Build the clinical page (not saved).

    Args:
        mapset: maps, brain, regions ``core``/``hypo`` (and ``truth``), orientation.
        numbers: the DEFUSE-3 dict of ``summary.json`` (:func:`perfusion.fitting.defuse.defuse3_summary`).
        header: title line.
        inputs: AIF/VOF curves and their record, or None.
        reference: reference core volume and Dice, or None.
        n_slices: columns of slices.
    """
    zs = lesion_slices(mapset.brain, mapset.regions["core"], mapset.regions["hypo"], n_slices)
    view = mapset.view()
    i0, i1, j0, j1 = view.box
    cols, rows = (i1 - i0, j1 - j0) if view.lr_axis == 0 else (j1 - j0, i1 - i0)
    cell_h = COLUMN_IN * rows * view.aspect / cols
    maps_w = COLUMN_IN * len(zs) + 0.55
    warnings = [textwrap.fill(f"{f}: {a}", WARNING_WIDTH) for f, a in summary_warnings(numbers)]
    numbers_in = _numbers_height_pt(reference, warnings) / 72
    height = max(4 * cell_h + 1.2, 9.0, numbers_in + BELOW_MIN_IN + 3 * GAP_IN + MARGINS_IN)
    fig = Figure(figsize=(maps_w + SIDE_IN + 0.9, height), dpi=100)
    outer = fig.add_gridspec(
        1, 2, width_ratios=[maps_w, SIDE_IN], left=0.035, right=0.985,
        top=1 - 0.85 / height, bottom=0.25 / height, wspace=0.16,
    )  # fmt: skip
    _map_grid(fig, outer[0], mapset, zs)
    side = _side_grid(outer[1], height - MARGINS_IN, numbers_in)
    _numbers(fig.add_subplot(side[0]), numbers, reference, warnings)
    _side_panel(fig, side, mapset, inputs)
    _header(fig, header)
    return fig


def _map_grid(fig, spec, mapset: MapSet, zs: list[int]) -> None:
    grid = spec.subgridspec(
        4, len(zs) + 1, width_ratios=[1.0] * len(zs) + [0.06], wspace=0.03, hspace=0.04
    )
    for row, name in enumerate(SCALES):
        image = None
        for col, z in enumerate(zs):
            ax = fig.add_subplot(grid[row, col])
            image = draw_map(ax, mapset, name, z)
            if row == 0:
                ax.set_title(f"slice {z}", fontsize=11)
            if col == 0:
                ax.set_ylabel(SCALES[name].title, fontsize=16, fontweight="bold")
        cax = fig.add_subplot(grid[row, -1])
        colorbar(fig, image, cax, name, fontsize=11)


def _side_grid(spec, height_in: float, numbers_in: float):
    """The side column's four panels: the numbers ``numbers_in`` inches tall, the rest of
    ``height_in`` (less the gaps) shared as :data:`BELOW`."""
    panels_in = height_in - 3 * GAP_IN
    rest = panels_in - numbers_in
    ratios = [numbers_in, *(r * rest / sum(BELOW) for r in BELOW)]
    return spec.subgridspec(4, 1, height_ratios=ratios, hspace=GAP_IN / (panels_in / 4))


def _side_panel(fig, grid, mapset, inputs) -> None:
    bottom = grid[3].subgridspec(1, 2, width_ratios=[1.0, 0.9], wspace=0.05)
    thumb, legend = fig.add_subplot(bottom[0]), fig.add_subplot(bottom[1])
    legend.set_axis_off()
    regions = [r for r in OUTLINES if r in mapset.regions]
    legend.legend(handles=outline_legend(regions), loc="upper left", fontsize=10,
                  title="outlines", title_fontsize=10, alignment="left", facecolor="black",
                  labelcolor="white", framealpha=1.0)  # fmt: skip
    legend.get_legend().get_title().set_color("white")
    warn = fig.add_subplot(grid[2])
    warn.set_axis_off()
    if inputs is None:
        for ax in (fig.add_subplot(grid[1]), thumb):
            ax.set_axis_off()
        return
    curves = fig.add_subplot(grid[1])
    plot_curves(curves, inputs)
    curves.set_title(inputs.describe(), fontsize=12, loc="left")
    lines = inputs.warnings()
    text = "\n".join(textwrap.fill(f"⚠ {line}", 62) for line in lines)
    warn.text(0, 1, text, va="top", fontsize=10.5, color="#c00000", transform=warn.transAxes)
    _positions(thumb, mapset, inputs)


def _positions(ax, mapset: MapSet, inputs: ArterialInput) -> None:
    """AIF/VOF positions on the vessel MIP (or the CBF MIP) of the brain."""
    view = mapset.view()
    background = mapset.vessel_mip
    if background is None:
        background = np.where(mapset.brain, mapset.maps["cbf"], 0).max(axis=2)
    shown = view.image(background)
    high = float(np.percentile(shown, 99.5)) if shown.size else 1.0
    ax.imshow(shown, cmap="gray", vmin=0, vmax=high or 1.0, aspect=view.aspect)
    ax.contour(
        view.image(mapset.brain.any(axis=2)).astype(float), [0.5], colors="0.6", linewidths=1
    )
    blank(ax)
    mark_sides(ax, fontsize=9)
    mark_positions(ax, view, inputs)
    known = inputs.aif_voxels is not None or inputs.vof_voxels is not None
    ax.set_title(
        "AIF ○ / VOF □ positions" if known else "AIF/VOF positions not recorded", fontsize=10
    )


def _verdict(eligible: bool | None, withheld: str | None) -> tuple[str, str]:
    """The note and value of the DEFUSE-3 row; None: withheld, for the reason ``withheld``
    (:func:`perfusion.clinical.withheld_verdict`)."""
    if eligible is None:
        reason = (withheld or "low tissue contrast").split(" (")[0]
        return f"DEFUSE-3: not measurable ({reason})", "—"
    return "DEFUSE-3", "YES" if eligible else "no"


def _rows_pt() -> float:
    """The height (points) of the numbers' rows, from the panel's top to the affected side."""
    return TOP_PT + N_ROWS * ROW_PT + 4


def _numbers_height_pt(reference: Reference | None, warnings: list[str]) -> float:
    """The height (points) :func:`_numbers` draws: the rows, the side line, the reference
    line when there is one, then the ``warnings``' lines."""
    lines = sum(w.count("\n") + 1 for w in warnings)
    return _rows_pt() + SIDE_PT * (1 + (reference is not None)) + WARNING_LINE_PT * lines


def _below_top(ax, points: float):
    """A transform: x in axes fractions, y in axes fractions moved down by ``points``."""
    return offset_copy(ax.transAxes, fig=ax.figure, y=-points, units="points")


def _numbers(ax, numbers: dict, reference: Reference | None, warnings: list[str]) -> None:
    """The DEFUSE-3 numbers in large type, the affected side (or no lesion), the reference,
    then ``warnings`` (wrapped) in one block, so that no number of them can overlap."""
    ax.set_axis_off()
    ratio, hir = numbers.get("mismatch_ratio"), numbers.get("hypoperfusion_intensity_ratio")
    verdict = _verdict(numbers["defuse3_target_mismatch"], numbers.get("verdict_withheld"))
    core_rule = f"rCBF < 30 %, parts ≥ {CORE_MIN_COMPONENT_ML:g} ml"
    rows = [
        ("Core", core_rule, _ml(numbers['core_volume_ml']), OUTLINES["core"]),
        ("Tmax > 6 s", "", _ml(numbers['tmax_gt_6s_volume_ml']), OUTLINES["hypo"]),
        ("Mismatch volume", "", _ml(numbers['mismatch_volume_ml']), None),
        ("Mismatch ratio", "", "—" if ratio is None else f"{ratio:.1f}", None),
        ("HIR", "Tmax > 10 s / Tmax > 6 s", "—" if hir is None else f"{hir:.2f}", None),
        ("Target mismatch", *verdict, None),
    ]  # fmt: skip
    for k, (label, note, value, style) in enumerate(rows):
        y = TOP_PT + k * ROW_PT
        if style is not None:
            ax.add_line(Line2D([0, 0.035], [1, 1], transform=_below_top(ax, y + 7),
                               color=style["color"], lw=6, solid_capstyle="butt"))  # fmt: skip
        ax.text(0.05, 1, label, fontsize=16, va="top", transform=_below_top(ax, y))
        if note:
            ax.text(0.05, 1, note, fontsize=10, color="0.35", va="top",
                    transform=_below_top(ax, y + 17))  # fmt: skip
        ax.text(1.0, 1, value, fontsize=26, fontweight="bold", ha="right", va="top",
                transform=_below_top(ax, y - 3))  # fmt: skip
    y = _rows_pt()
    side = numbers.get("affected_side")
    verdict = f"Affected side: {side}" if side else NO_LESION
    ax.text(0.0, 1, verdict, fontsize=17, fontweight="bold", va="top", transform=_below_top(ax, y))
    y += SIDE_PT
    if reference is not None:
        text = (
            f"Reference core {_ml(reference.volume_ml)}, Dice with the predicted core "
            f"{reference.dice:.2f}"
            if reference.volume_ml > 0
            else "Reference core: none (core.nii.gz is empty)"
        )
        ax.text(0.0, 1, text, fontsize=12, va="top", transform=_below_top(ax, y))
        y += SIDE_PT
    if warnings:
        ax.text(0.0, 1, "\n".join(warnings), fontsize=10.5, color="#b00000", va="top",
                linespacing=1.2, transform=_below_top(ax, y))  # fmt: skip


def _ml(volume: float) -> str:
    """A volume as shown: one decimal below 10 ml, whole millilitres above."""
    return f"{volume:.1f} ml" if abs(volume) < 10 else f"{volume:.0f} ml"


def _header(fig, header: Header) -> None:
    top = 1 - 0.12 / fig.get_figheight()
    fig.text(0.012, top, header.case, fontsize=22, fontweight="bold", va="top")
    details = [f"method {header.method}"]
    if header.acquired:
        details.insert(0, f"acquired {header.acquired}")
    fig.text(0.012, top - 0.42 / fig.get_figheight(), " · ".join(details), fontsize=13, va="top")
    fig.text(0.985, top, RESEARCH_ONLY, fontsize=15, fontweight="bold", color="#c00000",
             ha="right", va="top")  # fmt: skip
