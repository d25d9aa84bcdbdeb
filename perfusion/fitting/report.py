"""``report.png``: what a user should look at after a fit, on one page.

Rows: CBF, CBV, MTT and Tmax on three axial slices in clinical colour scales (jet-like, fixed
ranges as clinical viewers show them); the AIF/VOF samples with the AIF the fit used; four
voxels' data against the fit; the residual against the noise level; a text box with the DEFUSE-3 numbers and the
note that Tmax is well determined while its delay/MTT split is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perfusion.io import write_bytes_atomic  # noqa: E402
from perfusion.prepared import PreparedCase  # noqa: E402

CLINICAL_SCALES = {
    "cbf": ("CBF (ml/100g/min)", 0.0, 80.0),
    "cbv": ("CBV (ml/100g)", 0.0, 6.0),
    "mtt": ("MTT (s)", 0.0, 12.0),
    "tmax": ("Tmax (s)", 0.0, 12.0),
}
"""Display ranges as common clinical viewers set them (RAPID-like Tmax 0-10+ s)."""


def write_report(
    path: Path, maps: dict, prepared: PreparedCase, summary: dict[str, Any], fit: Any = None
) -> Path:
    """Draw the report for ``maps`` (volumes) of ``prepared`` and save it atomically as PNG."""
    fig = plt.figure(figsize=(16, 13), dpi=80)
    grid = fig.add_gridspec(5, 4, height_ratios=[1, 1, 1, 1, 1.1])
    zs = _slices(prepared.brain)
    for col, (name, (label, low, high)) in enumerate(CLINICAL_SCALES.items()):
        for row, z in enumerate(zs):
            ax = fig.add_subplot(grid[row, col])
            image = np.where(prepared.brain[..., z], maps[name][..., z], np.nan)
            shown = ax.imshow(np.rot90(image), cmap="jet", vmin=low, vmax=high)
            ax.set_axis_off()
            ax.set_title(f"{label}, z={z}", fontsize=9)
            if row == len(zs) - 1:
                fig.colorbar(shown, ax=ax, fraction=0.046)
    _plot_curves(fig.add_subplot(grid[3, :2]), prepared, fit)
    _plot_voxels(fig.add_subplot(grid[3, 2:]), fit)
    _plot_losses(fig.add_subplot(grid[4, :2]), fit, summary.get("loss_norm", "l1"))
    _text(fig.add_subplot(grid[4, 2:]), summary)
    fig.suptitle(f"{summary['method']} perfusion maps: {summary.get('case', '')}", fontsize=12)
    fig.subplots_adjust(left=0.04, right=0.97, top=0.95, bottom=0.04, hspace=0.35, wspace=0.25)
    png = path.with_suffix(".tmp.png")
    fig.savefig(png)
    plt.close(fig)
    write_bytes_atomic(path, png.read_bytes())
    png.unlink()
    return path


def _slices(brain: np.ndarray) -> list[int]:
    """Three axial slices through the brain (quartiles of its z extent)."""
    zs = np.nonzero(brain.any(axis=(0, 1)))[0]
    if zs.size == 0:
        return [brain.shape[2] // 2] * 3
    return [int(zs[int(q * (len(zs) - 1))]) for q in (0.3, 0.5, 0.7)]


def _plot_curves(ax, prepared: PreparedCase, fit: Any) -> None:
    ax.plot(prepared.frame_times_s, prepared.aif_hu, "o", ms=3, color="tab:red", label="AIF (data)")
    if prepared.vof_hu is not None:
        ax.plot(prepared.frame_times_s, prepared.vof_hu, "s", ms=3, color="tab:blue", label="VOF")
    if fit is not None and fit.curves:
        c = fit.curves
        ax.plot(c["fine_time_s"], c["aif_fit_hu"], "-", color="k", label="AIF of the fit")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ΔHU")
    ax.set_title("arterial / venous input", fontsize=10)
    ax.legend(fontsize=8)


def _plot_voxels(ax, fit: Any) -> None:
    ax.set_title("tissue curves: data (dots) vs the fit (lines)", fontsize=10)
    if fit is None or not fit.curves:
        ax.text(0.5, 0.5, "no neural fit", ha="center", transform=ax.transAxes)
        return
    c = fit.curves
    for i, (data, fitted) in enumerate(zip(c["voxel_data_hu"], c["voxel_fit_hu"], strict=True)):
        color = f"C{i}"
        ax.plot(c["time_s"], data, ".", color=color, ms=4)
        ax.plot(c["fine_time_s"], fitted, "-", color=color, label=f"voxel {tuple(c['voxels'][i])}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ΔHU")
    ax.legend(fontsize=7)


def _plot_losses(ax, fit: Any, norm: str) -> None:
    """The fit's residual against the data's noise, step by step."""
    ax.set_title("fit residual (RMS, ΔHU) and the noise of the data", fontsize=10)
    if fit is None or not fit.history:
        ax.text(
            0.5, 0.5, "no training steps (classical method)", ha="center", transform=ax.transAxes
        )
        return
    steps = [h["step"] for h in fit.history]
    ax.plot(steps, [h["rms_hu"] for h in fit.history], lw=1, label="training voxels")
    held = [(h["step"], h["val_rms_hu"]) for h in fit.history if "val_rms_hu" in h]
    if held:
        ax.plot(*zip(*held, strict=True), "o-", ms=3, label="held-out voxels")
    expected = (fit.info.get("noise") or {}).get("expected_residual_rms_hu")
    if expected:
        ax.axhline(expected, color="k", ls="--", lw=1, label="noise level (estimated)")
    stop = fit.info.get("stop") or {}
    if stop.get("maps_from_step"):
        ax.axvline(stop["maps_from_step"], color="C3", lw=1, label="maps from this step")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)


def _text(ax, summary: dict[str, Any]) -> None:
    ax.set_axis_off()
    d = summary["defuse3"]
    ratio = d["mismatch_ratio"]
    lines = [
        f"method {summary['method']}, steps {summary.get('steps', 0)}, "
        f"wall time {summary['wall_time_s']:.0f} s",
        f"affected side: {d['affected_side']}; healthy median CBF {d['healthy_median_cbf']:.1f}",
        f"core (rCBF < 30%): {d['core_volume_ml']:.1f} ml",
        f"Tmax > 6 s: {d['tmax_gt_6s_volume_ml']:.1f} ml; > 10 s: {d['tmax_gt_10s_volume_ml']:.1f} ml",
        f"mismatch {d['mismatch_volume_ml']:.1f} ml, ratio "
        + ("n/a (no core)" if ratio is None else f"{ratio:.2f}"),
        f"DEFUSE-3 target mismatch: {'yes' if d['defuse3_target_mismatch'] else 'no'}",
        f"unphysical voxels masked: {summary['unphysical_voxels']['any']}",
        f"Tmax convention: {summary['tmax_convention']}",
        "",
        summary["note"],
    ]
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=9, wrap=True, transform=ax.transAxes)
