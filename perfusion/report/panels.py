"""The map panel every page shares: clinical colour scales, outlines, colour bars, side marks.

Display ranges follow commercial CTP summaries (RAPID-like): CBF 0-60 ml/100g/min, CBV 0-6
ml/100g, MTT 0-12 s, Tmax 0-12 s with the 6 s threshold marked on its colour bar. Outlines are
drawn over a dark halo so they stay visible on every colour of the scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from perfusion.clinical import TMAX_PENUMBRA_S  # noqa: E402
from perfusion.report.orientation import AxialView, mark_sides  # noqa: E402


@dataclass(frozen=True)
class MapScale:
    """Name, unit and fixed display range of one map; ``marks``: values drawn on the colour bar."""

    title: str
    unit: str
    low: float
    high: float
    marks: tuple[float, ...] = ()


SCALES = {
    "cbf": MapScale("CBF", "ml/100g/min", 0.0, 60.0),
    "cbv": MapScale("CBV", "ml/100g", 0.0, 6.0),
    "mtt": MapScale("MTT", "s", 0.0, 12.0),
    "tmax": MapScale("Tmax", "s", 0.0, 12.0, marks=(TMAX_PENUMBRA_S,)),
}
COLORMAP = "jet"
BACKGROUND = "black"
OUTLINES = {
    "core": {"color": "#ff2bd6", "linestyles": "solid", "label": "core (rCBF < 30 %)"},
    "hypo": {"color": "#39ff14", "linestyles": "solid", "label": "Tmax > 6 s"},
    "truth": {"color": "white", "linestyles": "dashed", "label": "reference core (core.nii.gz)"},
}
"""Outline colours and styles by region name (magenta core, green Tmax > 6 s as RAPID)."""
HALO = "black"
"""Drawn under every outline and legend sample: a white outline stays visible on a white page."""


@dataclass
class MapSet:
    """What the pages draw, all on one (X, Y, Z) grid.

    Attributes:
        maps: ``cbf``, ``cbv``, ``mtt``, ``tmax`` volumes in ml/100g/min, ml/100g, s, s.
        brain: bool brain mask (outside it the maps are not shown).
        regions: bool volumes to outline, keyed as :data:`OUTLINES` (``core``, ``hypo``,
            optionally ``truth``).
        voxel_to_patient: (4, 4) voxel index -> RAS mm (sets the radiological orientation).
        vessel_mip: optional float (X, Y) image to mark the AIF/VOF positions on (e.g. the
            maximum enhancement projected over slices).
    """

    maps: dict[str, np.ndarray]
    brain: np.ndarray
    regions: dict[str, np.ndarray]
    voxel_to_patient: np.ndarray
    vessel_mip: np.ndarray | None = None
    views: dict = field(default_factory=dict, repr=False)

    @property
    def voxel_volume_ml(self) -> float:
        return abs(float(np.linalg.det(np.asarray(self.voxel_to_patient)[:3, :3]))) / 1000.0

    def view(self) -> AxialView:
        """The radiological view cropped to the brain (computed once)."""
        if "axial" not in self.views:
            footprint = np.asarray(self.brain).any(axis=2)
            self.views["axial"] = AxialView.from_affine(
                self.voxel_to_patient, self.brain.shape[:2], footprint
            )
        return self.views["axial"]


def blank(ax) -> None:
    """No ticks or frame; a black background where nothing is drawn."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor(BACKGROUND)
    for spine in ax.spines.values():
        spine.set_visible(False)


def draw_map(ax, mapset: MapSet, name: str, z: int, marks: bool = True, lw: float = 1.4):
    """Axial slice ``z`` of map ``name`` with the region outlines; returns the AxesImage."""
    view, scale = mapset.view(), SCALES[name]
    plane = np.where(mapset.brain[..., z], mapset.maps[name][..., z], np.nan)
    image = ax.imshow(
        view.image(plane),
        cmap=COLORMAP,
        vmin=scale.low,
        vmax=scale.high,
        aspect=view.aspect,
        interpolation="nearest",
    )
    blank(ax)
    for region, mask in mapset.regions.items():
        outline(ax, view.image(mask[..., z]), region, lw)
    if marks:
        mark_sides(ax)
    return image


def outline(ax, mask2d: np.ndarray, region: str, lw: float = 1.4) -> None:
    """Contour of a displayed bool image in the region's style, over a black halo."""
    if not np.asarray(mask2d).any():
        return
    style = OUTLINES[region]
    values = np.asarray(mask2d, dtype=float)
    ax.contour(values, [0.5], colors=HALO, linewidths=lw + 1.6)
    ax.contour(values, [0.5], colors=style["color"], linewidths=lw, linestyles=style["linestyles"])


def colorbar(
    fig, image, cax, name: str, fontsize: float = 10, orientation: str = "vertical"
) -> None:
    """The map's colour bar with its unit; threshold marks (Tmax 6 s) as a line and a tick.

    ``orientation``: ``vertical`` (ticks on the right) or ``horizontal`` (ticks below).
    """
    scale = SCALES[name]
    bar = fig.colorbar(image, cax=cax, orientation=orientation)
    bar.set_label(f"{scale.title} ({scale.unit})", fontsize=fontsize)
    ticks = sorted({*np.linspace(scale.low, scale.high, 5), *scale.marks})
    bar.set_ticks(ticks)
    bar.ax.tick_params(labelsize=fontsize - 1)
    line = bar.ax.axhline if orientation == "vertical" else bar.ax.axvline
    for mark in scale.marks:
        line(mark, color="white", lw=3)
        line(mark, color="black", lw=1.5)


def outline_legend(regions, lw: float = 2.5) -> list[Line2D]:
    """Legend handles for the outlines of the named regions, drawn as on the maps: over a black
    halo, so every sample (the white reference core too) shows on a white or a black page."""
    halo = [patheffects.Stroke(linewidth=lw + 2.0, foreground=HALO), patheffects.Normal()]
    return [
        Line2D(
            [],
            [],
            color=OUTLINES[r]["color"],
            lw=lw,
            ls="--" if OUTLINES[r]["linestyles"] == "dashed" else "-",
            label=OUTLINES[r]["label"],
            path_effects=halo,
        )  # fmt: skip
        for r in regions
        if r in OUTLINES
    ]
