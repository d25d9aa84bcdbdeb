"""Where preprocessing spends its time, and the whole default `perfusion fit` against bSVD's.

    .venv/bin/python bench/profile_preprocess.py

Makes (or reuses) two phantoms under data/bench-preprocess: the default 128x128x32 case and
`perfusion phantom 'shape=[256,256,32]' motion=true`, each as a scanner gives it (scan and frame
times only: brain mask, AIF and VOF found automatically); times reading and each preprocessing
stage (PreparedCase.meta["timings_s"]) with the default PreprocessConfig, then the whole
`perfusion fit CASE` (default recipe) and `perfusion fit CASE method=bsvd` one after the other
in this run. Writes bench/results/preprocess/README.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench-preprocess"
CASES = {
    "128x128x32x60": ["n=1", "seed=0"],
    "256x256x32x60, motion": ["n=1", "seed=0", "shape=[256,256,32]", "motion=true"],
}
BIN = ROOT / ".venv" / "bin" / "perfusion"


def phantom(name: str, overrides: list[str]) -> Path:
    folder = WORK / name.replace(", ", "-").replace("x", "_")
    case = folder / "patient-000"
    if not (case / "ctp.nii.gz").is_file():
        subprocess.run([str(BIN), "phantom", f"out={folder}", *overrides], check=True)
    return as_scanned(case)


def as_scanned(case: Path) -> Path:
    """The case as a scanner gives it: the scan and its frame times only (links), so that the
    brain mask, AIF and VOF are found automatically."""
    scan = case.parent / "as-scanned"
    scan.mkdir(exist_ok=True)
    for name in ("ctp.nii.gz", "ctp.json"):
        if not (scan / name).exists():
            (scan / name).symlink_to(case / name)
    return scan


def stages(case: Path) -> dict[str, float]:
    from perfusion.io import read_case
    from perfusion.preprocess import PreprocessConfig, prepare_case

    started = time.perf_counter()
    read = read_case(case)
    out = {"read": time.perf_counter() - started}
    started = time.perf_counter()
    prepared = prepare_case(read, PreprocessConfig())
    out.update(prepared.meta["timings_s"])
    out["preprocessing, all stages"] = time.perf_counter() - started
    return out


def whole_fit(case: Path, *extra: str) -> float:
    out = WORK / "fit" / "-".join(extra or ("default",))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    command = [str(BIN), "fit", str(case), f"out={out}", "tracking.enabled=false", *extra]
    started = time.perf_counter()
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    table = {}
    for name, overrides in CASES.items():
        case = phantom(name, overrides)
        table[name] = stages(case)
        table[name]["whole `perfusion fit` (default)"] = whole_fit(case)
        table[name]["whole `perfusion fit method=bsvd`"] = whole_fit(case, "method=bsvd")
    rows = list(dict.fromkeys(k for t in table.values() for k in t))
    lines = [
        "# Where preprocessing spends its time",
        "",
        "Command: `.venv/bin/python bench/profile_preprocess.py` (2 cores; SimpleITK 2 threads,",
        "the fit 1 thread; seconds, one run; the machine is shared and noisy). Cases as a",
        "scanner gives them: the brain mask, AIF and VOF are found automatically.",
        "",
        "| stage | " + " | ".join(table) + " |",
        "|---" * (len(table) + 1) + "|",
    ]
    for row in rows:
        cells = [f"{table[n].get(row, float('nan')):.1f}" for n in table]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    ratio = [
        table[n]["whole `perfusion fit` (default)"] / table[n]["whole `perfusion fit method=bsvd`"]
        for n in table
    ]
    lines.append(
        "| whole default fit / whole bSVD | " + " | ".join(f"{r:.2f}" for r in ratio) + " |"
    )
    out = ROOT / "bench" / "results" / "preprocess" / "README.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
