"""Tissue contrast to noise of the accuracy benches' prepared cases.

    .venv/bin/python bench/contrast.py

Prints, for every case that `perfusion bench` prepared with the default preprocessing
(data/bench*/noise*/prepared-<digest>/patient-*), the peak of the mean tissue curve, the
noise SD of one voxel's frame and their ratio (perfusion.noise.tissue_contrast), and whether
the default preprocess.min_tissue_cnr flags it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from perfusion import cache
from perfusion.noise import tissue_contrast
from perfusion.prepared import PreparedCase
from perfusion.preprocess import PreprocessConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    options = dataclasses.replace(PreprocessConfig(), motion_correction=False)  # as the benches
    keyed = {k: v for k, v in dataclasses.asdict(options).items() if k != "min_tissue_cnr"}
    name = f"prepared-{cache.digest(keyed)[:10]}"
    print("cohort | noise | patient | peak ΔHU | noise SD ΔHU | ratio | flagged")
    for folder in sorted(ROOT.glob(f"data/bench*/noise*/{name}/patient-*")):
        if folder.name.endswith("-auto") or not (folder / "prepared.json").is_file():
            continue
        p = PreparedCase.load(folder)
        c = tissue_contrast(p.tissue_hu, p.tissue, p.frame_times_s, p.bolus_arrival_s)
        flagged = c["cnr"] is not None and c["cnr"] < options.min_tissue_cnr
        cohort, noise = folder.parents[2].name, folder.parents[1].name
        print(
            f"{cohort} | {noise} | {folder.name} | {c['peak_hu']} | {c['noise_sd_hu']} | "
            f"{c['cnr']} | {'yes' if flagged else 'no'}"
        )


if __name__ == "__main__":
    main()
