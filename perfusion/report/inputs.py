"""The arterial and venous input on a page: curves, where they were measured, how far to trust them.

Preprocessing records in ``meta["aif"]`` the ``source`` (``file``/``supplied``, ``auto``/
``automatic``, ``roi``), the ``aif_voxels``/``vof_voxels`` used, quality ``flags``
(:func:`perfusion.aif.quality_flags` and the partial-volume step) and, for automatic selection,
optionally ``confidence`` (float) and ``confident`` (bool).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from perfusion.clinical import input_warnings
from perfusion.report.orientation import AxialView

SOURCES = {
    "file": "supplied (aif.tsv)",
    "supplied": "supplied (aif.tsv)",
    "auto": "automatic",
    "automatic": "automatic",
    "roi": "user ROI",
}
AIF_COLOR, VOF_COLOR = "tab:red", "tab:blue"
MARKER_COLORS = {"aif": "#ff3030", "vof": "#30b0ff"}
"""Brighter AIF/VOF marker colours for dark images."""


@dataclass
class ArterialInput:
    """The input curves of a fit and what preprocessing recorded about them.

    Attributes:
        time_s: (T,) frame times (s).
        aif_hu, vof_hu: (T,) enhancement (ΔHU); ``vof_hu`` may be None.
        source: ``meta["aif"]["source"]`` (see the module docstring) or None.
        aif_voxels, vof_voxels: (N, 3) voxel indices, or None when unknown.
        flags: quality flag names.
        confidence: automatic selection's confidence (0-1) or None; ``confident`` its verdict.
    """

    time_s: np.ndarray
    aif_hu: np.ndarray
    vof_hu: np.ndarray | None = None
    source: str | None = None
    aif_voxels: np.ndarray | None = None
    vof_voxels: np.ndarray | None = None
    flags: list[str] = field(default_factory=list)
    confidence: float | None = None
    confident: bool | None = None

    @classmethod
    def from_meta(cls, time_s, aif_hu, vof_hu, aif_meta: dict | None) -> ArterialInput:
        """From the curves and preprocessing's ``meta["aif"]`` (None or partial is fine)."""
        info = aif_meta or {}

        def voxels(key: str) -> np.ndarray | None:
            value = info.get(key)
            return None if not value else np.asarray(value, dtype=np.int64).reshape(-1, 3)

        confidence = info.get("confidence")
        return cls(
            time_s=np.asarray(time_s, dtype=np.float64),
            aif_hu=np.asarray(aif_hu, dtype=np.float64),
            vof_hu=None if vof_hu is None else np.asarray(vof_hu, dtype=np.float64),
            source=info.get("source"),
            aif_voxels=voxels("aif_voxels"),
            vof_voxels=voxels("vof_voxels"),
            flags=[str(f) for f in info.get("flags") or []],
            confidence=None if confidence is None else float(confidence),
            confident=info.get("confident"),
        )

    def describe(self) -> str:
        """One line: where the AIF came from and, for an automatic selection, its verdict in
        words with the chosen curves' lead over the runners-up (a small lead is still a
        confident selection when the runners-up have the same shape)."""
        text = f"AIF {SOURCES.get(self.source or '', self.source or 'source not recorded')}"
        verdict = {True: "confident selection", False: "selection NOT confident"}
        words = verdict.get(self.confident) if self.confident is not None else None
        lead = None if self.confidence is None else f"lead {self.confidence:.2f}"
        details = ", ".join(w for w in (words, lead) if w)
        return f"{text}, {details}" if details else text

    def warnings(self) -> list[str]:
        """Plain-language warnings: one per quality flag; a low-confidence selection with its lead."""
        flags = [f for f in self.flags if f != "aif_selection_not_confident"]
        lines = [f"{finding}; {advice}" for finding, advice in input_warnings(flags)]
        if self.confident is False:
            level = "" if self.confidence is None else f" ({self.confidence:.2f})"
            lines.append(f"automatic AIF selection is not confident{level}: check its position")
        return lines


def plot_curves(ax, inputs: ArterialInput, fitted: dict | None = None, fontsize: float = 9):
    """AIF and VOF against time; ``fitted`` (``fine_time_s``, ``aif_fit_hu``): the fit's AIF."""
    ax.plot(inputs.time_s, inputs.aif_hu, "o-", ms=3, lw=1, color=AIF_COLOR, label="AIF")
    if inputs.vof_hu is not None:
        ax.plot(inputs.time_s, inputs.vof_hu, "s-", ms=3, lw=1, color=VOF_COLOR, label="VOF")
    if fitted:
        ax.plot(fitted["fine_time_s"], fitted["aif_fit_hu"], "-", color="k", lw=1.2,
                label="AIF the fit used")  # fmt: skip
    ax.set_xlabel("time (s)", fontsize=fontsize)
    ax.set_ylabel("enhancement (ΔHU)", fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 1)
    ax.legend(fontsize=fontsize - 1, loc="upper right")
    ax.grid(alpha=0.3)


def mark_positions(ax, view: AxialView, inputs: ArterialInput) -> None:
    """AIF (red circles) and VOF (blue squares) voxels, projected on the displayed plane."""
    for voxels, color, marker in (
        (inputs.aif_voxels, MARKER_COLORS["aif"], "o"),
        (inputs.vof_voxels, MARKER_COLORS["vof"], "s"),
    ):
        if voxels is None or len(voxels) == 0:
            continue
        cols, rows = zip(*(view.position(v[0], v[1]) for v in voxels), strict=True)
        ax.scatter(cols, rows, s=28, marker=marker, facecolors="none", edgecolors=color, lw=1.5)
