"""``mosaic.png``: every axial slice of the brain, Tmax above CBF, with the region outlines.

Slices run inferior to superior, left to right, ``columns`` per row pair (a Tmax row, then the
CBF row of the same slices), in the clinical page's orientation, scales and outlines.
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


def mosaic_figure(mapset: MapSet, title: str = "", columns: int = COLUMNS) -> Figure:
    """Build the mosaic (not saved): Tmax and CBF on every slice holding brain."""
    zs = brain_slices(mapset.brain)
    columns = min(columns, len(zs))
    groups = [zs[k : k + columns] for k in range(0, len(zs), columns)]
    view = mapset.view()
    i0, i1, j0, j1 = view.box
    cols, rows = (i1 - i0, j1 - j0) if view.lr_axis == 0 else (j1 - j0, i1 - i0)
    cell_h = CELL_IN * rows * view.aspect / cols
    height = 2 * len(groups) * cell_h + 0.9
    fig = Figure(figsize=(CELL_IN * columns + 1.3, height), dpi=100)
    grid = fig.add_gridspec(
        2 * len(groups), columns + 1, width_ratios=[1.0] * columns + [0.06],
        left=0.01, right=0.955, top=1 - 0.6 / height, bottom=0.1 / height,
        wspace=0.02, hspace=0.02,
    )  # fmt: skip
    for g, group in enumerate(groups):
        for r, name in enumerate(("tmax", "cbf")):
            image = None
            for c, z in enumerate(group):
                ax = fig.add_subplot(grid[2 * g + r, c])
                image = draw_map(ax, mapset, name, z, marks=(c == 0), lw=1.0)
                ax.text(0.98, 0.02, f"{SCALES[name].title} z={z}", color="white", fontsize=8,
                        ha="right", va="bottom", transform=ax.transAxes)  # fmt: skip
            colorbar(fig, image, fig.add_subplot(grid[2 * g + r, -1]), name, fontsize=9)
    regions = [r for r in OUTLINES if r in mapset.regions and np.asarray(mapset.regions[r]).any()]
    fig.text(0.01, 1 - 0.12 / height, title, fontsize=15, fontweight="bold", va="top")
    if regions:
        fig.legend(handles=outline_legend(regions), loc="upper right", ncol=len(regions),
                   fontsize=10, frameon=False, bbox_to_anchor=(0.955, 1.0))  # fmt: skip
    return fig
