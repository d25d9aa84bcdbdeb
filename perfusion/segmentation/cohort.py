"""The cohort behind a cross-validation: found on disk, or generated as a phantom cohort.

Each patient's inputs are computed once per input method and their ``rcbf.nii.gz`` cached in
the run folder (``<run>/<method>/inputs/<patient>/rcbf.nii.gz``), so every fold and seed and a
later inspection see the same normalisation.
"""

from __future__ import annotations

from pathlib import Path

from perfusion.config import config_dir, load_config
from perfusion.errors import PerfusionError
from perfusion.segmentation.config import CohortConfig
from perfusion.segmentation.inputs import PatientInputs, list_patients, load_patient, save_rcbf


def ensure_cohort(cfg: CohortConfig) -> list[Path]:
    """The cohort's case folders; a phantom cohort is generated first when the folder is missing."""
    path = Path(cfg.path)
    if not path.exists():
        generate_phantom_cohort(path, cfg.phantom_n, cfg.phantom_seed, cfg.phantom_overrides)
    return list_patients(path)


def generate_phantom_cohort(path: Path, n: int, seed: int, overrides: list[str]) -> None:
    """Write ``n`` phantom patients into ``path`` with ``configs/phantom.yaml`` + ``overrides``."""
    from perfusion.phantom import make_cohort
    from perfusion.phantom.config import PhantomConfig

    yaml = [config_dir() / "phantom.yaml"] if (config_dir() / "phantom.yaml").is_file() else []
    print(f"loocv: no cohort at {path}: generating {n} phantom patients (seed {seed})", flush=True)
    cfg = load_config(PhantomConfig, yaml, [f"n={n}", f"seed={seed}", f"out={path}", *overrides])
    make_cohort(cfg, path)


def load_cohort(
    cases: list[Path], method: str, cfg: CohortConfig, cache_dir: Path | None = None
) -> list[PatientInputs]:
    """Every patient's inputs for ``method`` (fitting missing maps when allowed), rCBF cached."""
    fits = Path(cfg.fits) if cfg.fits else None
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
