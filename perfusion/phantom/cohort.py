"""Cohort mode: ``n`` patients written as ``out/patient-000``, ... with a cohort summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import OmegaConf

from perfusion.config import load_config
from perfusion.errors import PerfusionError
from perfusion.io import write_json_atomic
from perfusion.phantom.brain import make_patient
from perfusion.phantom.config import PhantomConfig, check_config
from perfusion.phantom.kudo import make_kudo
from perfusion.phantom.truth import write_patient

KINDS = ("brain", "kudo")


def patient_dir(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / f"patient-{index:03d}"


def make_cohort(
    cfg: PhantomConfig, out_dir: str | Path | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Generate and write patients ``first_index .. first_index + n - 1``; returns one summary each.

    Deterministic for ``cfg.seed``: patient i is the same in any cohort of that seed.
    """
    check_config(cfg)
    if cfg.kind not in KINDS:
        raise PerfusionError(f"kind '{cfg.kind}' unknown (choose {', '.join(KINDS)})")
    if cfg.n < 1:
        raise PerfusionError(f"config key 'n': {cfg.n}, at least one patient expected")
    out_dir = Path(out_dir if out_dir is not None else cfg.out)
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    summaries = []
    for index in range(cfg.first_index, cfg.first_index + cfg.n):
        start = time.perf_counter()
        patient = make_kudo(cfg, index) if cfg.kind == "kudo" else make_patient(cfg, index)
        folder = write_patient(patient_dir(out_dir, index), patient, plain)
        summary = _summary(folder, patient.meta, time.perf_counter() - start)
        summaries.append(summary)
        if progress:
            print(_line(summary), flush=True)
    write_json_atomic(out_dir / "cohort.json", {"config": plain, "patients": summaries})
    return summaries


def ensure_generated(folder: Path, overrides: Sequence[str], announce: str) -> None:
    """Make sure ``folder`` holds a cohort, generating phantom patients there if not, with
    ``configs/phantom.yaml`` and ``overrides`` (read only then).

    A folder that holds anything and has no ``<folder>.lock`` beside it is a cohort from
    elsewhere, used as it is (nothing is written into it). Generation holds that lock, so
    processes started together (``perfusion loocv`` processes, meta-training ranks) write the
    cohort once and the others wait for the whole of it; ``cohort.json``, written last, marks
    it complete, so a generation cut short is done again. ``announce`` goes to stderr when
    generating.
    """
    lock = folder.with_name(folder.name + ".lock")
    if folder.is_dir() and any(folder.iterdir()) and not lock.exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if not (folder / "cohort.json").is_file():
            cfg = load_config(PhantomConfig, ["phantom.yaml"], [*overrides, f"out={folder}"])
            print(announce, file=sys.stderr, flush=True)
            make_cohort(cfg, folder)


def _summary(folder: Path, meta: dict[str, Any], seconds: float) -> dict[str, Any]:
    lesion = meta.get("lesion", {})
    return {
        "folder": str(folder), "kind": meta.get("kind"), "index": meta.get("index"),
        "lesion_side": lesion.get("side"), "core_ml": lesion.get("core_ml"),
        "penumbra_ml": lesion.get("penumbra_ml"), "aif": meta.get("inputs", {}).get("case", "parametric"),
        "generate_s": meta.get("generation_s"), "total_s": seconds,
    }  # fmt: skip


def _line(summary: dict[str, Any]) -> str:
    text = f"{summary['folder']}: {summary['kind']}"
    if summary["kind"] == "brain":
        if summary["lesion_side"]:
            text += f", lesion {summary['lesion_side']} core {summary['core_ml']:.1f} ml penumbra {summary['penumbra_ml']:.1f} ml"
        else:
            text += ", no lesion"
        text += f", AIF {summary['aif']}"
    return (
        text
        + f" ({summary['generate_s']:.1f} s + write {summary['total_s'] - summary['generate_s']:.1f} s)"
    )
