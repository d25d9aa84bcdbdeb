"""Aggregating the comparison and judging the meta-learning issue's targets.

Map accuracy is judged on maps, never on losses (a collapsed fit has a small L_ODE). Each fit
gets a *map error* = mean(1 - CBF r, 1 - Dice rCBF<30 %, 1 - Dice Tmax>6 s) (0 is perfect);
its *map accuracy* is 1 - map error. Targets, in this order:

1. at the default fit's budget (its stopping rule), meta-init has clearly lower map error than
   no-init: at least ``clear_margin`` (relative) lower on the patient mean, and lower on every
   patient;
2. the same at N, the initialisation's inner steps;
3. meta-init@N's map accuracy is within ``accuracy_tolerance`` of the best no-init arm's, at
   <= ``time_ratio`` of that arm's wall time;
4. the control (a random, untrained initialisation saved as a checkpoint) fails target 2, and
   meta-init@N is clearly better than it: the gain is the learned weights, not the loading path;
5. the learned prior replaces the patient's grid start: meta-init@N without the grid start has
   a mean map error no higher than no-init@N with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfusion.evaluation import MAP_ERROR_KEYS, map_error

REPORTED_KEYS = (*MAP_ERROR_KEYS, "tmax_mae", "cbf_mae")
"""Metrics shown per arm (Tmax MAE in s and CBF MAE in ml/100g/min stand beside the error)."""


@dataclass
class VerdictConfig:
    """Thresholds of the issue's targets (module docstring)."""

    clear_margin: float = 0.1
    """Target 1: meta-init's mean map error at most (1 - this) x no-init@N's, and lower on every patient."""
    accuracy_tolerance: float = 0.05
    """Target 2: meta-init's map accuracy >= (1 - this) x the best no-init arm's (5 %)."""
    time_ratio: float = 0.25
    """Target 2: meta-init's wall time <= this x the best no-init arm's (1/4)."""


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per arm: patient means of the metrics, map error and wall times (arm order kept).

    Each record holds ``arm``, ``kind``, ``steps``, ``patient``, ``wall_s``, ``wall_full_s``,
    ``extrapolated`` and ``metrics`` (``budget``, ``grid_start`` and ``steps_run`` when known).
    A row keeps ``errors`` per patient for the targets and ``steps_run``, the mean steps taken.
    """
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        row = rows.setdefault(
            record["arm"],
            {"kind": record["kind"], "steps": record["steps"], "extrapolated": record["extrapolated"],
             "budget": record.get("budget", "steps"), "grid_start": record.get("grid_start", True),
             "patients": [], "errors": [], "_metrics": [], "_wall": [], "_wall_full": [],
             "_run": []},
        )  # fmt: skip
        row["_run"].append(record.get("steps_run", record["steps"]))
        row["patients"].append(record["patient"])
        row["errors"].append(map_error(record["metrics"]))
        row["_metrics"].append(record["metrics"])
        row["_wall"].append(record["wall_s"])
        row["_wall_full"].append(record["wall_full_s"])
    for row in rows.values():
        metrics = row.pop("_metrics")
        row["metrics"] = {
            k: _mean([m.get(k, float("nan")) for m in metrics]) for k in REPORTED_KEYS
        }
        row["map_error"] = _mean(row["errors"])
        row["map_accuracy"] = 1.0 - row["map_error"]
        row["wall_s"] = _mean(row.pop("_wall"))
        row["wall_full_s"] = _mean(row.pop("_wall_full"))
        row["steps_run"] = _mean(row.pop("_run"))
    return rows


def clearly_lower(errors: list[float], reference: list[float], margin: float) -> bool:
    """Mean of ``errors`` <= (1 - margin) x mean of ``reference``, and lower patient by patient."""
    a, b = np.asarray(errors, float), np.asarray(reference, float)
    if a.size == 0 or a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    return bool(a.mean() <= (1.0 - margin) * b.mean() and (a < b).all())


def judge(rows: dict[str, dict[str, Any]], cfg: VerdictConfig) -> list[dict[str, Any]]:
    """The five targets as ``{target, passed, detail}`` (``passed`` None when an arm is missing)."""
    meta = _find(rows, "meta")
    if meta is None:
        return [{"target": "meta-init arm", "passed": None, "detail": "no meta-init arm was run"}]
    same = _find(rows, "noinit", steps=meta["steps"])
    control = _find(rows, "random")
    return [
        _target_clear(_find(rows, "meta", budget="default"),
                      _find(rows, "noinit", budget="default"), "default", cfg),
        _target_clear(meta, same, str(meta["steps"]), cfg),
        _target_budget(meta, rows, cfg),
        _target_control(meta, control, same, cfg),
        _target_grid(_find(rows, "meta", steps=meta["steps"], grid_start=False), same, meta),
    ]  # fmt: skip


def _target_clear(meta, same, budget: str, cfg: VerdictConfig) -> dict[str, Any]:
    name = f"meta-init@{budget} clearly lower map error than no-init@{budget}"
    if meta is None or same is None:
        return {
            "target": name,
            "passed": None,
            "detail": f"no meta-init@{budget} or no-init@{budget} arm",
        }
    passed = clearly_lower(meta["errors"], same["errors"], cfg.clear_margin)
    detail = (f"map error {meta['map_error']:.3f} vs {same['map_error']:.3f} "
              f"(needs <= {(1 - cfg.clear_margin) * same['map_error']:.3f} and lower on every patient: "
              f"{_pairs(meta['errors'], same['errors'])})")  # fmt: skip
    return {"target": name, "passed": passed, "detail": detail}


def _target_grid(no_grid, same, meta) -> dict[str, Any]:
    steps = meta["steps"]
    name = f"the prior replaces the grid start: meta-init@{steps} without it no worse than no-init@{steps} with it"
    if no_grid is None or same is None:
        return {"target": name, "passed": None, "detail": "no grid-start control arm"}
    passed = bool(no_grid["map_error"] <= same["map_error"])
    detail = (f"map error {no_grid['map_error']:.3f} without the grid start vs {same['map_error']:.3f} "
              f"(no-init@{steps}) and {meta['map_error']:.3f} (meta-init@{steps} with it)")  # fmt: skip
    return {"target": name, "passed": passed, "detail": detail}


def _target_budget(meta, rows, cfg: VerdictConfig) -> dict[str, Any]:
    name = (f"within {cfg.accuracy_tolerance:.0%} of the best no-init accuracy at "
            f"<= {cfg.time_ratio:g} of its wall time")  # fmt: skip
    candidates = [
        (a, r) for a, r in rows.items() if r["kind"] == "noinit" and math.isfinite(r["map_error"])
    ]
    if not candidates:
        return {"target": name, "passed": None, "detail": "no no-init arm with finite map error"}
    best_name, best = min(candidates, key=lambda item: item[1]["map_error"])
    accurate = meta["map_accuracy"] >= (1.0 - cfg.accuracy_tolerance) * best["map_accuracy"]
    fast = meta["wall_s"] <= cfg.time_ratio * best["wall_s"]
    detail = (f"best no-init is {best_name}: accuracy {meta['map_accuracy']:.3f} vs {best['map_accuracy']:.3f} "
              f"({'ok' if accurate else 'too low'}), wall {meta['wall_s']:.1f} s vs {best['wall_s']:.1f} s "
              f"= {meta['wall_s'] / max(best['wall_s'], 1e-9):.2f}x ({'ok' if fast else 'too slow'})")  # fmt: skip
    return {"target": name, "passed": bool(accurate and fast), "detail": detail}


def _target_control(meta, control, same, cfg: VerdictConfig) -> dict[str, Any]:
    name = (f"random-init control fails the target at {meta['steps']} steps and "
            f"meta-init@{meta['steps']} clearly beats it")  # fmt: skip
    if control is None or same is None:
        return {"target": name, "passed": None, "detail": "control or no-init@N arm not run"}
    control_passes = clearly_lower(control["errors"], same["errors"], cfg.clear_margin)
    meta_beats = clearly_lower(meta["errors"], control["errors"], cfg.clear_margin)
    detail = (f"random-init map error {control['map_error']:.3f} vs no-init {same['map_error']:.3f} "
              f"({'passes that target: suspicious' if control_passes else 'fails that target, as it must'}); "
              f"meta-init {meta['map_error']:.3f} {'clearly beats' if meta_beats else 'does not clearly beat'} it")  # fmt: skip
    return {"target": name, "passed": bool(not control_passes and meta_beats), "detail": detail}


def _find(rows, kind: str, steps: int | None = None, budget: str = "steps",
          grid_start: bool = True) -> dict[str, Any] | None:  # fmt: skip
    """The first row of ``kind`` with that budget and grid start (and ``steps``, when given)."""
    for row in rows.values():
        if (row["kind"], row["budget"], row["grid_start"]) == (kind, budget, grid_start) and (
            steps is None or row["steps"] == steps
        ):
            return row
    return None


def _pairs(a: list[float], b: list[float]) -> str:
    return ", ".join(
        f"{x:.3f}<{y:.3f}" if x < y else f"{x:.3f}>={y:.3f}" for x, y in zip(a, b, strict=True)
    )


def _mean(values: list[float]) -> float:
    array = np.asarray(values, dtype=float)
    return float(array.mean()) if array.size else float("nan")
