"""``perfusion train-seg [COHORT] [input=truth] [seed=0] [out=DIR] [key=value ...]``.

Trains the final infarct-core U-Net on every patient of a cohort (all but the ``n_val``
validation patients that select the epoch), with the cross-validation's config
(``configs/loocv.yaml``; ``config=loocv/paper`` for Table 5), and saves ``model.pt`` (weights,
architecture, the input-map method and grid it expects) with the resolved ``config.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from perfusion.commands.loocv import fold_logger, normalise_overrides, train_model
from perfusion.config import config_dir, load_config, save_resolved, split_args
from perfusion.segmentation.cohort import ensure_cohort, load_cohort
from perfusion.segmentation.config import LoocvConfig
from perfusion.segmentation.module import save_bundle
from perfusion.tracking import finish

SHORTHANDS = {"input": "inputs", "seed": "seeds", "out": "model_out"}


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    renamed = []
    for item in overrides:
        key, _, value = item.partition("=")
        renamed.append(f"{SHORTHANDS.get(key, key)}={value}")
    overrides = normalise_overrides(renamed)
    if positionals:
        overrides.insert(0, f"cohort.path={positionals[0]}")
    cfg = load_config(LoocvConfig, [config_dir() / "loocv.yaml"], overrides)
    torch.set_num_threads(cfg.train.threads)
    method, seed, out = cfg.inputs[0], cfg.seeds[0], Path(cfg.model_out)
    cases = ensure_cohort(cfg.cohort)
    patients = load_cohort(cases, method, cfg.cohort)
    start = time.time()
    logger = fold_logger(cfg.wandb, "train-seg", method, f"final-{method}-s{seed}", out)
    module = train_model(patients, None, seed, cfg.model, cfg.train, logger)
    if logger:
        finish(logger)
    meta = {
        "input_method": method,
        "grid_shape": [int(s) for s in patients[0].rcbf.shape],
        "spacing_mm": [float(s) for s in patients[0].spacing_mm],
        "cohort": str(cfg.cohort.path),
        "patients": [p.name for p in patients],
        "val_patients": [patients[i].name for i in module.split.val],
        "selected_epoch": module.selected_epoch,
        "seed": seed,
    }
    save_bundle(module, out, meta)
    save_resolved(cfg, out)
    print(
        f"train-seg: {len(patients)} patients ({method}), epoch {module.selected_epoch} selected, "
        f"{time.time() - start:.0f} s -> {out / 'model.pt'}"
    )
