"""Aggregating the comparison and judging the meta-learning issue's targets.

Map accuracy is judged on maps, never on losses (a collapsed fit has a small L_ODE). Each fit
gets a *map error* = mean(1 - CBF r, 1 - Dice rCBF<30 %, 1 - Dice Tmax>6 s) (0 is perfect);
its *map accuracy* is 1 - map error. Targets (issue 6):

1. meta-init@N has clearly lower map error than no-init@N: at least ``clear_margin`` (relative)
   lower on the patient mean, and lower on every patient;
2. meta-init@N's map accuracy is within ``accuracy_tolerance`` of the best no-init arm's, at
   <= ``time_ratio`` of that arm's wall time;
3. the control (a random, untrained initialisation saved as a checkpoint) fails target 1, and
   meta-init@N is clearly better than it: the gain is the learned weights, not the loading path.
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
    ``extrapolated`` and ``metrics``. A row keeps ``errors`` per patient for target 1.
    """
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        row = rows.setdefault(
            record["arm"],
            {"kind": record["kind"], "steps": record["steps"], "extrapolated": record["extrapolated"],
             "patients": [], "errors": [], "_metrics": [], "_wall": [], "_wall_full": []},
        )  # fmt: skip
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
    return rows


def clearly_lower(errors: list[float], reference: list[float], margin: float) -> bool:
    """Mean of ``errors`` <= (1 - margin) x mean of ``reference``, and lower patient by patient."""
    a, b = np.asarray(errors, float), np.asarray(reference, float)
    if a.size == 0 or a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    return bool(a.mean() <= (1.0 - margin) * b.mean() and (a < b).all())


def judge(rows: dict[str, dict[str, Any]], cfg: VerdictConfig) -> list[dict[str, Any]]:
    """The three targets as ``{target, passed, detail}`` (``passed`` None when an arm is missing)."""
    meta = _only(rows, "meta")
    if meta is None:
        return [{"target": "meta-init arm", "passed": None, "detail": "no meta-init arm was run"}]
    same = _no_init_at(rows, meta["steps"])
    control = _only(rows, "random")
    return [_target_clear(meta, same, cfg), _target_budget(meta, rows, cfg),
            _target_control(meta, control, same, cfg)]  # fmt: skip


def _target_clear(meta, same, cfg: VerdictConfig) -> dict[str, Any]:
    name = f"meta-init@{meta['steps']} clearly lower map error than no-init@{meta['steps']}"
    if same is None:
        return {"target": name, "passed": None, "detail": f"no no-init@{meta['steps']} arm"}
    passed = clearly_lower(meta["errors"], same["errors"], cfg.clear_margin)
    detail = (f"map error {meta['map_error']:.3f} vs {same['map_error']:.3f} "
              f"(needs <= {(1 - cfg.clear_margin) * same['map_error']:.3f} and lower on every patient: "
              f"{_pairs(meta['errors'], same['errors'])})")  # fmt: skip
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
    name = "random-init control fails target 1 and meta-init clearly beats it"
    if control is None or same is None:
        return {"target": name, "passed": None, "detail": "control or no-init@N arm not run"}
    control_passes = clearly_lower(control["errors"], same["errors"], cfg.clear_margin)
    meta_beats = clearly_lower(meta["errors"], control["errors"], cfg.clear_margin)
    detail = (f"random-init map error {control['map_error']:.3f} vs no-init {same['map_error']:.3f} "
              f"({'passes target 1: suspicious' if control_passes else 'fails target 1, as it must'}); "
              f"meta-init {meta['map_error']:.3f} {'clearly beats' if meta_beats else 'does not clearly beat'} it")  # fmt: skip
    return {"target": name, "passed": bool(not control_passes and meta_beats), "detail": detail}


def _only(rows, kind: str) -> dict[str, Any] | None:
    found = [r for r in rows.values() if r["kind"] == kind]
    return found[0] if found else None


def _no_init_at(rows, steps: int) -> dict[str, Any] | None:
    found = [r for r in rows.values() if r["kind"] == "noinit" and r["steps"] == steps]
    return found[0] if found else None


def _pairs(a: list[float], b: list[float]) -> str:
    return ", ".join(
        f"{x:.3f}<{y:.3f}" if x < y else f"{x:.3f}>={y:.3f}" for x, y in zip(a, b, strict=True)
    )


def _mean(values: list[float]) -> float:
    array = np.asarray(values, dtype=float)
    return float(array.mean()) if array.size else float("nan")
