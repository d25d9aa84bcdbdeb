"""``perfusion loocv [COHORT] [cohort=DIR] [inputs=truth,bsvd] [seeds=0,1] [fold=k] [key=value ...]``.

Leave-one-out cross-validation of the infarct-core U-Net (paper Section 2.4, Table 1): a fresh
Trainer per (input method, seed, fold), each finished unit saved as JSON so that an interrupted
run resumes and parallel processes (``fold=k``) share the work; then Table 1 against the
rCBF < 30 % rule, per-patient values and a Bland-Altman PNG per method.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from perfusion.config import save_resolved, split_args
from perfusion.errors import PerfusionError
from perfusion.help import Options
from perfusion.io import write_nifti_atomic
from perfusion.segmentation.cohort import ensure_cohort, load_cohort
from perfusion.segmentation.config import INPUT_METHODS, LoocvConfig, check_features
from perfusion.segmentation.inputs import PatientInputs
from perfusion.segmentation.train import ALIASES, fold_logger, normalise_overrides, train_model

OPTIONS = Options(LoocvConfig, ("loocv.yaml",), aliases=ALIASES)


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
    from experiments.loocv.run import unit_path
    from perfusion import cache

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
    from experiments.loocv.run import evaluate
    from perfusion.segmentation.train import predict_core
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
    check_features(cfg.model.features)
    unknown = [m for m in cfg.inputs if m not in INPUT_METHODS]
    if unknown:
        raise PerfusionError(
            f"inputs: unknown method(s) {unknown}, expected some of {INPUT_METHODS}"
        )
    import torch

    from experiments.loocv.run import aggregate, write_results
    from perfusion.segmentation.data import reported_folds

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
    digests = unit_digests(cfg, input_fits(cfg), [case.name for case in cases])
    cohorts = {m: load_cohort(cases, m, cfg.cohort, run_dir / m / "inputs") for m in cfg.inputs}
    folds = [cfg.fold] if cfg.fold >= 0 else reported_folds(len(cases))
    for method, patients in cohorts.items():
        for seed in cfg.seeds:
            for fold in folds:
                run_unit(cfg, patients, method, seed, fold, run_dir, digests[method])
    if cfg.fold >= 0:
        return
    methods = aggregate(cfg, cohorts, run_dir, digests)
    if methods is not None:
        command = " ".join(["perfusion loocv", *argv])
        print(write_results(cfg, methods, len(cases), digests, command))
        log_aggregate(cfg, methods, run_dir)


def input_fits(cfg: LoocvConfig) -> dict[str, str]:
    """The fit digest of each fitted input method's maps: a unit trained on maps of another fit
    configuration is redone (the maps themselves are refitted by fit-cohort's library)."""
    from perfusion.fitting.reuse import fit_digest
    from perfusion.segmentation.inputs import method_fit_config

    fitted = [m for m in cfg.inputs if m != "truth"]
    return {m: fit_digest(method_fit_config(m, cfg.cohort.fit_overrides)) for m in fitted}


def unit_digests(cfg: LoocvConfig, fits: dict[str, str], patients: list[str]) -> dict[str, str]:
    """Per input method, the digest of what its (seed, fold) units depend on: the U-Net and
    training settings, the cohort and its patients (a fold's training patients change with
    them), and that method's fit digest (``fits``) alone, so that a changed fit of one method
    leaves the others' units standing."""
    from perfusion import cache

    shared = (cfg.model, cfg.train, str(cfg.cohort.path), cfg.cohort.side, patients)
    return {m: cache.digest(*shared, {m: fits[m]} if m in fits else {}) for m in cfg.inputs}


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
