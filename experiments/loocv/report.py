"""Table 1 and Bland-Altman figures of the leave-one-out experiment.

Bland-Altman (paper Figure 8): per patient, the mean of predicted and reference core volume
(x) against their difference (y), with the bias and the 95 % limits of agreement
(bias ± 1.96 sd of the differences).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from perfusion.segmentation.report import save_png  # noqa: E402

COLUMNS = (
    ("dice", "Dice ↑", 2),
    ("mvd_ml", "MVD ml →0", 1),
    ("avd_ml", "AVD ml ↓", 1),
    ("fnr", "FNR ↓", 2),
    ("fp_ml", "FP ml (no core) ↓", 1),
)


def _cell(entry: dict[str, float | None], digits: int) -> str:
    mean, sd = entry.get("mean"), entry.get("sd")
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ({sd:.{digits}f})" if sd is not None else "")


def table_markdown(methods: dict[str, dict[str, Any]]) -> str:
    """The paper's Table 1 layout: one row per method, mean (sd over seeds) per metric."""
    header = "| method | seeds | " + " | ".join(name for _, name, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for method, entry in methods.items():
        cells = [_cell(entry["metrics"][key], digits) for key, _, digits in COLUMNS]
        lines.append(f"| {method} | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(methods: dict[str, dict[str, Any]]) -> str:
    """Per U-Net row, its paired difference from the rule on the same maps
    (:func:`experiments.loocv.run.paired_with_rule`): mean, 95 % interval, Wilcoxon p."""
    lines = [
        "U-Net minus rule per patient (the U-Net's values averaged over seeds): mean, 95 % "
        "bootstrap interval over patients, two-sided Wilcoxon signed-rank p. Dice over the "
        "patients with a core (higher is better), AVD over all (lower is better).",
        "",
        "| method | Dice difference | AVD difference ml |",
        "|---|---|---|",
    ]
    for method, entry in methods.items():
        paired = entry.get("paired_with_rule")
        if paired:
            cells = [
                f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}] "
                f"(p {d['p']:.2f}, n {d['n']})"
                for d, digits in ((paired["dice"], 2), (paired["avd_ml"], 1))
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_patient_markdown(methods: dict[str, dict[str, Any]]) -> str:
    """Per-patient Dice (mean over seeds) side by side per method, with the reference volume."""
    names = list(methods)
    rows: dict[str, dict[str, Any]] = {}
    for method, entry in methods.items():
        for row in entry["per_patient"]:
            rows.setdefault(row["patient"], {"ref_ml": row["ref_ml"]})[method] = row["dice"]
    lines = ["| patient | reference ml | " + " | ".join(f"Dice {n}" for n in names) + " |"]
    lines.append("|" + "---|" * (len(names) + 2))
    for patient in sorted(rows):
        values = " | ".join(f"{rows[patient].get(n, float('nan')):.2f}" for n in names)
        lines.append(f"| {patient} | {rows[patient]['ref_ml']:.1f} | {values} |")
    return "\n".join(lines)


def bland_altman_png(
    pred_ml: Sequence[float], ref_ml: Sequence[float], title: str, path: Path
) -> Path:
    """Bland-Altman plot of predicted vs reference volumes (ml) written atomically as PNG."""
    pred, ref = np.asarray(pred_ml, float), np.asarray(ref_ml, float)
    mean, diff = (pred + ref) / 2.0, pred - ref
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.scatter(mean, diff, s=18, color="tab:blue")
    for value, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
        ax.axhline(value, color="k", linestyle=style, linewidth=1)
    ax.set_xlabel("mean of predicted and reference volume (ml)")
    ax.set_ylabel("predicted - reference (ml)")
    ax.set_title(f"{title}\nbias {bias:.1f} ml, limits ±{1.96 * sd:.1f} ml")
    fig.tight_layout()
    return save_png(fig, path)
