"""How much of the other hemisphere do cached benchmark fits call Tmax > 6 s?

    .venv/bin/python bench/other_side_hypo.py

Reads every cached fit under data/bench*/fits-noise*/<row>/<case>/ (whatever `make bench` and
the hand-run benches left there), computes `tmax_gt_6s_other_side_fraction` from its maps as
`perfusion fit`'s summary does (perfusion.fitting.defuse.mask_summary), and tabulates it per
row label: how many fits, the median, the largest, and how many exceed
OTHER_SIDE_MAX_HYPO_FRACTION, the report's warning. Writes
bench/results/other-side-hypo/README.md.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np

from perfusion.evaluation import fit_standard_x
from perfusion.fitting.defuse import OTHER_SIDE_MAX_HYPO_FRACTION, defuse3_masks, mask_summary
from perfusion.io import voxel_volume_ml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "other-side-hypo"


def cached_fits() -> list[Path]:
    """Every cached benchmark fit folder with maps and a summary (sorted)."""
    return [
        fit
        for fit in sorted(ROOT.glob("data/bench*/fits-noise*/*/patient-*"))
        if (fit / "tmax.nii.gz").is_file() and (fit / "summary.json").is_file()
    ]


def fit_key(fit: Path) -> tuple[str, str, str]:
    """(bench, noise sigma, row label) of a cached fit ``data/<bench>/fits-noise<sigma>/<row>/<case>``."""
    return fit.parents[2].name, fit.parent.parent.name.removeprefix("fits-noise"), fit.parent.name


def fit_masks(fit: Path) -> tuple[dict, dict]:
    """The fit's DEFUSE-3 masks and summary, from its maps and standard frame, as `perfusion
    fit` makes them (volumes in ml)."""
    tmax = nib.load(fit / "tmax.nii.gz")
    maps = {"tmax": tmax.get_fdata(), "cbf": nib.load(fit / "cbf.nii.gz").get_fdata()}
    usable = nib.load(fit / "tissuemask.nii.gz").get_fdata() > 0
    x = fit_standard_x(fit, tmax.affine, usable.shape)
    voxel_ml = voxel_volume_ml(tmax.affine)
    masks = defuse3_masks(maps, usable, x, voxel_ml)
    return masks, mask_summary(masks, voxel_ml)


def main() -> None:
    by_row: dict[tuple[str, str], list[float]] = defaultdict(list)
    for fit in cached_fits():
        _, noise, row = fit_key(fit)
        by_row[(row, noise)].append(fit_masks(fit)[1]["tmax_gt_6s_other_side_fraction"])
    every = [v for values in by_row.values() for v in values]
    over = OTHER_SIDE_MAX_HYPO_FRACTION
    lines = [
        "# Tmax > 6 s in the other hemisphere, over the cached benchmark fits",
        "",
        "Command: `.venv/bin/python bench/other_side_hypo.py`",
        "",
        f"{len(every)} fits under data/bench*/fits-noise*/ (every bench, method and recipe "
        "variant whose fits were cached here), grouped by row label and noise sigma (HU). "
        "fraction: `tmax_gt_6s_other_side_fraction` of `summary.json`, the share of the "
        "hemisphere opposite the measured core's with Tmax > 6 s; the report warns above "
        f"{over:.2f}. {sum(v > over for v in every)} fits exceed it.",
        "",
        f"| row | sigma | fits | median | max | above {over:.2f} |",
        "|---|---|---|---|---|---|",
    ]
    for (row, noise), values in sorted(by_row.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
        v = np.asarray(values)
        stats = f"{v.size} | {np.median(v):.3f} | {v.max():.3f} | {(v > over).sum()}"
        lines.append(f"| {row} | {noise} | {stats} |")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print(
        f"{len(every)} fits, {sum(v > over for v in every)} above {over}: wrote {OUT / 'README.md'}"
    )


if __name__ == "__main__":
    main()
