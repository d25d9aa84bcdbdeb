"""``perfusion compare``: the meta-learned initialisation against fits from scratch and SPPINN.

On held-out phantom patients (a cohort seed never used in meta-training), one run fits every
arm to every patient through :func:`perfusion.fitting.run.fit_case` and scores the maps against
the truth with :func:`perfusion.evaluation.evaluate_fit`:

- ``meta-init@N``: the checkpoint's initialisation, N = its inner steps, and at each of
  ``meta_init_steps`` (the paper's ReSPPINN@500);
- ``meta-init@default`` and ``no-init@default``: both under the default fit's stopping rule and
  step cap (configs/fit.yaml ``stop`` and ``steps``), the budget a user's ``perfusion fit`` has;
- ``meta-init@N-no-grid``: the initialisation without the per-patient box-model grid start
  (``ode_prefit_steps=0``): can a learned prior replace it?
- ``random-init@N``: the control, a freshly built untrained field saved through
  :func:`~perfusion.meta.checkpoint.export_init` and loaded the same way (it must not help);
- ``no-init@S`` for each S of ``no_init_steps`` (N added): ordinary fits from scratch (``no-init@0``:
  the pre-fits only, i.e. the smoothed box-model grid start as f_ODE represents it);
- ``population-prior``: no fit, the training cohort's true maps in the standard frame
  (:mod:`experiments.compare.population_prior`): an oracle for what an anatomical prior can hold;
- ``sppinn@S``: slice-wise SPPINN on ``sppinn.slices`` slices only (hours on a full volume on a
  CPU); its wall time is extrapolated to all tissue slices and labelled so.

Every ReSPPINN arm repeats the checkpoint's inner loop (batch, optimiser, loss, AIF pre-fit,
preprocessing; the checkpoint's ``fit`` settings), differing only in start weights and steps,
so each patient is preprocessed once. Figures and tables: :mod:`experiments.compare.report`;
the targets: :mod:`experiments.compare.verdicts`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from experiments.compare.config import CompareConfig
from experiments.compare.heldout import (
    SliceView,
    ensure_heldout,
    prepare_patient,
    sppinn_view,
)
from experiments.compare.population_prior import (
    CohortTruth,
    has_truth,
    population_maps,
    read_truth,
    write_prior_fit,
)
from experiments.compare.probes import PROBE_MAPS, run_probes
from perfusion.config import to_object
from perfusion.errors import PerfusionError
from perfusion.evaluation import pearson_r
from perfusion.fields import build_fields
from perfusion.fitting.cohort import find_cases
from perfusion.fitting.config import FitConfig
from perfusion.fitting.init import build_fit_config, read_init, recorded_settings
from perfusion.fitting.reuse import finished_fit, fit_digest
from perfusion.fitting.run import fit_case, read_history
from perfusion.meta.checkpoint import export_init
from perfusion.meta.config import MetaConfig
from perfusion.prepared import PreparedCase

ARM_KINDS = ("meta", "random", "prior", "noinit", "sppinn")


@dataclass
class Arm:
    """One arm: a name for tables, its kind (:data:`ARM_KINDS`), steps and the full FitConfig."""

    name: str
    kind: str
    steps: int
    fit: FitConfig
    budget: str = "steps"
    """``steps``: exactly ``steps`` steps; ``default``: the default stopping rule, ``steps`` a cap."""
    grid_start: bool = True
    """Whether f_ODE starts from the patient's box-model grid start (the pre-fit)."""


def base_fit_config(cfg: CompareConfig, checkpoint: dict[str, Any]) -> FitConfig:
    """The checkpoint's inner-loop FitConfig with its ``fit`` settings applied, on ``cfg.device``."""
    conf = OmegaConf.structured(FitConfig)
    if checkpoint.get("fit_config"):
        conf = OmegaConf.merge(conf, checkpoint["fit_config"])
    else:  # an older checkpoint: the shipped fit.yaml, then the recorded inner-loop keys
        conf = build_fit_config()
    for key, value in recorded_settings(checkpoint).items():
        OmegaConf.update(conf, key, value, merge=False)
    runtime = {"method": "resppinn", "slice_wise": False, "init": None, "device": cfg.device,
               "threads": cfg.threads, "progress_bar": False, "report": False,
               "tracking.enabled": False}  # fmt: skip
    for key, value in runtime.items():
        OmegaConf.update(conf, key, value, merge=False)
    return to_object(conf)


