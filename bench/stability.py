"""Does the whole pipeline give the same maps when the scan changes by less than its noise?

    .venv/bin/python bench/stability.py

For phantom patients written as a scanner gives them (scan and frame times only: brain mask,
AIF and VOF found automatically), runs `perfusion fit` (the default and method=bsvd) on the
case, on the case plus Gaussian noise of SD 1e-5 HU and on the case rounded to whole HU (what
a DICOM round trip does), and reports the correlation of each changed case's CBF with the
unchanged case's over the unchanged case's brain, with the CBF r to truth and the automatic
selection's confidence; and, for the default fit, two fits of the unchanged case with seeds 0
and 1 (how far the fit's answer depends on its random start and batches). Writes
bench/results/stability/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "data" / "bench-stability"
BIN = ROOT / ".venv" / "bin" / "perfusion"
COHORTS = {
    "48x48x8, 30 frames": ["n=3", "shape=[48,48,8]", "n_frames=30"],
    "128x128x32, 60 frames": ["n=3"],
}
METHODS = {
    "default fit": [],
    "bSVD": ["method=bsvd"],
    "default fit, last step": ["stop.average=0"],  # the maps from the last step's weights
    "default fit, min steps 100": ["stop.min_steps=100"],  # recipe row min-steps-100
    # the start prior of the default until 2026-12-06: one learnt over the whole tissue
    "default fit, tissue-wide start prior": ["ode_prefit_prior_block_mm=null"],
    "bSVD, hard cut": ["method=bsvd", "bsvd.taper=0"],  # Wu's cut, before bsvd.taper
    # the fourteenth round's candidate smooth-1.8mm (configs/bench.yaml): its tie-break
    "default fit, smoothing 1.8 mm": ["preprocess.smooth_sigma_mm=1.8"],
}
CHANGES = ("1e-5 HU noise", "rounded to whole HU")


def cohort(name: str, overrides: list[str]) -> list[Path]:
    folder = WORK / name.split(",")[0]
    if not (folder / "cohort.json").is_file():
        subprocess.run([str(BIN), "phantom", f"out={folder}", *overrides], check=True)
    return sorted(folder.glob("patient-*"))


def variants(case: Path) -> dict[str, Path]:
    """The case as scanned, unchanged and changed (folders under WORK/variants)."""
    image = nib.load(case / "ctp.nii.gz")
    data = image.get_fdata(dtype=np.float32)
    rng = np.random.default_rng(0)
    scans = {
        "unchanged": data,
        CHANGES[0]: data + rng.normal(0.0, 1e-5, data.shape).astype(np.float32),
        CHANGES[1]: np.round(data),
    }
    out = {}
    for name, scan in scans.items():
        folder = WORK / "variants" / case.parent.name / case.name / name.replace(" ", "-")
        if not (folder / "ctp.nii.gz").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "ctp.json").write_text((case / "ctp.json").read_text())
            nib.save(nib.Nifti1Image(scan.astype(np.float32), image.affine), folder / "ctp.nii.gz")
        out[name] = folder
    return out


def fit(case: Path, method: str, extra: list[str], tag: str = "") -> Path:
    """``perfusion fit`` of ``case`` with ``extra`` overrides, unless a fit of that config and
    input is already there (perfusion.fitting.reuse)."""
    from perfusion.fitting.init import build_fit_config
    from perfusion.fitting.reuse import finished_fit

    name = "".join(c if c.isalnum() else "-" for c in method)
    out = case.parent / f"fit-{case.name}-{name}{tag}"
    wanted = build_fit_config(["tracking.enabled=false", *extra])
    if finished_fit(out, wanted, case) is None:
        env = {**os.environ, "WANDB_MODE": "disabled"}
        command = [str(BIN), "fit", str(case), f"out={out}", "tracking.enabled=false", *extra]
        subprocess.run(command, check=True, env=env, capture_output=True)
    return out


def main() -> None:
    rows = []
    for cohort_name, overrides in COHORTS.items():
        for patient in cohort(cohort_name, overrides):
            truth = nib.load(patient / "truth" / "cbf.nii.gz").get_fdata()
            cases = variants(patient)
            for method, extra in METHODS.items():
                fits = {name: fit(folder, method, extra) for name, folder in cases.items()}
                cbf = {k: nib.load(f / "cbf.nii.gz").get_fdata() for k, f in fits.items()}
                brain = cbf["unchanged"] > 0
                summary = json.loads((fits["unchanged"] / "summary.json").read_text())
                aif = summary.get("preprocess", {}).get("aif", {})
                row = [cohort_name, patient.name, method]
                for change in CHANGES:
                    both = brain & (cbf[change] > 0)
                    row.append(
                        f"{np.corrcoef(cbf['unchanged'][both], cbf[change][both])[0, 1]:.3f}"
                    )
                seeded = "-"  # bSVD has no seed
                if method.startswith("default fit"):
                    other = fit(cases["unchanged"], method, [*extra, "seed=1"], "-seed1")
                    again = nib.load(other / "cbf.nii.gz").get_fdata()
                    both = brain & (again > 0)
                    seeded = f"{np.corrcoef(cbf['unchanged'][both], again[both])[0, 1]:.3f}"
                row.append(seeded)
                row.append(f"{np.corrcoef(cbf['unchanged'][brain], truth[brain])[0, 1]:.3f}")
                confidence = aif.get("confidence")
                row.append("" if confidence is None else f"{confidence:.2f}")
                rows.append(row)
                print(" | ".join(row), flush=True)
    header = ["cohort", "patient", "method", *(f"CBF r, {c}" for c in CHANGES)]
    header += ["CBF r, unchanged case with seed=1", "CBF r to truth", "AIF confidence"]
    lines = [
        "# Stability of the maps under changes below the noise",
        "",
        "Command: `.venv/bin/python bench/stability.py` (phantoms with noise SD 5 HU, CT-textured,",
        "written as a scanner gives them: brain mask, AIF and VOF found automatically; whole",
        "`perfusion fit` with its default preprocessing). CBF r: correlation of the changed case's",
        "CBF with the unchanged case's over the unchanged case's brain; the seed column compares",
        "two fits of the unchanged case that differ only in `seed` (the fit's own spread).",
        "The default fit's maps come from a moving average of its weights (`stop.average=0.997`);",
        "`last step`: the last step's weights (`stop.average=0`); `min steps 100`: the stopping",
        "rule may not stop before step 100 (`stop.min_steps=100`, the recipe row `min-steps-100`);",
        "`tissue-wide start prior`: the start prior of the default until 2026-12-06, one prior",
        "over the grid start's nodes learnt from the whole tissue instead of one per",
        "7.2 x 7.2 x 10 mm neighbourhood",
        "(`ode_prefit_prior_block_mm=null`); `bSVD, hard cut`: `bsvd.taper=0`; `smoothing 1.8 mm`:",
        "`preprocess.smooth_sigma_mm=1.8` (the fourteenth recipe round's candidate). Rows for",
        "older defaults are in the page's git history.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    target = ROOT / "bench" / "results" / "stability" / "README.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
