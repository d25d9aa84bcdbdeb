"""``perfusion train-seg [COHORT] [input=truth] [seed=0] [out=DIR] [key=value ...]``.

Trains the final infarct-core U-Net on every patient of a cohort (all but the ``n_val``
validation patients that select the epoch), with the cross-validation's config
(``configs/loocv.yaml``; ``config=loocv/paper`` for Table 5), and saves ``model.pt`` (weights,
architecture, the input-map method and grid it expects) with the resolved ``config.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path

from perfusion.commands.outputs import wrote_line
from perfusion.config import save_resolved, split_args
from perfusion.help import Options, expand_aliases
from perfusion.resources import check_out_dir
from perfusion.segmentation.cohort import ensure_cohort, load_cohort
from perfusion.segmentation.config import LoocvConfig, check_features
from perfusion.segmentation.train import ALIASES, fold_logger, normalise_overrides, train_model

SHORTHANDS = {"input": "inputs", "seed": "seeds", "out": "model_out", **ALIASES}
OPTIONS = Options(LoocvConfig, ("loocv.yaml",), aliases=SHORTHANDS)


def main(argv: list[str]) -> None:
    started = time.time()
    positionals, overrides = split_args(argv)
    overrides = normalise_overrides(expand_aliases(overrides, SHORTHANDS))
    if positionals:
        overrides.insert(0, f"cohort.path={positionals[0]}")
    cfg = OPTIONS.load(overrides)
    check_features(cfg.model.features)
    out = check_out_dir(cfg.model_out)
    import torch  # torch, Lightning and MONAI from here on

    from perfusion.segmentation.module import save_bundle
    from perfusion.tracking import finish

    torch.set_num_threads(cfg.train.threads)
    method, seed = cfg.inputs[0], cfg.seeds[0]
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
        "cohort": str(Path(cfg.cohort.path).resolve()),
        "patients": [p.name for p in patients],
        "val_patients": [patients[i].name for i in module.split.val],
        "selected_epoch": module.selected_epoch,
        "seed": seed,
    }
    save_bundle(module, out, meta)
    save_resolved(cfg, out)
    print(
        f"train-seg: {len(patients)} patients ({method}), epoch {module.selected_epoch} selected, "
        f"{time.time() - start:.0f} s"
    )
    print(wrote_line(out, started))
