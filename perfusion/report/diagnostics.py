"""``diagnostics.png``: how well the fit matches the data, for the researcher.

Panels: the AIF/VOF samples with the AIF the fit used; four voxels' data against the fit; the
fit's residual against the noise level of the data, step by step; the loss terms the optimiser
minimised; and a text box (method, steps, stopping reason, masked voxels, Tmax convention, the
note that Tmax is well determined while its delay/MTT split is not).
"""

from __future__ import annotations

import textwrap
from typing import Any

from matplotlib.figure import Figure

from perfusion.report.inputs import ArterialInput, plot_curves

LOSS_LABELS = {
    "tac": "data misfit",
    "aif": "AIF curve misfit",
    "ode": "Eq. (4) residual",
    "anchor": "pull towards the start maps",
    "total": "total (what the optimiser minimises)",
}
"""Plain names of the history's loss columns (perfusion.fitting.steps.LossTerms)."""


def diagnostics_figure(
    summary: dict[str, Any], inputs: ArterialInput | None, fit: Any = None, title: str = ""
) -> Figure:
    """Build the diagnostics page (not saved).

    Args:
        summary: the ``summary.json`` dict.
        inputs: the AIF/VOF the fit was given, or None.
        fit: a neural fit (``curves``, ``history``, ``info``; FieldFit) or None (classical).
        title: the page title.
    """
    neural = fit is not None and bool(fit.history or fit.curves)
    fig = Figure(figsize=(16, 10 if neural else 5.5), dpi=90)
    grid = fig.add_gridspec(2 if neural else 1, 3, left=0.05, right=0.985,
                            top=0.92 if neural else 0.86, bottom=0.07 if neural else 0.12,
                            hspace=0.32, wspace=0.25)  # fmt: skip
    curves = fig.add_subplot(grid[0, 0])
    if inputs is not None:
        plot_curves(curves, inputs, fit.curves if neural and fit.curves else None)
        curves.set_title(f"arterial and venous input ({inputs.describe()})", fontsize=11)
    if neural:
        _voxels(fig.add_subplot(grid[0, 1:]), fit)
        _residual(fig.add_subplot(grid[1, 0]), fit)
        _losses(fig.add_subplot(grid[1, 1]), fit)
    _text(fig.add_subplot(grid[1, 2] if neural else grid[0, 1:]), summary, neural)
    fig.suptitle(title or f"{summary['method']} fit diagnostics", fontsize=14)
    return fig


def _titled(ax, title: str, data: Any, empty: str) -> bool:
    """Title a panel; whether ``data`` is there to draw, else the message ``empty`` in its place."""
    ax.set_title(title, fontsize=11)
    if not data:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    return bool(data)


def _labelled(ax, xlabel: str, ylabel: str) -> None:
    """Axis labels, legend and grid of a drawn panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)


def _voxels(ax, fit: Any) -> None:
    title = "tissue curves of four voxels: data (dots) and the fit (lines)"
    if not _titled(ax, title, fit.curves, "no fitted tissue curves"):
        return
    c = fit.curves
    for i, (data, fitted) in enumerate(zip(c["voxel_data_hu"], c["voxel_fit_hu"], strict=True)):
        ax.plot(c["time_s"], data, ".", color=f"C{i}", ms=5)
        ax.plot(
            c["fine_time_s"], fitted, "-", color=f"C{i}", label=f"voxel {tuple(c['voxels'][i])}"
        )
    _labelled(ax, "time (s)", "enhancement (ΔHU)")


def _residual(ax, fit: Any) -> None:
    """The fit's residual RMS (ΔHU) against the data's noise, step by step."""
    if not _titled(ax, "fit residual vs the noise of the data", fit.history, "no training steps"):
        return
    steps = [h["step"] for h in fit.history]
    ax.plot(steps, [h["rms_hu"] for h in fit.history], lw=1.2, label="training voxels")
    held = [(h["step"], h["val_rms_hu"]) for h in fit.history if "val_rms_hu" in h]
    if held:
        ax.plot(*zip(*held, strict=True), "o-", ms=3, label="held-out voxels")
    expected = (fit.info.get("noise") or {}).get("expected_residual_rms_hu")
    if expected:
        ax.axhline(expected, color="k", ls="--", lw=1, label="noise level (estimated)")
    stop = fit.info.get("stop") or {}
    if stop.get("maps_from_step"):
        ax.axvline(stop["maps_from_step"], color="C3", lw=1, label="maps from this step")
    _labelled(ax, "step", "RMS residual (ΔHU)")


def _losses(ax, fit: Any) -> None:
    """The loss terms of the history (fit units, log scale), under plain names."""
    if not _titled(ax, "loss terms during the fit", fit.history, "no training steps"):
        return
    steps = [h["step"] for h in fit.history]
    columns = {k: [h.get(k, 0.0) for h in fit.history] for k in LOSS_LABELS}
    for key, label in LOSS_LABELS.items():
        redundant = key == "total" and columns["total"] == columns["tac"]  # data term alone
        if any(v > 0 for v in columns[key]) and not redundant:
            ax.plot(steps, columns[key], lw=1.2, label=label)
    ax.set_yscale("log")
    _labelled(ax, "step", "loss (scaled units of the fit)")


def _text(ax, summary: dict[str, Any], neural: bool) -> None:
    ax.set_axis_off()
    stop = (summary.get("stop") or {}).get("reason")
    noise = (summary.get("noise") or {}).get("sd_hu")
    lines = [
        f"method {summary['method']}, steps {summary.get('steps', 0)}",
        f"wall time {summary['wall_time_s']:.0f} s"
        + (f" (fit {summary['fit_time_s']:.0f} s)" if "fit_time_s" in summary else ""),
        *([f"stopped: {stop}"] if stop else []),
        *([f"noise SD of the data: {noise:.2f} ΔHU"] if noise else []),
        f"voxels masked as unphysical: {summary['unphysical_voxels']['any']}",
        f"Tmax convention: {summary['tmax_convention']}",
        "",
        summary.get("note", ""),
    ]
    if not neural:
        lines += ["", "classical method: no training history or fitted tissue curves to show"]
    text = "\n".join(textwrap.fill(line, 58) for line in lines)
    ax.text(0, 1, text, va="top", fontsize=10.5, transform=ax.transAxes)