def build_arms(
    cfg: CompareConfig, checkpoint: dict[str, Any], control_path: Path, prior: bool = False
) -> list[Arm]:
    """Every arm of the run in table order (see the module docstring); the population prior
    only when ``prior`` (a training cohort with truth was found)."""
    base = base_fit_config(cfg, checkpoint)
    n = int(checkpoint.get("fit", {}).get("steps") or 0)
    if n <= 0:
        raise PerfusionError("checkpoint records no inner step count (fit.steps)", cfg.init)
    init = str(cfg.init)
    arms = [
        Arm(f"meta-init@{steps}", "meta", steps, dataclasses.replace(base, init=init, steps=steps))
        for steps in [n, *sorted({*map(int, cfg.meta_init_steps)} - {n})]
    ]
    stopped = default_budget(base)
    if cfg.default_budget:
        arms.append(Arm("meta-init@default", "meta", stopped.steps,
                        dataclasses.replace(stopped, init=init), budget="default"))  # fmt: skip
    if cfg.no_grid_start:
        no_grid = dataclasses.replace(base, init=init, steps=n, ode_prefit_steps=0)
        arms.append(Arm(f"meta-init@{n}-no-grid", "meta", n, no_grid, grid_start=False))
    if cfg.random_init:
        _write_control(base, n, cfg.random_seed, control_path)
        arms.append(Arm(f"random-init@{n}", "random", n,
                        dataclasses.replace(base, init=str(control_path), steps=n)))  # fmt: skip
    if prior:
        arms.append(Arm("population-prior", "prior", 0, base))
    for steps in sorted({*map(int, cfg.no_init_steps), n}):
        arms.append(
            Arm(f"no-init@{steps}", "noinit", steps, dataclasses.replace(base, steps=steps))
        )
    if cfg.default_budget:
        arms.append(Arm("no-init@default", "noinit", stopped.steps, stopped, budget="default"))
    if cfg.sppinn.enabled:
        arms.append(
            Arm(f"sppinn@{cfg.sppinn.steps}", "sppinn", cfg.sppinn.steps, _sppinn_config(cfg, base))
        )
    return arms


def default_budget(base: FitConfig) -> FitConfig:
    """``base`` with the default fit's stopping rule and step cap (configs/fit.yaml): the
    budget ``perfusion fit`` gives a patient, with or without ``init=``."""
    shipped: FitConfig = to_object(build_fit_config())
    return dataclasses.replace(base, steps=shipped.steps, stop=shipped.stop)


def _sppinn_config(cfg: CompareConfig, base: FitConfig) -> FitConfig:
    overrides = [*cfg.sppinn.overrides, f"steps={cfg.sppinn.steps}"]
    conf = build_fit_config(["config=model/sppinn", *overrides])
    plain: FitConfig = to_object(conf)
    return dataclasses.replace(
        plain,
        preprocess=base.preprocess,
        domain=base.domain,
        seed=base.seed,
        device=base.device,
        threads=base.threads,
        progress_bar=False,
        report=False,
        tracking=base.tracking,
        init=None,
    )


def _write_control(base: FitConfig, steps: int, seed: int, path: Path) -> None:
    """An untrained initialisation of the same architecture, saved like a meta-learned one."""
    torch.manual_seed(seed)
    fields = build_fields(base.fields, 3)
    meta = MetaConfig(name="random-init-control", n_outer=0, n_inner=steps, fit=base)
    export_init(fields, meta, path, outer_steps=0, cohort=[])


def run_arm(arm: Arm, prepared_dir: Path, fit_dir: Path, reuse: bool) -> dict[str, Any]:
    """Fit one arm to one prepared patient (or reuse an identical finished fit); its summary."""
    if reuse and (summary := finished_fit(fit_dir, arm.fit, prepared_dir)) is not None:
        return summary
    print(f"[compare] {arm.name} on {prepared_dir.name}", file=sys.stderr)
    summary = fit_case(prepared_dir, arm.fit, fit_dir)
    # wall times on a shared machine mean little without the load they ran under
    return {**summary, "load_1min": os.getloadavg()[0]}


def score(fit_dir: Path, truth_dir: Path) -> dict[str, float]:
    """The evaluate_fit metrics the comparison reports (numbers only)."""
    from perfusion.evaluation import evaluate_fit  # noqa: PLC0415

    found = evaluate_fit(fit_dir, truth_dir)
    return {k: float(v) for k, v in found.items() if isinstance(v, int | float)}


def thin_history(history: list[dict[str, float]], points: int = 200) -> dict[str, list[float]]:
    """Per-step losses (Domain units) as <= ``points`` chunk means, each at its chunk's last step.

    Single-batch losses are noisy; a chunk mean both smooths and shrinks the curve for the JSON.
    """
    if not history:
        return {"step": [], "tac": [], "ode": []}
    chunks = np.array_split(np.arange(len(history)), min(points, len(history)))
    return {
        "step": [int(history[c[-1]].get("step", c[-1] + 1)) for c in chunks],
        "tac": [float(np.mean([history[i]["tac"] for i in c])) for c in chunks],
        "ode": [float(np.mean([history[i]["ode"] for i in c])) for c in chunks],
    }


