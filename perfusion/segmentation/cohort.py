"""The cohort behind a cross-validation: found on disk, or generated as a phantom cohort.

A fitted input method's maps are fitted for the whole cohort by ``perfusion fit-cohort``'s
library (:func:`fit_cohort_maps`): resumable, and refitted when the fit's configuration
changes. Each patient's inputs are computed once per input method and their ``rcbf.nii.gz``
cached in the run folder (``<run>/<method>/inputs/<patient>/rcbf.nii.gz``), so every fold and
seed and a later inspection see the same normalisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from perfusion.errors import PerfusionError
from perfusion.segmentation.config import CohortConfig
from perfusion.segmentation.inputs import (
    PatientInputs,
    list_patients,
    load_patient,
    made_elsewhere,
    maps_folder,
    method_fit_config,
    save_rcbf,
)

BUSY_WAIT_S = 5.0
"""Seconds between looks at a patient another process is fitting."""


def ensure_cohort(cfg: CohortConfig) -> list[Path]:
    """The cohort's case folders; a phantom cohort is generated first when the folder holds no
    cases (once, when ``perfusion loocv`` processes start together:
    :func:`~perfusion.phantom.cohort.ensure_generated`)."""
    from perfusion.phantom.cohort import ensure_generated

    path = Path(cfg.path)
    n, seed = cfg.phantom_n, cfg.phantom_seed
    overrides = [f"n={n}", f"seed={seed}", *cfg.phantom_overrides]
    announce = f"loocv: no cohort at {path}: generating {n} phantom patients (seed {seed})"
    ensure_generated(path, overrides, announce)
    return list_patients(path)


def load_cohort(
    cases: list[Path], method: str, cfg: CohortConfig, cache_dir: Path | None = None
) -> list[PatientInputs]:
    """Every patient's inputs for ``method`` (fitting missing maps when allowed), rCBF cached."""
    fits = Path(cfg.fits) if cfg.fits else None
    if cfg.fit_missing and method != "truth":
        fit_cohort_maps(cases, method, fits, cfg.fit_overrides)
    patients = []
    for case in cases:
        patient = load_patient(
            case, method, fits, cfg.side, cfg.fit_missing, fit_overrides=cfg.fit_overrides
        )
        if patient.core is None:
            raise PerfusionError("no core.nii.gz: a cross-validation needs reference cores", case)
        if cache_dir is not None:
            save_rcbf(patient, cache_dir / case.name)
        patients.append(patient)
    return patients


def fit_cohort_maps(
    cases: list[Path], method: str, fits_root: Path | None, overrides: Sequence[str] = ()
) -> None:
    """Fit ``method``'s maps of ``cases`` into ``<fits>/<method>/<patient>/`` with
    :func:`perfusion.fitting.cohort.fit_cohort`: a patient is fitted when its maps are missing or
    were fitted with another configuration, and reused otherwise; maps made elsewhere (no
    ``config.yaml``) are used as they are. A patient another process is fitting (``loocv fold=k``
    processes started together) is waited for, not fitted twice. A patient that fails stops the
    run, naming it: the cross-validation needs every one."""
    from perfusion.fitting.cohort import BUSY, FAILED, fit_cohort

    cfg = method_fit_config(method, overrides)
    by_folder: dict[Path, list[Path]] = {}
    for case in cases:
        folder = maps_folder(case, method, fits_root)
        if not made_elsewhere(folder):
            by_folder.setdefault(folder.parent, []).append(case)
    for out, pending in by_folder.items():
        failed: list[dict] = []
        first = True
        while pending:
            records = fit_cohort(pending, out, cfg, say=_progress(method, out) if first else None)
            failed += [r for r in records if r["status"] == FAILED]
            pending = [c for c, r in zip(pending, records, strict=True) if r["status"] == BUSY]
            if pending and first:
                print(f"{method} maps: waiting for {len(pending)} fits of another process")
            if pending:
                time.sleep(BUSY_WAIT_S)
            first = False
        if failed:
            raise PerfusionError(
                f"{len(failed)} {method} fit(s) failed, first {failed[0]['case']}: "
                f"{failed[0]['error']}",
                out,
            )


def _progress(method: str, out: Path) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(f"{method} maps -> {out}: {line}", flush=True)

    return say
