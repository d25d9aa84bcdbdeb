"""``perfusion loocv [COHORT] [cohort=DIR] [inputs=truth,bsvd] [seeds=0,1] [fold=k] [key=value ...]``.

Leave-one-out cross-validation of the infarct-core U-Net (paper Section 2.4, Table 1): a fresh
Trainer per (input method, seed, fold), each finished unit saved as JSON so that an interrupted
run resumes and parallel processes (``fold=k``) share the work; then Table 1 against the
rCBF < 30 % rule, per-patient values and a Bland-Altman PNG per method.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf

from perfusion.config import save_resolved, split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options, expand_aliases
from perfusion.io import write_nifti_atomic
from perfusion.segmentation.cohort import ensure_cohort, load_cohort
from perfusion.segmentation.config import INPUT_METHODS, LoocvConfig, TrainConfig, UNetConfig
from perfusion.segmentation.inputs import PatientInputs

if TYPE_CHECKING:
    from perfusion.segmentation.module import SegmentationModule

# torch, Lightning and MONAI are imported inside the functions that train, so that a bad key
# or argument is refused before they load
LIST_KEYS = ("inputs", "seeds")
ALIASES = {"cohort": "cohort.path"}
OPTIONS = Options(LoocvConfig, ("loocv.yaml",), aliases=ALIASES)


def normalise_overrides(overrides: Sequence[str]) -> list[str]:
    """Shorthands: ``cohort=DIR`` -> ``cohort.path=DIR``; ``inputs=a,b`` -> ``inputs=[a,b]``."""
    out = []
    for item in expand_aliases(overrides, ALIASES):
        key, _, value = item.partition("=")
        if key in LIST_KEYS and not value.startswith("["):
            item = f"{key}=[{value}]"
        out.append(item)
    return out


def train_model(
    patients: Sequence[PatientInputs],
    fold: int | None,
    seed: int,
    model: UNetConfig,
    train: TrainConfig,
    logger: Any = False,
) -> SegmentationModule:
    """Train one U-Net with a fresh Trainer on ``fold``'s training patients; return the selected weights."""
    import lightning as L

    from perfusion.segmentation.data import LeaveOneOutDataModule, patch_size
    from perfusion.segmentation.module import SegmentationModule
    from perfusion.tracking import quiet_lightning

    L.seed_everything(seed, workers=True, verbose=False)
    quiet_lightning()  # one line per fold is enough
    # patients without a core cannot give core-centred patches; MONAI then crops anywhere
    warnings.filterwarnings("ignore", message="Num foregrounds 0.*")
    grid = np.min([p.rcbf.shape for p in patients], axis=0)
    grid = tuple(int(s) for s in grid)
    roi = patch_size(grid, train.patch_fraction, train.pad_multiple)
    infer_roi = patch_size(
        grid, train.infer_patch_fraction or train.patch_fraction, train.pad_multiple
    )
    aug = {
        k: getattr(train, k)
        for k in (
            "pos_neg_ratio",
            "flip_prob",
            "rotate_prob",
            "rotate_deg",
            "zoom_prob",
            "zoom_range",
        )
    }
    data = LeaveOneOutDataModule(
        patients, fold, train.n_val, seed, roi, train.pad_multiple, aug, train.batch_size
    )
    module = SegmentationModule(  # plain values, so that the saved hparams load with weights_only
        [int(c) for c in model.channels],
        [int(s) for s in model.strides],
        model.num_res_units,
        model.dropout,
        train.lr,
        train.pct_start,
        train.epochs * data.steps_per_epoch,
        list(roi),
        train.pad_multiple,
        train.sw_overlap,
        train.selection if train.n_val > 0 else "fixed",
        train.running_mean_epochs,
        list(infer_roi),
    )
    trainer = L.Trainer(
        max_epochs=train.epochs,
        accelerator=train.accelerator,
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=train.val_every,
        log_every_n_steps=1,
    )
    trainer.fit(module, data)
    module.selected_epoch = module.use_selected()
    module.split = data.split
    return module


def fold_logger(enabled: bool, group: str, job: str, name: str, save_dir: Path) -> Any:
    """W&B logger of one training (``perfusion.tracking``: offline by default), or False.

    False (not None) when disabled, since a Trainer given None makes its own default logger.
    """
    if not enabled:
        return False
    from perfusion.tracking import make_logger

    logger = make_logger(name, save_dir, group=group, job_type=job)
    return logger if logger is not None else False


