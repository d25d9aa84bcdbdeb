"""How much of the core do cached benchmark fits put outside Tmax > 6 s, and does the report's
warning (`core_mostly_outside_tmax_gt_6s`) tell false cores from true ones?

    .venv/bin/python bench/core_outside.py

Reads every cached fit under data/bench*/fits-noise*/<row>/<case>/ whose phantom's truth is
cached beside it (data/bench*/phantom-noise*/<case>/truth/), computes the core and its share
outside Tmax > 6 s as `perfusion fit`'s summary does, and sorts the fits with a core of 1 ml or
more into: a true core found (Dice with the phantom's core >= 0.5), a false core (predicted
volume more than 20 ml above the true one), and the rest. Per kind: how many fits, and how
many the warning flags (more than CORE_OUTSIDE_MAX_FRACTION of the core outside), over all
fits and per row label. Then, per cached bench and noise level, the core of the default fit
and of bSVD against the phantom's core, as the summary's rule gives it and within Tmax > 6 s
(its voxels with Tmax > 6 s, parts under 0.5 ml left out again: "rCBF < 30 % within the
perfusion deficit", as INSPIRE's studies define the core). Writes
bench/results/core-outside/README.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from other_side_hypo import cached_fits, fit_key, fit_masks

from perfusion.clinical import without_small_components
from perfusion.evaluation import dice
from perfusion.fitting.defuse import CORE_OUTSIDE_MAX_FRACTION, LESION_MIN_CORE_ML
from perfusion.io import voxel_volume_ml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "core-outside"
FOUND_DICE = 0.5
FALSE_CORE_ML = 20.0
KINDS = ("true core found", "false core", "other")
CONVENTION_ROWS = ("resppinn", "bsvd")
"""Row labels of the convention table: the default fit and bSVD."""


def truth_path(fit: Path, name: str) -> Path:
    """Where the phantom's truth map ``name`` (e.g. ``core.nii.gz``) of a cached fit lies."""
    bench, noise = fit.parents[2], fit.parent.parent.name.removeprefix("fits-")
    return bench / f"phantom-{noise}" / fit.name.removesuffix("-auto") / "truth" / name


def truth_core(fit: Path) -> np.ndarray | None:
    """The phantom's core mask for a cached fit, or None when its truth is not cached."""
    path = truth_path(fit, "core.nii.gz")
    return np.asarray(nib.load(path).dataobj) > 0 if path.is_file() else None


def kind(core: np.ndarray, truth: np.ndarray, voxel_ml: float) -> str:
    if truth.any() and dice(core, truth) >= FOUND_DICE:
        return KINDS[0]
    return KINDS[1] if (core.sum() - truth.sum()) * voxel_ml > FALSE_CORE_ML else KINDS[2]


def convention_scores(masks: dict, truth: np.ndarray, voxel_ml: float) -> dict[str, tuple]:
    """(volume error ml, Dice or None without a true core) of the core by the summary's rule and
    within Tmax > 6 s."""
    cores = {
        "rule": masks["core"],
        "within": without_small_components(masks["core"] & masks["hypo"], voxel_ml),
    }
    return {
        name: (
            float(core.sum() - truth.sum()) * voxel_ml,
            dice(core, truth) if truth.any() else None,
        )
        for name, core in cores.items()
    }


def convention_lines(scores: dict[tuple, list[dict]]) -> list[str]:
    """The table of both core conventions: mean volume error, mean |error|, mean Dice."""
    lines = [
        "",
        "## The core within Tmax > 6 s",
        "",
        "Per cached bench (`data/<bench>/`) and noise SD (HU): the summary's core (rule) and its "
        "voxels with Tmax > 6 s (within; parts under 0.5 ml left out again) against the phantom's "
        "core, for the default fit (resppinn) and bSVD. MVD: mean predicted - true volume (ml); "
        "AVD: mean |predicted - true|; Dice: mean over the fits with a true core.",
        "",
        "| bench | sigma | row | fits | rule MVD | rule AVD | rule Dice "
        "| within MVD | within AVD | within Dice |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bench, noise, row), items in sorted(
        scores.items(), key=lambda i: (i[0][0], float(i[0][1]), i[0][2])
    ):
        cells = []
        for name in ("rule", "within"):
            errors = [s[name][0] for s in items]
            dices = [s[name][1] for s in items if s[name][1] is not None]
            mean_dice = f"{np.mean(dices):.2f}" if dices else "-"
            cells += [f"{np.mean(errors):+.1f}", f"{np.mean(np.abs(errors)):.1f}", mean_dice]
        lines.append(f"| {bench} | {noise} | {row} | {len(items)} | {' | '.join(cells)} |")
    return lines


def main() -> None:
    fits, flagged, shares = Counter(), Counter(), {k: [] for k in KINDS}
    rows: dict[str, Counter] = defaultdict(Counter)
    conventions: dict[tuple, list[dict]] = defaultdict(list)
    for fit in cached_fits():
        truth = truth_core(fit)
        if truth is None:
            continue
        masks, summary = fit_masks(fit)
        core_ml = summary["core_volume_ml"]
        voxel_ml = voxel_volume_ml(nib.load(fit / "tmax.nii.gz").affine)
        if fit.parent.name in CONVENTION_ROWS:
            conventions[fit_key(fit)].append(convention_scores(masks, truth, voxel_ml))
        if core_ml < LESION_MIN_CORE_ML:
            continue
        label = kind(masks["core"], truth, voxel_ml)
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
    lines += convention_lines(conventions)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print(f"{total} fits: {dict(flagged)} flagged of {dict(fits)}; wrote {OUT / 'README.md'}")


if __name__ == "__main__":
    main()
