"""Does the report's warning on the healthy hemisphere's median CBF catch fits whose absolute
CBF scale is off?

    .venv/bin/python bench/healthy_cbf.py

Reads every cached fit under data/bench*/fits-noise*/<row>/<case>/ whose phantom's truth is
cached beside it, computes the healthy hemisphere's median tissue CBF as `perfusion fit`'s
summary does (the rCBF reference) and the true CBF's median over the same voxels, and
tabulates per bench, row label and noise SD: how many fits, the ratio fitted / true (median and
range), how many the warning flags (median outside perfusion.clinical.HEALTHY_CBF_RANGE), and
how many of those have a ratio within 0.67-1.5 (flagged although the scale is about right) or,
unflagged, a ratio outside 0.5-2. Writes bench/results/healthy-cbf/README.md.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from core_outside import truth_path
from other_side_hypo import cached_fits, fit_key, fit_masks

from perfusion.clinical import HEALTHY_CBF_RANGE

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "healthy-cbf"
ABOUT_RIGHT = (0.67, 1.5)
FAR_OFF = (0.5, 2.0)


def main() -> None:
    rows: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for fit in cached_fits():
        path = truth_path(fit, "cbf.nii.gz")
        if not path.is_file():
            continue
        masks, summary = fit_masks(fit)
        fitted = summary["healthy_median_cbf"]
        true = float(np.median(np.asarray(nib.load(path).dataobj)[masks["healthy"]]))
        bench, noise, row = fit_key(fit)
        rows[(bench, row, noise)].append((fitted, fitted / true))
    low, high = HEALTHY_CBF_RANGE
    every = [v for values in rows.values() for v in values]

    def flagged(values: list[tuple[float, float]]) -> list[float]:
        return [r for f, r in values if not low <= f <= high]

    def false_alarms(values: list[tuple[float, float]]) -> int:
        return sum(ABOUT_RIGHT[0] <= r <= ABOUT_RIGHT[1] for r in flagged(values))

    def misses(values: list[tuple[float, float]]) -> int:
        return sum(low <= f <= high and not FAR_OFF[0] <= r <= FAR_OFF[1] for f, r in values)

    lines = [
        "# The healthy hemisphere's median CBF against the truth, over the cached benchmark fits",
        "",
        "Command: `.venv/bin/python bench/healthy_cbf.py`",
        "",
        f"{len(every)} fits under data/bench*/fits-noise*/ with their phantom's truth, grouped by "
        "bench, row label and noise SD (HU). median: the fit's healthy-hemisphere median tissue "
        "CBF (ml/100g/min, `healthy_median_cbf` of `summary.json`, the rCBF reference); ratio: "
        "that median over the true CBF's median in the same voxels. The report warns when the "
        f"median is outside {low:g}-{high:g}: flagged. about right: flagged with a ratio in "
        f"{ABOUT_RIGHT[0]}-{ABOUT_RIGHT[1]}; missed: not flagged, ratio outside "
        f"{FAR_OFF[0]}-{FAR_OFF[1]}. In all: {len(flagged(every))} flagged, "
        f"{false_alarms(every)} of them about right, {misses(every)} missed.",
        "",
        "| bench | row | sigma | fits | median CBF | ratio median | ratio range | flagged "
        "| about right | missed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bench, row, noise), values in sorted(
        rows.items(), key=lambda kv: (*kv[0][:2], float(kv[0][2]))
    ):
        medians, ratios = (np.asarray(v) for v in zip(*values, strict=True))
        lines.append(
            f"| {bench} | {row} | {noise} | {len(values)} | {np.median(medians):.1f} "
            f"| {np.median(ratios):.2f} | {ratios.min():.2f}-{ratios.max():.2f} "
            f"| {len(flagged(values))} | {false_alarms(values)} | {misses(values)} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print(f"{len(every)} fits, {len(flagged(every))} flagged: wrote {OUT / 'README.md'}")


if __name__ == "__main__":
    main()
