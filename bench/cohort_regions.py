"""The core and Tmax > 6 s regions of fit sets of one phantom cohort, against its truth.

    .venv/bin/python bench/cohort_regions.py COHORT OUT LABEL=FITS [LABEL=FITS ...]

COHORT holds phantom cases (``patient-*/`` with ``core.nii.gz`` and ``truth/``); each FITS
folder holds one fit per case, named as the case (``perfusion fit-cohort COHORT out=FITS``).
Every fit is scored as bench/robustness.py scores one: the summary's rCBF < 30 % core and
Tmax > 6 s regions (as the code counts them now) against the phantom's core and true
Tmax > 6 s. Writes OUT/README.md: the command, the means per fit set (Dice over the patients
with a true region, volume errors over all) and the per-patient table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from robustness import fit_scores

METRICS = (
    ("core", "core_ml", "true_core_ml", "core_dice"),
    ("Tmax > 6 s", "hypo_ml", "true_hypo_ml", "hypo_dice"),
)


def means(rows: list[dict]) -> list[str]:
    """Mean Dice, mean |volume error| and mean volume error of each region (ml)."""
    cells = []
    for _, predicted, true, overlap in METRICS:
        errors = [r[predicted] - r[true] for r in rows if r[true] is not None]
        dices = [r[overlap] for r in rows if r[overlap] is not None]
        cells += [
            f"{np.mean(dices):.3f}",
            f"{np.mean(np.abs(errors)):.2f}",
            f"{np.mean(errors):+.2f}",
        ]
    return cells


def main(argv: list[str]) -> None:
    cohort, out, *sets = argv
    fits = dict(item.split("=", 1) for item in sets)
    cases = sorted(Path(cohort).glob("patient-*"))
    scores = {
        label: [fit_scores(case, Path(folder) / case.name) for case in cases]
        for label, folder in fits.items()
    }
    head = " | ".join(f"{name} Dice | {name} AVD ml | {name} MVD ml" for name, *_ in METRICS)
    lines = [
        f"# Core and Tmax > 6 s of {', '.join(fits)} on {cohort}",
        "",
        f"Command: `.venv/bin/python bench/cohort_regions.py {' '.join(argv)}`",
        "",
        f"{len(cases)} patients. Dice: mean over the patients with a true region; AVD: mean "
        "|predicted - true| volume; MVD: mean predicted - true.",
        "",
        f"| fits | {head} |",
        "|---|" + "---|" * 6,
        *(f"| {label} | {' | '.join(means(rows))} |" for label, rows in scores.items()),
        "",
        "## Per patient: core and Tmax > 6 s volume error (ml) / Dice",
        "",
        "| patient | true core ml | "
        + " | ".join(f"{label} core | {label} Tmax > 6 s" for label in fits)
        + " |",
        "|---|---|" + "---|" * (2 * len(fits)),
    ]
    for index, case in enumerate(cases):
        cells = []
        for rows in scores.values():
            r = rows[index]
            for _, predicted, true, overlap in METRICS:
                dice = "-" if r[overlap] is None else f"{r[overlap]:.2f}"
                cells.append(f"{r[predicted] - (r[true] or 0.0):+.1f} / {dice}")
        true_core = next(iter(scores.values()))[index]["true_core_ml"]
        lines.append(f"| {case.name} | {true_core:.1f} | {' | '.join(cells)} |")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {Path(out) / 'README.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
