"""Sweep results: a sorted table (Markdown + JSON), the best configuration as a ready YAML, and
the speed/accuracy figure with its Pareto front, from the study's trials.

The figure plots every trial's fit wall time per volume (``time/wall_s``) against the sweep's
accuracy metric; a trial is on the Pareto front when no other finished trial is both at least as
fast and at least as accurate, and strictly better in one. The reference trial (the program's
defaults, i.e. the paper's Table 2 configuration for the fit) is drawn as a star.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import yaml
from optuna.trial import FrozenTrial

from perfusion.io import write_bytes_atomic, write_json_atomic, write_text_atomic
from perfusion.sweeps.driver import REFERENCE_ID
from perfusion.sweeps.spec import SweepSpec

STATE_ORDER = {"finished": 0, "stopped": 1, "failed": 2, "running": 3}
EXTRA_COLUMNS = (
    "eval/map_error",
    "eval/cbf_r",
    "eval/tmax_mae_s",
    "eval/rcbf30_dice",
    "eval/tmax6_dice",
    "val/rms_hu",
)


def rows(spec: SweepSpec, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
    """One row per trial, sorted: finished by metric (best first), then stopped, failed, running.

    A pruned (stopped) trial's metric is the last value it reported."""
    out = []
    for trial in trials:
        attrs = trial.user_attrs
        metrics, config = attrs.get("metrics", {}), attrs.get("config", trial.params)
        if attrs.get("id") == REFERENCE_ID and "folder" in attrs:
            saved = Path(attrs["folder"]) / "out" / "config.yaml"
            config = {**resolved_values(saved, spec.distributions), **config}
        out.append(
            {
                "id": attrs.get("id", f"{trial.number:03d}"),
                "state": attrs.get("state", "running"),
                "config": config,
                "metric": trial.value,
                "wall_s": metrics.get("time/wall_s"),
                "n_params": metrics.get("model/n_params"),
                "metrics": metrics,
            }
        )
    sign = -1.0 if spec.goal == "maximize" else 1.0

    def key(row: dict[str, Any]) -> tuple[int, float, str]:
        value = row["metric"]
        score = (
            sign * value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf
        )
        return STATE_ORDER.get(row["state"], 9), score, row["id"]

    return sorted(out, key=key)


def resolved_values(config_yaml: Path, names: dict[str, Any]) -> dict[str, Any]:
    """The values a program actually used for the swept keys (from its saved ``config.yaml``)."""
    if not config_yaml.is_file():
        return {}
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(config_yaml)
    values = {n: OmegaConf.select(cfg, n, default=None) for n in names}
    return {n: v for n, v in values.items() if v is not None and not OmegaConf.is_config(v)}


def pareto_ids(table: list[dict[str, Any]], goal: str) -> set[str]:
    """Finished trials no other finished trial beats on both wall time and metric."""
    sign = -1.0 if goal == "maximize" else 1.0
    points = [
        (r["id"], float(r["wall_s"]), sign * float(r["metric"]))
        for r in table
        if r["state"] == "finished" and _num(r["metric"]) and _num(r["wall_s"])
    ]
    front = set()
    for tid, t, m in points:
        dominated = any(t2 <= t and m2 <= m and (t2 < t or m2 < m) for _, t2, m2 in points)
        if not dominated:
            front.add(tid)
    return front


