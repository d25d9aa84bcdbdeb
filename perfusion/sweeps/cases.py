"""The case a sweep's trials fit: made once, before the first trial, when it does not exist.

A shipped sweep names ``data/sweep/prepared/patient-000``. On a fresh clone that folder is missing,
so the driver writes it: ``perfusion phantom out=data/sweep/phantom <overrides>`` (a small, noisy
phantom with ``truth/``), then preprocesses that patient once into the ``prepared/`` folder with
the fit's default preprocessing (``configs/fit.yaml``) and copies ``truth/`` beside it. Every
trial then loads the preprocessed case (``perfusion.fitting.run.load_prepared``) instead of
redoing motion correction and registration, which on a CPU can cost more than a short fit.
A case path not under ``prepared/`` gets the phantom only, and each trial preprocesses it.

Since a preprocessed folder fixes preprocessing, a sweep over ``preprocess.*`` keys (smoothing,
for instance) must name an unprocessed case; :func:`check_case_parameters` says so.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from perfusion.errors import PerfusionError

log = logging.getLogger(__name__)
PREPARED_PARENT = "prepared"
PHANTOM_PARENT = "phantom"


def check_case_parameters(case: Path, parameter_names: list[str]) -> None:
    """Refuse ``preprocess.*`` parameters on a preprocessed case (they would be ignored)."""
    swept = [n for n in parameter_names if n.startswith("preprocess.")]
    if swept and (case.parent.name == PREPARED_PARENT or (case / "prepared.json").is_file()):
        raise PerfusionError(
            f"parameter '{swept[0]}' has no effect on a preprocessed case; name the raw case", case
        )


def ensure_case(case: Path, phantom_overrides: list[str], env: dict[str, str]) -> None:
    """Make ``case`` (a phantom patient, preprocessed when under ``prepared/``) if it is missing."""
    if case.exists() or not phantom_overrides:
        return
    if not re.fullmatch(r"patient-\d+", case.name):
        raise PerfusionError("trial case folder not found (and not a phantom patient-NNN)", case)
    prepared = case.parent.name == PREPARED_PARENT
    cohort = case.parent.parent / PHANTOM_PARENT if prepared else case.parent
    raw = cohort / case.name
    if not raw.is_dir():
        command = ["perfusion", "phantom", f"out={cohort}", *phantom_overrides]
        log.info("making the sweep's phantom: %s", " ".join(command))
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not raw.is_dir():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PerfusionError(f"could not make the phantom ({tail[0]})", raw)
    if prepared:
        preprocess_once(raw, case)


def preprocess_once(raw: Path, target: Path) -> None:
    """Preprocess ``raw`` with the fit's defaults into ``target``, with ``truth/`` copied along."""
    from perfusion.config import to_object
    from perfusion.fitting.init import build_fit_config
    from perfusion.io import read_case
    from perfusion.preprocess import prepare_case

    log.info("preprocessing %s once for every trial -> %s", raw, target)
    fit_cfg = to_object(build_fit_config())
    staging = target.with_name(f".{target.name}.preparing")
    shutil.rmtree(staging, ignore_errors=True)
    prepare_case(read_case(raw), fit_cfg.preprocess).save(staging)
    if (raw / "truth").is_dir():
        shutil.copytree(raw / "truth", staging / "truth")
    os.replace(staging, target)  # the folder appears complete or not at all
