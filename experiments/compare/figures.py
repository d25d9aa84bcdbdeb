"""The comparison's figures (matplotlib, Agg), analogues of resppinn-paper.txt Figures 2, 5, 6.

- ``compare-losses.png`` (Fig. 2): L_TAC and L_ODE against step for each arm (patient means,
  Domain units) and the wall time per full volume (SPPINN extrapolated, hatched and labelled);
- ``compare-init.png`` (Fig. 5): CBF and Tmax of each initialisation before any step, beside
  the truth, on the middle tissue slice of a held-out patient;
- ``compare-voxels.png`` (Fig. 6): CBF of a few voxels against the inner iteration while the
  meta-learned initialisation adapts, with each voxel's true CBF dashed;
- ``compare-accuracy.png``: CBF r, region Dice and Tmax MAE against steps for every arm (the
  population prior, which has no steps, as a dashed level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from perfusion.io import write_bytes_atomic  # noqa: E402

STYLE = {"meta": ("tab:red", "o"), "random": ("tab:gray", "s"), "noinit": ("tab:blue", "^"),
         "sppinn": ("tab:green", "D"), "prior": ("tab:purple", "*")}  # fmt: skip
TITLES = {"cbf": "CBF", "tmax": "Tmax"}
ACCURACY_PANELS = (("cbf_r", "CBF r"), ("rcbf30_dice", "Dice rCBF<30%"),
                   ("tmax6_dice", "Dice Tmax>6 s"), ("tmax_mae", "Tmax MAE (s)"))  # fmt: skip


def _save(fig, path: Path) -> Path:
    """PNG bytes written atomically (a reader never sees half a figure)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def _colour(kind: str, index: int, count: int) -> str:
    """no-init arms shade from light (few steps) to dark (many); others have one colour."""
    if kind != "noinit":
        return STYLE[kind][0]
    return plt.get_cmap("Blues")(0.45 + 0.55 * index / max(count - 1, 1))