def best_row(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best finished trial (the table is sorted), or None."""
    done = [r for r in table if r["state"] == "finished" and _num(r["metric"])]
    return done[0] if done else None


def nested(config: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (sweep parameter names are config key paths)."""
    out: dict[str, Any] = {}
    for dotted, value in sorted(config.items()):
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def markdown(spec: SweepSpec, table: list[dict[str, Any]], sampler: str, command: str) -> str:
    """The results table as Markdown, with the command that made it and how to read it."""
    metric, constants = spec.metric, spec.constants
    names = sorted({k for r in table for k in r["config"]} - set(constants))
    extras = [c for c in EXTRA_COLUMNS if c != metric and any(c in r["metrics"] for r in table)]
    head = ["trial", "state", f"{metric} ({spec.goal})", "wall s", "params", *extras, *names]
    lines = [
        f"# Sweep `{spec.name}`",
        "",
        f"Command: `{command}`",
        "",
        f"Definition `{spec.path}`; method {spec.method}, run by Optuna ({sampler}); "
        f"{len(table)} trials, best first. `ref` = the program's defaults (paper Table 2).",
        "Keys are documented in perfusion/sweeps/objective.py.",
        "Fixed for every trial: "
        + (", ".join(f"`{k}={v}`" for k, v in sorted(constants.items())) or "nothing")
        + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table:
        cells = [r["id"], r["state"], _fmt(r["metric"]), _fmt(r["wall_s"]), _fmt(r["n_params"])]
        cells += [_fmt(r["metrics"].get(c)) for c in extras]
        cells += [_fmt(r["config"].get(n, "default")) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_config_yaml(spec: SweepSpec, row: dict[str, Any]) -> str:
    """The best trial's parameters as a config file ``perfusion fit ... config=<it>`` accepts."""
    header = (
        f"# Best configuration of sweep '{spec.name}' ({spec.path}): trial {row['id']},\n"
        f"# {spec.metric} = {_fmt(row['metric'])}, "
        f"wall time {_fmt(row['wall_s'])} s. Written by `perfusion sweep`.\n"
    )
    return header + yaml.safe_dump(nested(row["config"]), sort_keys=True)


def figure_png(spec: SweepSpec, table: list[dict[str, Any]]) -> bytes:
    """Wall time vs metric, Pareto front joined, reference trial starred; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goal = spec.goal
    front = pareto_ids(table, goal)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for r in table:
        if not (_num(r["metric"]) and _num(r["wall_s"])):
            continue
        style = {"finished": "o", "stopped": "x"}.get(r["state"], "s")
        color = "tab:red" if r["id"] in front else "tab:gray"
        marker = "*" if r["id"] == REFERENCE_ID else style
        size = 220 if r["id"] == REFERENCE_ID else 40
        ax.scatter(r["wall_s"], r["metric"], marker=marker, s=size, c=color, zorder=3)
        ax.annotate(
            r["id"],
            (r["wall_s"], r["metric"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    pts = sorted((r["wall_s"], r["metric"]) for r in table if r["id"] in front)
    if pts:
        # the front as a staircase: the best metric reachable within each time budget
        ax.step(*zip(*pts, strict=True), where="post", color="tab:red", lw=1, label="Pareto front")
    if any(r["id"] == REFERENCE_ID for r in table):
        ax.scatter([], [], marker="*", s=120, c="k", label="paper config (program defaults)")
    ax.set_xlabel("fit wall time per volume (s)")
    ax.set_ylabel(f"{spec.metric} ({goal})")
    ax.set_title(f"sweep {spec.name}: speed vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(
    spec: SweepSpec,
    trials: list[FrozenTrial],
    results_dir: Path,
    best_dir: Path,
    sampler: str,
    command: str,
) -> dict[str, Path]:
    """Write ``sweep-<name>/{README.md,trials.json,speed_accuracy.png}`` under ``results_dir``
    and ``best-<name>.yaml`` under ``best_dir``; return their paths."""
    table = rows(spec, trials)
    folder = Path(results_dir) / f"sweep-{spec.name}"
    paths = {
        "json": write_json_atomic(folder / "trials.json", {
            "sweep": spec.name, "definition": str(spec.path), "method": spec.method,
            "sampler": sampler, "command": command,
            "metric": {"name": spec.metric, "goal": spec.goal, "target": spec.target},
            "pareto": sorted(pareto_ids(table, spec.goal)), "trials": table,
        }),
        "md": write_text_atomic(folder / "README.md", markdown(spec, table, sampler, command)),
        "png": write_bytes_atomic(folder / "speed_accuracy.png", figure_png(spec, table)),
    }  # fmt: skip
    best = best_row(table)
    if best is not None:
        paths["best"] = write_text_atomic(
            Path(best_dir) / f"best-{spec.name}.yaml", best_config_yaml(spec, best)
        )
    return paths


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def log_report(spec: SweepSpec, paths: dict[str, Path], project: str, sweep_dir: Path) -> None:
    """Log the results table and figure to one W&B run (group = sweep name, offline by default)."""
    import json

    import wandb

    table = json.loads(paths["json"].read_text())["trials"]
    run = wandb.init(
        project=project, group=spec.name, job_type="sweep-report", dir=str(sweep_dir),
        tags=["sweep", f"sweep:{spec.name}"], name=f"{spec.name}-report", reinit="finish_previous",
    )  # fmt: skip
    columns = ["id", "state", "metric", "wall_s", "n_params", "config"]
    data = [
        [r["id"], r["state"], r["metric"], r["wall_s"], r["n_params"], json.dumps(r["config"])]
        for r in table
    ]
    run.log(
        {
            "sweep/trials": wandb.Table(columns=columns, data=data),
            "sweep/speed_accuracy": wandb.Image(str(paths["png"])),
        }
    )
    run.finish()
