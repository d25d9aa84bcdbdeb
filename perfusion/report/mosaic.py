"""``mosaic.png``: every axial slice of the brain, Tmax above CBF, with the region outlines.

Slices run inferior to superior, left to right, ``columns`` per row pair (a Tmax row, then the
CBF row of the same slices), in the clinical page's orientation, scales and outlines. One
horizontal colour bar per map for the whole page, in the header beside the outline legend: bars
beside every row stacked their end ticks onto each other (the 0 of one row on the 12 of the next).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from perfusion.report.panels import (
    OUTLINES,
    SCALES,
    MapSet,
    colorbar,
    draw_map,
    outline_legend,
)
from perfusion.report.slices import brain_slices

COLUMNS = 8
CELL_IN = 2.0
HEADER_IN = 1.45
"""Height of the header band (inches): the title, then the colour bars and the legend."""
SHOWN = ("tmax", "cbf")
MIN_WIDTH_IN = 10.5
"""Room for the two 3-inch colour bars and the legend beside them, however few the columns."""


def mosaic_figure(mapset: MapSet, title: str = "", columns: int = COLUMNS) -> Figure:
    """Build the mosaic (not saved): Tmax and CBF on every slice holding brain."""
    zs = brain_slices(mapset.brain)
    columns = min(columns, len(zs))
    groups = [zs[k : k + columns] for k in range(0, len(zs), columns)]
    view = mapset.view()
    i0, i1, j0, j1 = view.box
    cols, rows = (i1 - i0, j1 - j0) if view.lr_axis == 0 else (j1 - j0, i1 - i0)
    cell_h = CELL_IN * rows * view.aspect / cols
    width, height = (
        max(CELL_IN * columns + 0.3, MIN_WIDTH_IN),
        2 * len(groups) * cell_h + HEADER_IN + 0.1,
    )
    fig = Figure(figsize=(width, height), dpi=100)
    grid = fig.add_gridspec(
        2 * len(groups), columns, left=0.15 / width, right=1 - 0.15 / width,
        top=1 - HEADER_IN / height, bottom=0.1 / height, wspace=0.02, hspace=0.02,
    )  # fmt: skip
    images = {}
    for g, group in enumerate(groups):
        for r, name in enumerate(SHOWN):
            for c, z in enumerate(group):
                ax = fig.add_subplot(grid[2 * g + r, c])
                images[name] = draw_map(ax, mapset, name, z, marks=(c == 0), lw=1.0)
                ax.text(0.98, 0.02, f"{SCALES[name].title} z={z}", color="white", fontsize=8,
                        ha="right", va="bottom", transform=ax.transAxes)  # fmt: skip
    fig.text(0.15 / width, 1 - 0.12 / height, title, fontsize=15, fontweight="bold", va="top")
    _header_bars(fig, images, width, height)
    regions = [r for r in OUTLINES if r in mapset.regions and np.asarray(mapset.regions[r]).any()]
    if regions:
        fig.legend(handles=outline_legend(regions), loc="upper right", ncol=1, fontsize=10,
                   frameon=False, bbox_to_anchor=(1 - 0.1 / width, 1 - 0.45 / height))  # fmt: skip
    return fig


def _header_bars(fig: Figure, images: dict, width: float, height: float) -> None:
    """One horizontal colour bar per shown map, side by side under the title (3 inches each)."""
    bar_w, gap, bar_h = 3.0, 0.7, 0.16
    bottom = 1 - 0.78 / height
    for k, name in enumerate(SHOWN):
        left = 0.15 + k * (bar_w + gap)
        cax = fig.add_axes((left / width, bottom, bar_w / width, bar_h / height))
        colorbar(fig, images[name], cax, name, fontsize=10, orientation="horizontal")
