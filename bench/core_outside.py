"""How much of the core do cached benchmark fits put outside Tmax > 6 s, and does the report's
warning (`core_mostly_outside_tmax_gt_6s`) tell false cores from true ones?

    .venv/bin/python bench/core_outside.py

Reads every cached fit under data/bench*/fits-noise*/<row>/<case>/ whose phantom's truth is
cached beside it (data/bench*/phantom-noise*/<case>/truth/), computes the core and its share
outside Tmax > 6 s as `perfusion fit`'s summary does, and sorts the fits with a core of 1 ml or
more into: a true core found (Dice with the phantom's core >= 0.5), a false core (predicted
volume more than 20 ml above the true one), and the rest. Per kind: how many fits, and how
many the warning flags (more than CORE_OUTSIDE_MAX_FRACTION of the core outside), over all
fits and per row label. Writes bench/results/core-outside/README.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from other_side_hypo import cached_fits, fit_masks

from perfusion.evaluation import dice
from perfusion.fitting.defuse import CORE_OUTSIDE_MAX_FRACTION, LESION_MIN_CORE_ML

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "core-outside"
FOUND_DICE = 0.5
FALSE_CORE_ML = 20.0
KINDS = ("true core found", "false core", "other")


def truth_core(fit: Path) -> np.ndarray | None:
    """The phantom's core mask for a cached fit, or None when its truth is not cached."""
    bench, noise = fit.parents[2], fit.parent.parent.name.removeprefix("fits-")
    path = bench / f"phantom-{noise}" / fit.name.removesuffix("-auto") / "truth" / "core.nii.gz"
    return np.asarray(nib.load(path).dataobj) > 0 if path.is_file() else None


def kind(core: np.ndarray, truth: np.ndarray, voxel_ml: float) -> str:
    if truth.any() and dice(core, truth) >= FOUND_DICE:
        return KINDS[0]
    return KINDS[1] if (core.sum() - truth.sum()) * voxel_ml > FALSE_CORE_ML else KINDS[2]


def main() -> None:
    fits, flagged, shares = Counter(), Counter(), {k: [] for k in KINDS}
    rows: dict[str, Counter] = defaultdict(Counter)
    for fit in cached_fits():
        truth = truth_core(fit)
        masks, summary = fit_masks(fit)
        core_ml = summary["core_volume_ml"]
        if truth is None or core_ml < LESION_MIN_CORE_ML:
            continue
        label = kind(masks["core"], truth, core_ml / masks["core"].sum())
        fits[label] += 1
        flagged[label] += summary["core_mostly_outside_tmax_gt_6s"]
        rows[fit.parent.name][label] += 1
        rows[fit.parent.name][label, "flagged"] += summary["core_mostly_outside_tmax_gt_6s"]
        shares[label].append(summary["core_outside_tmax_gt_6s_ml"] / core_ml)
    total = sum(fits.values())
    lines = [
        "# The core outside Tmax > 6 s, over the cached benchmark fits",
        "",
        "Command: `.venv/bin/python bench/core_outside.py`",
        "",
        f"{total} fits with a predicted core of {LESION_MIN_CORE_ML:g} ml or more under "
        "data/bench*/fits-noise*/ (every bench, method and recipe variant whose fits and "
        "phantoms were cached here). Kinds: true core found (Dice with the phantom's core >= "
        f"{FOUND_DICE}), false core (more than {FALSE_CORE_ML:g} ml above the true volume), "
        "other. share: `core_outside_tmax_gt_6s_ml` / `core_volume_ml`; the report warns above "
        f"{CORE_OUTSIDE_MAX_FRACTION:.2f} (`core_mostly_outside_tmax_gt_6s`).",
        "",
        "| kind | fits | median share | flagged |",
        "|---|---|---|---|",
    ]
    for label in KINDS:
        median = f"{np.median(shares[label]):.2f}" if shares[label] else "-"
        lines.append(f"| {label} | {fits[label]} | {median} | {flagged[label]} |")
    lines += [
        "",
        "Per row label: flagged / fits of each kind.",
        "",
        f"| row | {' | '.join(KINDS)} |",
        "|---|---|---|---|",
    ]
    for row, counts in sorted(rows.items()):
        cells = " | ".join(f"{counts[k, 'flagged']} / {counts[k]}" for k in KINDS)
        lines.append(f"| {row} | {cells} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print(f"{total} fits: {dict(flagged)} flagged of {dict(fits)}; wrote {OUT / 'README.md'}")


if __name__ == "__main__":
    main()
