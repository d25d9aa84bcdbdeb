"""Leave-one-out bookkeeping without a Trainer: units, per-fold result files, evaluation, Table 1.

A unit is (input method, seed, fold). Each finished unit writes one JSON
(``<run>/<method>/seed-<s>/fold-<kkk>.json``) holding the config hash it ran with, so that
``perfusion loocv`` resumes by skipping finished units and parallel processes share the work
(:mod:`perfusion.cache`: a unit of another config is redone, each unit is claimed with a lock). Aggregation reads those files only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from experiments.loocv.report import (
    bland_altman_png,
    paired_markdown,
    per_patient_markdown,
    table_markdown,
)
from perfusion import cache
from perfusion.errors import PerfusionError
from perfusion.io import write_json_atomic, write_text_atomic
from perfusion.segmentation.config import LoocvConfig
from perfusion.segmentation.data import reported_folds
from perfusion.segmentation.inputs import PatientInputs
from perfusion.segmentation.metrics import patient_metrics, summarise
from perfusion.segmentation.rcbf import threshold_core

THRESHOLD_NAME = "rCBF<{pct:g}%"


def unit_path(run_dir: Path, method: str, seed: int, fold: int) -> Path:
    return run_dir / method / f"seed-{seed}" / f"fold-{fold:03d}.json"


def evaluate(pred: np.ndarray, patient: PatientInputs) -> dict[str, Any]:
    """Per-patient metrics of a predicted core against the patient's reference core."""
    if patient.core is None:
        raise PerfusionError(f"{patient.name}: no reference core to score against")
    row = patient_metrics(pred, patient.core, patient.spacing_mm)
    return {"patient": patient.name, "affected": patient.affected, **row}


def threshold_rows(patients: Sequence[PatientInputs], threshold: float) -> list[dict[str, Any]]:
    """Per-patient metrics of the rule rCBF < ``threshold`` (affected hemisphere, tissue only)."""
    return [
        evaluate(threshold_core(p.rcbf, p.tissue, p.x_mm, p.affected, p.voxel_ml, threshold), p)
        for p in patients
    ]


