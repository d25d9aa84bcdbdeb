"""The comparison's outputs: compare.json, README.md (table + verdicts), figures, W&B, and
the page across held-out conditions (:func:`write_summary`).

Each README.md names the command that made it and the machine, because wall times and the
"<= 1/4 of the wall time" target only mean something on a stated machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from experiments.compare import figures
from experiments.compare.verdicts import REPORTED_KEYS, judge, map_error, summarize
from perfusion.io import write_json_atomic, write_text_atomic
from perfusion.tracking import finish, make_logger, quiet_lightning

FIGURES = ("losses", "init", "voxels", "accuracy")
REPORT = "README.md"
"""The page of one comparison (and of the summary across conditions) in its ``out`` folder."""


def machine() -> str:
    """CPU/GPU, core and thread counts and torch version: what the wall times were measured on."""
    text = (
        f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores"
    )
    text += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def write_report(
    cfg: Any, payload: dict[str, Any], probes: dict[str, Any] | None
) -> dict[str, Any]:
    """Judge, draw, write ``compare.json``/``README.md`` under ``cfg.out``, log to W&B.

    ``payload`` holds ``command``, ``checkpoint`` (path, sha256, meta), ``patients`` and
    ``records`` (one per arm and patient); the returned dict adds ``rows``, ``verdicts``,
    ``figures``, ``machine`` and the probe numbers.
    """
    out = Path(cfg.out)
    rows = summarize(payload["records"])
    payload = {**payload, "rows": rows, "verdicts": judge(rows, cfg.verdict), "machine": machine(),
               "created": time.strftime("%Y-%m-%d %H:%M:%S"),
               "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)}  # fmt: skip
    paths = {"losses": figures.losses_figure(payload["records"], rows, out / "compare-losses.png"),
             "accuracy": figures.accuracy_figure(rows, out / "compare-accuracy.png")}  # fmt: skip
    if probes is not None:
        paths["init"] = figures.init_figure(probes, out / "compare-init.png")
        paths["voxels"] = figures.voxels_figure(probes, out / "compare-voxels.png")
        payload["probes"] = {"patient": probes["patient"], "init_cbf_r": probes["init_cbf_r"],
                             "trajectories": probes["trajectories"]}  # fmt: skip
    payload["figures"] = {k: str(v) for k, v in paths.items()}
    write_json_atomic(out / "compare.json", payload)
    write_text_atomic(out / REPORT, markdown(payload))
    if cfg.tracking:
        _log(cfg, payload, paths)
    return payload


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def table_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The per-arm markdown table (patient means)."""
    head = [
        "arm",
        "steps",
        "patients",
        "wall (s)",
        "wall/full volume (s)",
        "map error",
        *REPORTED_KEYS,
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, row in rows.items():
        wall_full = _fmt(row["wall_full_s"], 1) + (" (extrapolated)" if row["extrapolated"] else "")
        steps = str(row["steps"])
        if row.get("budget") == "default":  # a cap: say how many the stopping rule let run
            steps = f"stop rule (mean {row['steps_run']:.0f})"
        cells = [arm, steps, str(len(row["patients"])), _fmt(row["wall_s"], 1), wall_full,
                 _fmt(row["map_error"]),
                 *(_fmt(row["metrics"][k]) for k in REPORTED_KEYS)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _load(payload: dict[str, Any]) -> str:
    loads = [r["load_1min"] for r in payload["records"] if r.get("load_1min") is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a (reused fits)"


def _sppinn_slices(payload: dict[str, Any]) -> str:
    """Which slices SPPINN fitted, per patient (axial indices of the case grid)."""
    parts = [
        f"{r['patient']} z {', '.join(map(str, r['slices'].get('z', [])))} of "
        f"{r['slices']['tissue_slices']} tissue slices"
        for r in payload["records"]
        if r["kind"] == "sppinn" and r.get("slices")
    ]
    return "; ".join(parts) if parts else "none fitted"


def markdown(payload: dict[str, Any]) -> str:
    """README.md of one comparison: provenance, the table, the verdicts, the figures."""
    ckpt = payload["checkpoint"]
    lines = [
        "# Meta-learned initialisation vs fits from scratch vs SPPINN (held-out phantoms)", "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}; 1-min load average after each fit {_load(payload)}  ",
        f"Date: {payload['created']}  ",
        f"{init_line(ckpt['path'], ckpt)}  ",
        f"Held-out patients: {', '.join(payload['patients'])} (seed {payload['heldout_seed']}, "
        "never seen in meta-training; phantom "
        f"`{' '.join(payload.get('heldout_phantom') or []) or 'as the training cohort'}`)", "",
        "Patient means. Map error = mean(1 - CBF r, 1 - Dice rCBF<30%, 1 - Dice Tmax>6 s); "
        "Tmax MAE in s, CBF MAE in ml/100g/min. SPPINN was fitted on a few slices only "
        f"({_sppinn_slices(payload)}): its wall time per full volume is extrapolated and its "
        "accuracy is on those slices. The Dice of two empty regions is 1 (perfusion.evaluation), "
        "so check the region volumes in compare.json. "
        "population-prior is no fit: the training patients' true maps, median at each "
        "standard-frame position (experiments.compare.population_prior), an oracle for what an "
        "anatomical prior can hold before adaptation. @default arms run the default fit's "
        "stopping rule (configs/fit.yaml); -no-grid starts f_ODE from the initialisation alone, "
        "without the patient's box-model grid start.", "",
        *table_lines(payload["rows"]), "", "## Targets", "",
    ]  # fmt: skip
    for verdict in payload["verdicts"]:
        mark = {True: "PASS", False: "FAIL", None: "NOT RUN"}[verdict["passed"]]
        lines.append(f"- **{mark}** {verdict['target']}: {verdict['detail']}")
    same_slices = slice_line(payload["records"])
    if same_slices:
        lines += ["", same_slices]
    ceiling = prior_line(payload["rows"])
    if ceiling:
        lines += ["", ceiling]
    if "probes" in payload:
        r = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in payload["probes"]["init_cbf_r"].items())
        lines += [
            "",
            f"Before any step, the initialisations' CBF correlates with the truth as: {r}.",
        ]
    lines += ["", "## Figures", ""]
    lines += [f"![{k}]({Path(v).name})" for k, v in payload["figures"].items()]
    return "\n".join(lines) + "\n"


def slice_line(records: list[dict[str, Any]]) -> str | None:
    """Every arm's map error on SPPINN's slices (its patients only), or None without SPPINN:
    the table scores SPPINN on its slices and the others on whole volumes."""
    sppinn = [r for r in records if r["kind"] == "sppinn"]
    if not sppinn:
        return None
    patients = {r["patient"] for r in sppinn}
    parts = [
        f"{r['arm'] if len(patients) == 1 else r['arm'] + ' (' + r['patient'] + ')'} "
        f"{_fmt(map_error(r.get('slice_metrics') or r['metrics']))}"
        for r in records
        if r["patient"] in patients and (r["kind"] == "sppinn" or "slice_metrics" in r)
    ]
    return (
        f"On SPPINN's slices only ({', '.join(sorted(patients))}), map error: "
        + ", ".join(parts)
        + "."
    )


def prior_line(rows: dict[str, dict[str, Any]]) -> str | None:
    """What the population prior (the best anatomical prior) says about target 1, or None
    without that arm: before adaptation, can any learned initialisation beat no-init@0?"""
    prior = next((r for r in rows.values() if r["kind"] == "prior"), None)
    start = next((r for r in rows.values() if r["kind"] == "noinit" and r["steps"] == 0), None)
    if prior is None:
        return None
    text = "Population prior (the cohort's true maps, no fit): "
    text += f"map error {_fmt(prior['map_error'])}"
    if start is None:
        return text + "."
    better = prior["map_error"] < start["map_error"]
    verdict = (
        "an anatomical prior can start closer to the truth than the patient's own pre-fits"
        if better
        else "an initialisation learned from these patients is not expected to start closer to "
        "the truth than the patient's own pre-fits; a gain has to come from how it adapts"
    )
    return f"{text} against no-init@0 (the pre-fits) {_fmt(start['map_error'])}: {verdict}."


def _log(cfg: Any, payload: dict[str, Any], paths: dict[str, Path]) -> None:
    """The table, verdicts, loss curves and figures to one W&B run (group ``compare``)."""
    quiet_lightning()  # importing perfusion.tracking imported Lightning, which logs at INFO
    logger = make_logger("compare", Path(cfg.work_dir) / "wandb-runs", group="compare",
                         job_type="compare", config=payload["config"])  # fmt: skip
    if logger is None:
        return
    columns = ["arm", "steps", "wall_s", "wall_full_s", "map_error", *REPORTED_KEYS]
    data = [[arm, r["steps"], r["wall_s"], r["wall_full_s"], r["map_error"],
             *(r["metrics"][k] for k in REPORTED_KEYS)] for arm, r in payload["rows"].items()]  # fmt: skip
    logger.log_table(key="compare/table", columns=columns, data=data)
    curves = [[rec["arm"], rec["patient"], s, tac, ode] for rec in payload["records"]
              for s, tac, ode in zip(rec["history"]["step"], rec["history"]["tac"], rec["history"]["ode"], strict=True)]  # fmt: skip
    logger.log_table(
        key="compare/losses", columns=["arm", "patient", "step", "tac", "ode"], data=curves
    )
    verdicts = [[v["target"], str(v["passed"]), v["detail"]] for v in payload["verdicts"]]
    logger.log_table(key="compare/verdicts", columns=["target", "passed", "detail"], data=verdicts)
    for name, path in paths.items():  # one key per figure: their sizes differ
        logger.log_image(key=f"compare/{name}", images=[str(path)])
    finish(logger)


def write_summary(cfg: Any, command: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``<out>/README.md`` across conditions: map error and wall time per arm and condition,
    each target per condition and what holds. Lists every condition of ``cfg.conditions`` whose
    ``compare.json`` was made with this initialisation (its sha256); the others read "not run"."""
    out = Path(cfg.out)
    found: dict[str, dict[str, Any]] = {}
    for name in cfg.conditions:
        path = out / name / "compare.json"
        if path.is_file():
            payload = json.loads(path.read_text())
            if payload["checkpoint"].get("sha256") == checkpoint.get("sha256"):
                found[name] = payload
    write_text_atomic(out / REPORT, summary_markdown(cfg, command, checkpoint, found))
    return {"conditions": found}


def summary_markdown(
    cfg: Any, command: str, checkpoint: dict[str, Any], found: dict[str, dict[str, Any]]
) -> str:
    """The page of :func:`write_summary` (``found``: compare.json payloads by condition)."""
    names = list(cfg.conditions)
    arms = list(dict.fromkeys(a for p in found.values() for a in p["rows"]))
    head = "| " + " | ".join(["arm", *names]) + " |\n|" + "---|" * (len(names) + 1)

    def cell(name: str, arm: str) -> str:
        row = found.get(name, {}).get("rows", {}).get(arm)
        if row is None:
            return "-"
        return f"{_fmt(row['map_error'])} ({_fmt(row['wall_full_s'], 1)} s)"

    lines = [
        "# Meta-learned initialisation against fits from scratch, by held-out condition", "",
        f"Command: `{command}` (`make compare`); each condition's page names its machine, date "
        "and per-metric table.  ",
        init_line(cfg.init, checkpoint), "",
        "| condition | phantom overrides | patients | page |", "|---|---|---|---|",
        *(f"| {n} | `{' '.join(cfg.conditions[n]) or 'as the training cohort'}` | "
          f"{len(found[n]['patients']) if n in found else 'not run'} | "
          f"{f'[{n}]({n}/{REPORT})' if n in found else '-'} |" for n in names),
        "", "## Map error per arm (wall time per full volume)", "",
        "Patient means; map error = mean(1 - CBF r, 1 - Dice rCBF<30%, 1 - Dice Tmax>6 s), 0 is "
        "perfect. SPPINN is scored on its few slices and its wall time extrapolated.", "",
        head, *(f"| {a} | " + " | ".join(cell(n, a) for n in names) + " |" for a in arms),
        "", "## Targets per condition", "",
    ]  # fmt: skip
    marks = {True: "PASS", False: "FAIL", None: "not run"}
    lines += [head.replace("| arm |", "| target |", 1)]
    for target, passed in verdicts_by_target(found).items():
        cells = [marks[passed[n]] if n in passed else "-" for n in names]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += ["", "## What holds", "", *holds_lines(found)]
    return "\n".join(lines) + "\n"


def init_line(path: str, checkpoint: dict[str, Any]) -> str:
    """``Initialisation: `path` (sha256, outer x inner steps, machine)`` of a checkpoint (or of
    compare.json's record of one: both hold ``sha256`` and ``meta``)."""
    meta = checkpoint.get("meta") or {}
    return (f"Initialisation: `{path}` (sha256 {str(checkpoint.get('sha256'))[:12]}, "
            f"{meta.get('outer_steps', '?')} outer x {meta.get('n_inner', '?')} inner steps, "
            f"made on {meta.get('machine', '?')})")  # fmt: skip


def verdicts_by_target(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, bool | None]]:
    """Each target (first-seen order) -> {condition: passed} over the conditions judging it."""
    table: dict[str, dict[str, bool | None]] = {}
    for name, payload in found.items():
        for verdict in payload["verdicts"]:
            table.setdefault(verdict["target"], {})[name] = verdict["passed"]
    return table


def holds_lines(found: dict[str, dict[str, Any]]) -> list[str]:
    """Each target's conditions passed and failed, and the default-budget gap per condition."""
    lines = []
    for target, outcome in verdicts_by_target(found).items():
        passed = [n for n, ok in outcome.items() if ok]
        judged = [n for n, ok in outcome.items() if ok is not None]
        if judged:
            lines.append(f"- {target}: {len(passed)} of {len(judged)} conditions"
                         + (f" ({', '.join(passed)})" if passed else "") + ".")  # fmt: skip
    gaps = []
    for name, payload in found.items():
        rows = payload["rows"]
        meta, plain = rows.get("meta-init@default"), rows.get("no-init@default")
        if meta and plain and plain["map_error"] > 0:
            gaps.append(f"{name} {100 * (meta['map_error'] / plain['map_error'] - 1):+.0f} %")
    if gaps:
        lines.append("- meta-init@default's map error relative to no-init@default: "
                     + ", ".join(gaps) + ".")  # fmt: skip
    return lines