def run_unit(
    cfg: LoocvConfig,
    patients: list[PatientInputs],
    method: str,
    seed: int,
    fold: int,
    run_dir: Path,
    digest: str,
) -> None:
    """Train, select and test one (method, seed, fold) unless finished or claimed elsewhere."""
    from perfusion import cache
    from perfusion.segmentation.loocv import unit_path

    path = unit_path(run_dir, method, seed, fold)
    label = f"{method} seed {seed} fold {fold}"
    if cache.load(path, digest) is not None:
        print(f"loocv: {label}: done, skipped", flush=True)
        return
    with cache.claim(path) as mine:
        if not mine:
            print(f"loocv: {label}: running in another process, skipped", flush=True)
            return
        if cache.load(path, digest) is not None:  # another process finished it meanwhile
            return
        result = train_and_score(cfg, patients, method, seed, fold, run_dir)
        write_nifti_atomic(
            path.with_suffix(".core_pred.nii.gz"),
            result.pop("pred"),
            patients[fold].affine,
            np.uint8,
        )
        cache.store(path, digest, result)
        print(
            f"loocv: {label} ({result['patient']}): Dice {result['dice']:.3f}, pred "
            f"{result['pred_ml']:.1f} ml vs ref {result['ref_ml']:.1f} ml, {result['wall_s']:.0f} s",
            flush=True,
        )


def train_and_score(
    cfg: LoocvConfig,
    patients: list[PatientInputs],
    method: str,
    seed: int,
    fold: int,
    run_dir: Path,
) -> dict[str, Any]:
    """A fresh logger and Trainer for one unit; the test patient's prediction and metrics."""
    from perfusion.segmentation.loocv import evaluate, predict_core
    from perfusion.tracking import finish

    start, cpu_start = time.time(), time.process_time()
    name = f"{method}-s{seed}-f{fold}"
    logger = fold_logger(cfg.wandb, cfg.run, f"{method}/seed-{seed}", name, run_dir)
    module = train_model(patients, fold, seed, cfg.model, cfg.train, logger)
    pred = predict_core(module, patients[fold])
    row = evaluate(pred, patients[fold])
    if logger:
        numbers = {f"test/{k}": float(v) for k, v in row.items() if isinstance(v, int | float)}
        logger.log_metrics(numbers)
        finish(logger)
    return {
        "method": method,
        "seed": seed,
        "fold": fold,
        "val_patients": [patients[i].name for i in module.split.val],
        "selected_epoch": module.selected_epoch,
        "val_dice": module.val_dice,
        "wall_s": time.time() - start,
        "cpu_s": time.process_time() - cpu_start,
        "pred": pred,
        **row,
    }


def main(argv: list[str]) -> None:
    positionals, overrides = split_args(argv)
    overrides = normalise_overrides(overrides)
    if positionals:
        overrides.insert(0, f"cohort.path={positionals[0]}")
    cfg = OPTIONS.load(overrides)
    unknown = [m for m in cfg.inputs if m not in INPUT_METHODS]
    if unknown:
        raise PerfusionError(
            f"inputs: unknown method(s) {unknown}, expected some of {INPUT_METHODS}"
        )
    import torch

    from perfusion import cache
    from perfusion.segmentation.data import reported_folds
    from perfusion.segmentation.loocv import aggregate, write_results

    torch.set_num_threads(cfg.train.threads)
    cases = ensure_cohort(cfg.cohort)
    if cfg.fold >= len(cases):
        raise PerfusionError(
            f"fold={cfg.fold} but the cohort has {len(cases)} patients", cfg.cohort.path
        )
    if not 0 <= cfg.train.n_val < len(cases) - 1:  # a fold trains on N - 1 - n_val patients
        raise PerfusionError(
            f"train.n_val={cfg.train.n_val} leaves no training patient in a fold of "
            f"{len(cases)} patients",
            cfg.cohort.path,
        )
    run_dir = Path(cfg.runs) / cfg.run
    save_resolved(cfg, run_dir)
    digest = cache.digest(cfg.model, cfg.train, str(cfg.cohort.path), cfg.cohort.side)
    cohorts = {m: load_cohort(cases, m, cfg.cohort, run_dir / m / "inputs") for m in cfg.inputs}
    folds = [cfg.fold] if cfg.fold >= 0 else reported_folds(len(cases))
    for method, patients in cohorts.items():
        for seed in cfg.seeds:
            for fold in folds:
                run_unit(cfg, patients, method, seed, fold, run_dir, digest)
    if cfg.fold >= 0:
        return
    methods = aggregate(cfg, cohorts, run_dir, digest)
    if methods is not None:
        print(write_results(cfg, methods, len(cases), digest))
        log_aggregate(cfg, methods, run_dir)


def log_aggregate(cfg: LoocvConfig, methods: dict[str, Any], run_dir: Path) -> None:
    """One W&B run (job ``aggregate``, same group as the folds) with every method's Table 1 row."""
    logger = fold_logger(cfg.wandb, cfg.run, "aggregate", f"{cfg.run}-aggregate", run_dir)
    if not logger:
        return
    from perfusion.tracking import finish

    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    logger.log_metrics(
        {
            f"{name}/{key}": value["mean"]
            for name, entry in methods.items()
            for key, value in entry["metrics"].items()
            if value["mean"] is not None
        }
    )
    finish(logger)