def aggregate_method(per_seed_rows: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Table 1 entry of one method: mean and sd over seeds of the per-seed summaries.

    Also the per-patient values averaged over seeds (for paired comparisons between methods,
    which the sd over seeds cannot show).
    """
    summaries = {seed: summarise(rows) for seed, rows in per_seed_rows.items()}
    keys = ("dice", "mvd_ml", "avd_ml", "fnr", "fp_ml")
    table = {}
    for key in keys:
        values = np.array([s[key] for s in summaries.values()], dtype=np.float64)
        finite = values[np.isfinite(values)]
        table[key] = {
            "mean": float(finite.mean()) if finite.size else None,
            "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
        }
    return {
        "seeds": sorted(per_seed_rows),
        "metrics": table,
        "per_seed": {str(s): v for s, v in summaries.items()},
        "per_patient": per_patient_means(per_seed_rows),
    }


def per_patient_means(per_seed_rows: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each patient's Dice and volumes averaged over seeds, and how often it was detected."""
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for rows in per_seed_rows.values():
        for row in rows:
            by_patient.setdefault(row["patient"], []).append(row)
    out = []
    for name in sorted(by_patient):
        rows = by_patient[name]
        det = [r["detected"] for r in rows if r["detected"] is not None]
        out.append(
            {
                "patient": name,
                "dice": float(np.mean([r["dice"] for r in rows])),
                "pred_ml": float(np.mean([r["pred_ml"] for r in rows])),
                "abs_diff_ml": float(np.mean([abs(r["diff_ml"]) for r in rows])),
                "ref_ml": float(rows[0]["ref_ml"]),
                "detected_fraction": float(np.mean(det)) if det else None,
            }
        )
    return out


def paired_with_rule(unet: list[dict[str, Any]], rule: list[dict[str, Any]]) -> dict[str, Any]:
    """The U-Net minus the rule, patient by patient (:func:`per_patient_means` rows; the U-Net's
    averaged over seeds): Dice over the patients with a core, absolute volume error (ml) over
    all. Per score the mean difference, its 95 % bootstrap interval over patients (percentile,
    10,000 resamples, fixed seed) and the two-sided Wilcoxon signed-rank p (ties left out)."""
    from scipy import stats

    rule_by_patient = {r["patient"]: r for r in rule}
    pairs = [(u, rule_by_patient[u["patient"]]) for u in unet]
    differences = {
        "dice": [u["dice"] - r["dice"] for u, r in pairs if r["detected_fraction"] is not None],
        "avd_ml": [u["abs_diff_ml"] - r["abs_diff_ml"] for u, r in pairs],
    }
    out = {}
    for key, values in differences.items():
        diff = np.asarray(values, dtype=np.float64)
        interval = stats.bootstrap(
            (diff,), np.mean, n_resamples=10_000, method="percentile", rng=0
        ).confidence_interval
        p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
        out[key] = {
            "mean": float(diff.mean()),
            "low": float(interval.low),
            "high": float(interval.high),
            "p": p,
            "n": int(diff.size),
        }
    return out


def aggregate(
    cfg: LoocvConfig,
    cohorts: dict[str, list[PatientInputs]],
    run_dir: Path,
    digests: dict[str, str],
) -> dict[str, Any] | None:
    """Table 1 over the reported folds of every method and seed, with the threshold rule; None if units are missing."""
    methods: dict[str, dict[str, Any]] = {}
    missing = []
    for method, patients in cohorts.items():
        folds = reported_folds(len(patients))
        per_seed, digest = {}, digests[method]
        for seed in cfg.seeds:
            rows = [cache.load(unit_path(run_dir, method, seed, k), digest) for k in folds]
            missing += [(method, seed, k) for k, r in zip(folds, rows, strict=True) if r is None]
            per_seed[seed] = [r for r in rows if r is not None]
        if not missing:
            unet = methods[f"U-Net ({method})"] = aggregate_method(per_seed)
            rule_rows = threshold_rows([patients[k] for k in folds], cfg.threshold)
            rule = aggregate_method({0: rule_rows})
            methods[f"{THRESHOLD_NAME.format(pct=100 * cfg.threshold)} ({method})"] = rule
            unet["paired_with_rule"] = paired_with_rule(unet["per_patient"], rule["per_patient"])
    if missing:
        print(
            f"loocv: {len(missing)} units unfinished (e.g. {missing[0]}): not aggregating yet",
            flush=True,
        )
        return None
    return methods


def write_results(cfg: LoocvConfig, methods: dict[str, Any], n_patients: int, digests: dict,
                  command: str = "perfusion loocv") -> str:  # fmt: skip
    """Write ``<results>/README.md``, ``loocv.json`` and one Bland-Altman PNG per method;
    return the markdown."""
    folder = Path(cfg.results)
    pngs = {}
    for name, entry in methods.items():
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        rows = entry["per_patient"]
        png = folder / f"bland-altman-{slug}.png"
        bland_altman_png([r["pred_ml"] for r in rows], [r["ref_ml"] for r in rows], name, png)
        pngs[name] = png.name
    text = "\n\n".join(
        [
            f"# Leave-one-out core segmentation (run `{cfg.run}`, cohort `{cfg.cohort.path}`)\n\n"
            f"Command: `{command}`",
            f"{n_patients} patients; folds 1..{n_patients - 1} reported (fold 0 kept for tuning); "
            f"U-Net: mean (sd) over seeds {list(cfg.seeds)}, {cfg.train.epochs} epochs, lr {cfg.train.lr:g}, "
            f"selection {cfg.train.selection}. Dice over patients with a core; FP ml over patients without one.",
            table_markdown(methods),
            "## The U-Net against the rule, paired over patients",
            paired_markdown(methods),
            "## Per patient (Dice, mean over seeds)",
            per_patient_markdown(methods),
            "Bland-Altman: " + ", ".join(f"[{n}]({p})" for n, p in pngs.items()),
        ]
    )
    write_text_atomic(folder / "README.md", text + "\n")
    payload = {
        "run": cfg.run,
        "config_digests": digests,
        "n_patients": n_patients,
        "methods": methods,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json_atomic(folder / "loocv.json", payload)
    return text