def fit_record(arm: Arm, patient: str, summary: dict[str, Any], metrics: dict[str, float],
               view: SliceView | None, history: list[dict[str, float]]) -> dict[str, Any]:  # fmt: skip
    """One arm on one patient: wall time (extrapolated for SPPINN), losses, metrics."""
    wall = float(summary["wall_time_s"])
    fitted, total = (view.fitted, view.total) if view else (1, 1)
    slices = None if view is None else {"fitted": fitted, "tissue_slices": total,
                                        "z": [int(z) for z in view.slices]}  # fmt: skip
    return {
        "arm": arm.name, "kind": arm.kind, "steps": arm.steps, "patient": patient,
        "budget": arm.budget, "grid_start": arm.grid_start,
        "steps_run": int(summary.get("steps") or 0),
        "wall_s": wall, "wall_full_s": wall * total / fitted, "extrapolated": view is not None,
        "slices": slices,
        "metrics": metrics, "history": thin_history(history),
        "load_1min": summary.get("load_1min"),  # None for a reused fit
    }  # fmt: skip


def _fit_folder_name(arm: Arm) -> str:
    """The arm's name and the digest of its fit (settings and start weights): runs of other
    recipes keep their own fits, and a retrained checkpoint at the same path never reuses fits
    of the old one (config.yaml only records the path)."""
    return f"{arm.name}-{fit_digest(arm.fit)[:12]}"


def run_patient(
    arms: list[Arm],
    case_dir: Path,
    cfg: CompareConfig,
    base: FitConfig,
    index: int = 0,
    cohort: list[CohortTruth] | None = None,
) -> list[dict[str, Any]]:
    """Every arm on held-out patient ``index``; SPPINN (first ``sppinn.patients`` only) on a
    slice subset, scored on those slices, where every other arm is scored too
    (``slice_metrics``); the population prior from ``cohort``."""
    work = Path(cfg.work_dir)
    prepared_dir = prepare_patient(case_dir, base, work, cfg.reuse)
    truth_dir = case_dir / "truth"
    view = None
    if cfg.sppinn.enabled and index < cfg.sppinn.patients:
        choice = "lesion" if cfg.sppinn.lesion_slices else "spread"
        view = sppinn_view(PreparedCase.load(prepared_dir), truth_dir, cfg.sppinn.slices,
                           work / "sppinn" / f"{prepared_dir.name}-{cfg.sppinn.slices}-{choice}",
                           lesion=cfg.sppinn.lesion_slices)  # fmt: skip
    records = []
    for arm in arms:
        if arm.kind == "sppinn" and view is None:
            continue
        fit_dir = work / "fits" / case_dir.name / _fit_folder_name(arm)
        if arm.kind == "sppinn":
            fit_dir = fit_dir.with_name(f"{fit_dir.name}-{view.tag}")
            summary = run_arm(arm, view.prepared_dir, fit_dir, cfg.reuse)
            record = fit_record(arm, case_dir.name, summary, score(fit_dir, view.truth_dir), view,
                                read_history(fit_dir))  # fmt: skip
        else:
            if arm.kind == "prior":
                summary = write_prior_fit(PreparedCase.load(prepared_dir), cohort or [], fit_dir)
            else:
                summary = run_arm(arm, prepared_dir, fit_dir, cfg.reuse)
            record = fit_record(arm, case_dir.name, summary, score(fit_dir, truth_dir), None,
                                read_history(fit_dir))  # fmt: skip
            if view is not None:  # the same fit scored on SPPINN's slices only
                record["slice_metrics"] = score(fit_dir, view.truth_dir)
        records.append(record)
    return records


def run_compare(cfg: CompareConfig, command: str = "perfusion compare") -> dict[str, Any]:
    """The whole comparison. Without ``conditions``, or with ``heldout.dir`` (a cohort of one's
    own): one held-out cohort, its report under ``out``, the compare.json payload returned. With them: each condition (``only`` selects)
    in ``out/<name>`` and ``work_dir/<name>``, then the page across conditions; returns
    ``{"conditions": {name: payload}}`` for every condition with results of this initialisation.
    """
    from experiments.compare.report import write_summary  # noqa: PLC0415  (matplotlib)

    plain: CompareConfig = cfg if isinstance(cfg, CompareConfig) else to_object(cfg)
    if not Path(plain.init).is_file():
        raise PerfusionError(
            "no initialisation: run `make meta-train` first, or pass init=PATH", plain.init
        )
    if not plain.conditions or plain.heldout.dir:
        return run_condition(plain, command)
    unknown = sorted(set(plain.only or []) - set(plain.conditions))
    if unknown:
        raise PerfusionError(
            f"only={unknown} names no condition (conditions: {sorted(plain.conditions)})"
        )
    checkpoint = read_init(plain.init)
    training = ((checkpoint.get("meta") or {}).get("cohort_config") or {}).get("phantom") or []
    phantom = list(plain.heldout.phantom if plain.heldout.phantom is not None else training)
    for name, overrides in plain.conditions.items():
        if plain.only and name not in plain.only:
            continue
        print(f"[compare] condition {name}: {' '.join(overrides) or 'as trained'}", file=sys.stderr)
        heldout = dataclasses.replace(plain.heldout, phantom=[*phantom, *overrides])
        run_condition(dataclasses.replace(
            plain, out=str(Path(plain.out) / name), work_dir=str(Path(plain.work_dir) / name),
            conditions={}, only=None, heldout=heldout), command, checkpoint)  # fmt: skip
    return write_summary(plain, command, checkpoint)


