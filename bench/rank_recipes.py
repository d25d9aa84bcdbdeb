"""Apply the recipe rule stated in configs/bench.yaml to finished bench results.

    .venv/bin/python bench/rank_recipes.py [RESULTS]

Score of a recipe: the mean of its 3-patient mean map scores (experiments.bench.map_score) over
sigma 5, 10, 15 of bench/results/accuracy and sigma 5, 10 of bench/results/white and
bench/results/exponential. Eligible: its sigma 0 row in bench/results/accuracy is at most 0.03
below the default's (``resppinn``, configs/fit.yaml) on CBF r and on both region Dice: a new
default must not lose the noiseless accuracy of the one it replaces. Within 0.01 of each
other the faster wins; fit times within 10 % count as equal, and then the recipe whose maps
move least under rounding (bench/stability.py, read from its page) does.
Writes the ranking, best first, to bench/results/recipes/README.md and prints it. With a
folder RESULTS holding ``accuracy/``, ``white/`` and ``exponential/`` of one round's own runs
(a new recipe and the default fitted side by side), it ranks those and writes RESULTS/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CELLS = {"accuracy": (5.0, 10.0, 15.0), "white": (5.0, 10.0), "exponential": (5.0, 10.0)}
NOT_RECIPES = {"bsvd", "nlr", "sppinn"}
DEFAULT = "resppinn"
TOLERANCE = 0.03


def means(results: Path, name: str) -> dict[tuple[str, float], dict]:
    data = json.loads((results / name / "accuracy.json").read_text())
    return {(m["method"], m["noise_hu"]): m for m in data["means"] if m.get("aif") == "supplied"}


def main(argv: list[str]) -> None:
    results = Path(argv[0]) if argv else RESULTS
    tables = {name: means(results, name) for name in CELLS}
    accuracy = tables["accuracy"]
    recipes = sorted({m for m, _ in accuracy} - NOT_RECIPES)
    default0 = accuracy[(DEFAULT, 0.0)]
    lines = []
    for recipe in recipes:
        scores = [tables[n][(recipe, s)]["map_score"] for n, cells in CELLS.items() for s in cells]
        own0 = accuracy[(recipe, 0.0)]
        short = [
            k for k in ("cbf_r", "rcbf30_dice", "tmax6_dice") if own0[k] < default0[k] - TOLERANCE
        ]
        fit_s = sum(tables[n][(recipe, s)]["fit_time_s"] for n, c in CELLS.items() for s in c)
        lines.append((sum(scores) / len(scores), recipe, short, fit_s / len(scores)))
    table = [
        "# Choosing the default fit recipe",
        "",
        f"Command: `.venv/bin/python bench/rank_recipes.py{' ' + argv[0] if argv else ''}` over the"
        " results of `perfusion bench`,",
        "`perfusion bench config=bench/white` and `perfusion bench config=bench/exponential`"
        + (f" (in {argv[0]})." if argv else "."),
        "",
        "Rule (configs/bench.yaml, stated before the runs): the highest mean map score over the",
        "3-patient means at sigma 5, 10, 15 (accuracy) and 5, 10 (white, exponential), among the",
        f"recipes whose sigma 0 row is at most {TOLERANCE} below the default's (`{DEFAULT}`,",
        "configs/fit.yaml) on CBF r and both region Dice; within 0.01, the faster (fit times",
        "within 10 % count as equal: then the one whose CBF moves least when the scan is rounded",
        "to whole HU, [stability](../stability/README.md)). The other rows are the default's",
        "overrides in configs/bench.yaml `recipes`.",
        "",
        "| recipe | mean score | mean fit s | sigma 0 against the default |",
        "|---|---|---|---|",
    ]
    for score, recipe, short, fit_s in sorted(lines, reverse=True):
        verdict = "within" if not short else f"below by more than {TOLERANCE}: {', '.join(short)}"
        table.append(f"| {recipe} | {score:.3f} | {fit_s:.1f} | {verdict} |")
    text = "\n".join(table) + "\n"
    out = results / "README.md" if argv else RESULTS / "recipes" / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