def _mean_curves(
    records: list[dict[str, Any]], arm: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Patient-mean loss curves of one arm on the shortest common step grid."""
    histories = [r["history"] for r in records if r["arm"] == arm and r["history"]["step"]]
    if not histories:
        return np.zeros(0), {}
    length = min(len(h["step"]) for h in histories)
    steps = np.asarray(histories[0]["step"][:length])
    return steps, {k: np.mean([h[k][:length] for h in histories], axis=0) for k in ("tac", "ode")}


def losses_figure(
    records: list[dict[str, Any]], rows: dict[str, dict[str, Any]], path: Path
) -> Path:
    """Figure 2 analogue (module docstring)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    noinit = [a for a, r in rows.items() if r["kind"] == "noinit"]
    for arm, row in rows.items():
        colour = _colour(row["kind"], noinit.index(arm) if arm in noinit else 0, len(noinit))
        steps, curves = _mean_curves(records, arm)
        label = arm + (" (per slice)" if row["kind"] == "sppinn" else "")
        for ax, key in zip(axes[:2], ("tac", "ode"), strict=True):
            if len(steps):
                ax.plot(steps, curves[key], color=colour, label=label, lw=1.4)
    for ax, title in zip(axes[:2], ("L_TAC", "L_ODE"), strict=True):
        ax.set(
            xscale="log", yscale="log", xlabel="step", ylabel=f"{title} (Domain units)", title=title
        )
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    names = list(rows)
    walls = [rows[a]["wall_full_s"] / 60 for a in names]
    bars = axes[2].barh(
        names,
        walls,
        color=[
            _colour(rows[a]["kind"], noinit.index(a) if a in noinit else 0, len(noinit))
            for a in names
        ],
    )
    for bar, arm in zip(bars, names, strict=True):
        if rows[arm]["extrapolated"]:
            bar.set_hatch("//")
            axes[2].annotate(" extrapolated", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                             va="center", fontsize=7)  # fmt: skip
    axes[2].set(xscale="log", xlabel="wall time per full volume (min)", title="Wall time")
    axes[2].invert_yaxis()
    return _save(fig, path)


def _middle_slice(brain: np.ndarray) -> int:
    counts = brain.sum(axis=(0, 1))
    return int(np.argmax(counts))


def init_figure(probes: dict[str, Any], path: Path) -> Path:
    """Figure 5 analogue: truth, then each initialisation before adaptation (CBF, Tmax)."""
    z = _middle_slice(probes["brain"])
    rows = {"truth": probes["truth"], **probes["maps"]}
    fig, axes = plt.subplots(len(rows), 2, figsize=(7, 3.2 * len(rows)), squeeze=False)
    limits = {
        "cbf": (0, np.percentile(probes["truth"]["cbf"][probes["brain"]], 99)),
        "tmax": (0, 12),
    }
    for i, (label, maps) in enumerate(rows.items()):
        for j, (name, unit) in enumerate((("cbf", "ml/100g/min"), ("tmax", "s"))):
            image = np.where(probes["brain"], maps[name], np.nan)[:, :, z].T
            shown = axes[i, j].imshow(image, origin="lower", cmap="magma" if name == "cbf" else "viridis",
                                      vmin=limits[name][0], vmax=limits[name][1])  # fmt: skip
            r = probes["init_cbf_r"].get(label)
            extra = f" (CBF r {r:.2f})" if name == "cbf" and r is not None else ""
            axes[i, j].set_title(f"{label}: {TITLES[name]}{extra}", fontsize=9)
            axes[i, j].axis("off")
            fig.colorbar(shown, ax=axes[i, j], fraction=0.046, label=unit)
    fig.suptitle(f"{probes['patient']}, slice {z}: maps before any adaptation step", fontsize=10)
    return _save(fig, path)


def voxels_figure(probes: dict[str, Any], path: Path) -> Path:
    """Figure 6 analogue: CBF against iteration for the traced voxels of a meta-init adaptation."""
    traces = probes["trajectories"]
    cbf = np.asarray(traces["cbf"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, (voxel, truth) in enumerate(zip(traces["voxels"], traces["true_cbf"], strict=True)):
        line = ax.plot(traces["step"], cbf[:, k], lw=1.6, label=f"voxel {tuple(voxel)}")[0]
        ax.axhline(truth, color=line.get_color(), ls="--", lw=1)
    ax.set(xlabel="inner iteration", ylabel="CBF (ml/100g/min)",
           title=f"{probes['patient']}: CBF during meta-init adaptation (dashed: truth)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _fixed(row: dict[str, Any]) -> bool:
    """Whether the arm ran a fixed step count (else a stopping rule, at ``steps_run``)."""
    return row.get("budget", "steps") == "steps"


def accuracy_figure(rows: dict[str, dict[str, Any]], path: Path) -> Path:
    """Map accuracy against steps: no-init as a line, the other arms as labelled markers."""
    fig, axes = plt.subplots(1, len(ACCURACY_PANELS), figsize=(16, 3.8))
    noinit = sorted(
        ((r["steps"], r) for r in rows.values() if r["kind"] == "noinit" and _fixed(r)),
        key=lambda item: item[0],
    )
    for ax, (key, title) in zip(axes, ACCURACY_PANELS, strict=True):
        if noinit:
            ax.plot([s for s, _ in noinit], [r["metrics"][key] for _, r in noinit],
                    color=STYLE["noinit"][0], marker="^", label="no-init")  # fmt: skip
        for arm, row in rows.items():
            if row["kind"] == "prior":  # no steps: a level to compare every arm with
                ax.axhline(row["metrics"][key], color=STYLE["prior"][0], ls="--", lw=1.2,
                           label=f"{arm} (no fit)")  # fmt: skip
            elif row["kind"] != "noinit" or not _fixed(row):
                colour, marker = STYLE[row["kind"]]
                label = arm + (" (few slices)" if row["extrapolated"] else "")
                ax.scatter(
                    [row["steps"] if _fixed(row) else row["steps_run"]],
                    [row["metrics"][key]],
                    color=colour,
                    marker=marker,
                    s=60,
                    label=label,
                    zorder=3,
                )
        ax.set(xscale="log", xlabel="steps", title=title)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    return _save(fig, path)