def run_condition(
    plain: CompareConfig, command: str, checkpoint: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One held-out cohort: every arm on every patient; writes the report under ``plain.out``
    (``checkpoint``: ``plain.init`` already read)."""
    from experiments.compare.report import write_report  # noqa: PLC0415  (matplotlib)

    if plain.threads:
        torch.set_num_threads(plain.threads)
    checkpoint = checkpoint or read_init(plain.init)
    work = Path(plain.work_dir)
    patients = ensure_heldout(plain.heldout, checkpoint, work / "heldout")
    base = base_fit_config(plain, checkpoint)
    cohort = prior_cohort(plain, checkpoint, base, patients)
    arms = build_arms(plain, checkpoint, work / "random-init-control.ckpt", prior=bool(cohort))
    records = [
        r for i, d in enumerate(patients) for r in run_patient(arms, d, plain, base, i, cohort)
    ]
    payload = {
        "command": command,
        "checkpoint": {"path": str(plain.init), "sha256": checkpoint.get("sha256"),
                       "meta": checkpoint.get("meta"), "fit": checkpoint.get("fit")},
        "patients": [p.name for p in patients],
        "heldout_seed": plain.heldout.seed,
        "heldout_phantom": plain.heldout.phantom,
        "arms": [{"name": a.name, "kind": a.kind, "steps": a.steps, "budget": a.budget,
                  "grid_start": a.grid_start} for a in arms],
        "records": records,
    }  # fmt: skip
    return write_report(plain, payload, _probes(plain, arms, patients[0], base, cohort))


def prior_cohort(
    cfg: CompareConfig, checkpoint: dict[str, Any], base: FitConfig, heldout: list[Path]
) -> list[CohortTruth]:
    """The training patients with truth for the population prior, each preprocessed with the
    checkpoint's settings (cached under ``<work_dir>/cohort``); empty when there are none."""
    if not cfg.prior.enabled:
        return []
    if cfg.prior.cohort_dir:
        dirs = find_cases(cfg.prior.cohort_dir)
    else:
        meta = checkpoint.get("meta") or {}
        folder = (meta.get("cohort_config") or {}).get("dir")
        dirs = [Path(folder) / name for name in meta.get("cohort") or []] if folder else []
    held = {d.resolve() for d in heldout}
    if any(d.resolve() in held for d in dirs):
        raise PerfusionError("prior.cohort_dir holds a held-out patient", cfg.prior.cohort_dir)
    dirs = [d for d in dirs if d.is_dir() and has_truth(d)]
    if not dirs:
        print("[compare] no training patients with truth maps: no population-prior arm",
              file=sys.stderr)  # fmt: skip
        return []
    work = Path(cfg.work_dir) / "cohort"  # its own folder: names repeat across cohorts
    return [
        CohortTruth.from_prepared(
            d.name, PreparedCase.load(prepare_patient(d, base, work, cfg.reuse)), read_truth(d)
        )
        for d in dirs
    ]  # fmt: skip


def _probes(
    cfg: CompareConfig, arms: list[Arm], case_dir: Path, base: FitConfig, cohort: list[CohortTruth]
) -> dict[str, Any]:
    """Figure 5/6 data on the first held-out patient (meta-init first, then the control, then
    the population prior's maps when there is one)."""
    inits = {f"{a.kind}-init": str(a.fit.init) for a in arms if a.kind in ("meta", "random")}
    prepared_dir = prepare_patient(case_dir, base, Path(cfg.work_dir), reuse=True)
    steps = arms[0].steps
    probes = run_probes(
        inits, prepared_dir, case_dir / "truth", base, steps, cfg.probe.voxels, cfg.probe.every
    )
    if cohort:
        prepared = PreparedCase.load(prepared_dir)
        maps = population_maps(prepared, cohort)[0]
        probes["maps"]["population-prior"] = {n: maps[n] for n in PROBE_MAPS}
        probes["init_cbf_r"]["population-prior"] = pearson_r(
            maps["cbf"], probes["truth"]["cbf"], prepared.tissue
        )
    return probes
