"""W&B sweep YAML -> a sweep definition with Optuna distributions.

The files under ``configs/sweeps/`` are standard Weights & Biases sweep configurations
(https://docs.wandb.ai/models/sweeps/sweep-config-keys), so ``wandb sweep FILE`` accepts them
unchanged. The local driver reads them here, naming the offending key of a file it cannot run.
Nested ``parameters:`` blocks are flattened to dotted names, which is how the trial program
receives them: ``--fields.encoding.n_levels=8``.

A parameter becomes an Optuna distribution by W&B's inference (``value`` -> constant, ``values``
-> categorical, integer ``min``/``max`` -> int_uniform, real ones -> uniform) or its explicit
``distribution``: ``q_uniform`` -> a stepped distribution, ``log_uniform_values`` and
``inv_log_uniform_values`` -> log-uniform on [min, max] (the same law), ``log_uniform`` ->
log-uniform on [e^min, e^max]. W&B's unbounded (normal) and weighted distributions have no
Optuna equivalent and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from perfusion.errors import PerfusionError

TOP_LEVEL_KEYS = frozenset(
    {
        "program", "method", "metric", "parameters", "early_terminate", "command", "name",
        "description", "project", "entity", "run_cap", "controller", "apiVersion", "kind", "job",
        "image_uri",
    }
)  # fmt: skip
METHODS = ("grid", "random", "bayes")
# distribution -> the keys its block may hold (besides `distribution`)
KEYS = {
    "constant": {"value"},
    "categorical": {"values"},
    "int_uniform": {"min", "max"},
    "uniform": {"min", "max"},
    "q_uniform": {"min", "max", "q"},
    "log_uniform": {"min", "max"},
    "log_uniform_values": {"min", "max"},
    "inv_log_uniform_values": {"min", "max"},
}
HYPERBAND_KEYS = {"type", "min_iter", "max_iter", "s", "eta", "strict"}
# W&B's default when a sweep has no `command:` (wandb_agent.py).
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


@dataclass(frozen=True)
class SweepSpec:
    """A sweep the local driver can run.

    Attributes:
        name: sweep name (YAML ``name``, else the file stem); groups and tags the trials' runs.
        method: ``grid``, ``random`` or ``bayes``.
        metric: the summary key the trials are ranked on; ``goal``: minimize or maximize;
            ``target``: the sweep ends once a trial reaches it (or None).
        distributions: swept dotted parameter name -> its Optuna distribution.
        constants: dotted parameter name -> the value every trial passes.
        command: the trial command with W&B macros (``${args}``, ``${env}``, ...).
        program: the YAML's ``program``.
        hyperband: keyword arguments of Optuna's HyperbandPruner, or None.
        run_cap: the YAML's ``run_cap``, or None.
        raw: the YAML as plain Python values (its digest names the study).
        path: the file read.
    """

    name: str
    method: str
    metric: str
    goal: str = "minimize"
    target: float | None = None
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    command: tuple[str, ...] = DEFAULT_COMMAND
    program: str | None = None
    hyperband: dict[str, Any] | None = None
    run_cap: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep YAML; raise :class:`PerfusionError` naming the file and the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PerfusionError(f"cannot read sweep file: {exc.strerror}", path) from None
    except yaml.YAMLError as exc:
        raise PerfusionError(f"unreadable YAML: {str(exc).splitlines()[0]}", path) from None
    return parse_spec(raw, path)


def parse_spec(raw: Any, path: Path | None = None) -> SweepSpec:
    """A sweep definition already parsed from YAML (see :func:`load_spec`)."""
    if not isinstance(raw, dict):
        raise PerfusionError("sweep file must be a mapping of W&B sweep keys", path)
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise PerfusionError(f"unknown sweep key '{unknown[0]}'", path)
    method = raw.get("method")
    if method not in METHODS:
        raise PerfusionError(f"key 'method': expected one of {METHODS}, got {method!r}", path)
    metric = raw.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise PerfusionError("key 'metric.name': required (the summary key to optimise)", path)
    extra = sorted(set(metric) - {"name", "goal", "target", "impute", "impute_while_running"})
    if extra or metric.get("goal", "minimize") not in ("minimize", "maximize"):
        raise PerfusionError(f"key 'metric.{(extra or ['goal'])[0]}': unknown or invalid", path)
    target = metric.get("target")
    if target is not None and not _is_number(target):
        raise PerfusionError("key 'metric.target': expected a number", path)
    blocks = _flatten(raw.get("parameters"), "parameters", path)
    constants = {n: b["value"] for n, b in blocks.items() if _kind(b, n, path) == "constant"}
    distributions = {n: distribution(b, n, path) for n, b in blocks.items() if n not in constants}
    if method == "grid":
        for name, dist in distributions.items():
            grid_values(dist, name, path)
    command = raw.get("command")
    if command is None and not raw.get("program"):
        raise PerfusionError("key 'program': required when there is no 'command'", path)
    if command is not None and not (
        isinstance(command, list) and command and all(isinstance(w, str) for w in command)
    ):
        raise PerfusionError("key 'command': expected a non-empty list of strings", path)
    run_cap = raw.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or run_cap < 1):
        raise PerfusionError("key 'run_cap': expected a positive integer", path)
    return SweepSpec(
        name=str(raw.get("name") or (path.stem if path else "sweep")),
        method=method,
        metric=metric["name"],
        goal=metric.get("goal", "minimize"),
        target=None if target is None else float(target),
        distributions=distributions,
        constants=constants,
        command=tuple(command) if command else DEFAULT_COMMAND,
        program=raw.get("program"),
        hyperband=_hyperband(raw.get("early_terminate"), path),
        run_cap=run_cap,
        raw=raw,
        path=path,
    )


def distribution(block: dict[str, Any], name: str, path: Path | None = None) -> BaseDistribution:
    """The Optuna distribution of one (non-constant) W&B parameter block."""
    kind, key = _kind(block, name, path), f"parameters.{name}"
    if kind == "categorical":
        if not isinstance(block["values"], list) or not block["values"]:
            raise PerfusionError(f"key '{key}.values': expected a non-empty list", path)
        return CategoricalDistribution(block["values"])
    lo, hi, q = block["min"], block["max"], block.get("q")
    if not all(_is_number(v) for v in (lo, hi, q or 1)):
        raise PerfusionError(f"key '{key}.min': min, max and q must be numbers", path)
    ints = all(isinstance(v, int) for v in (lo, hi, q or 1))
    try:
        if kind == "int_uniform" or (kind == "q_uniform" and ints):
            if not ints:
                raise ValueError("int_uniform needs integer bounds")
            return IntDistribution(lo, hi, step=q or 1)
        if kind in ("uniform", "q_uniform"):
            return FloatDistribution(lo, hi, step=None if kind == "uniform" else float(q or 1.0))
        if kind == "log_uniform":
            return FloatDistribution(math.exp(lo), math.exp(hi), log=True)
        return FloatDistribution(lo, hi, log=True)  # log_uniform_values, inv_log_uniform_values
    except ValueError as exc:
        raise PerfusionError(f"key '{key}.min': {exc}", path) from None


def grid_values(dist: BaseDistribution, name: str = "", path: Path | None = None) -> list[Any]:
    """The values one parameter contributes to a grid: its choices, or every step of min..max."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if dist.step is None:
        raise PerfusionError(
            f"key 'parameters.{name}': grid search needs values, value, int_uniform or q_uniform",
            path,
        )
    n = round((dist.high - dist.low) / dist.step)
    return [type(dist.low)(round(dist.low + i * dist.step, 12)) for i in range(n + 1)]


def _kind(block: dict[str, Any], name: str, path: Path | None) -> str:
    """W&B's distribution of a block (given or inferred), its keys checked."""
    key = f"parameters.{name}"
    kind = block.get("distribution")
    if kind is None:
        if "value" in block or "values" in block:
            kind = "constant" if "value" in block else "categorical"
        elif "min" in block and "max" in block:
            ints = all(type(block[k]) is int for k in ("min", "max"))
            kind = "int_uniform" if ints else "uniform"
        else:
            raise PerfusionError(f"key '{key}': give value, values, or min and max", path)
    if kind not in KEYS:
        raise PerfusionError(
            f"key '{key}.distribution': {kind!r} is not one of {sorted(KEYS)} (Optuna's)", path
        )
    extra = sorted(set(block) - KEYS[kind] - {"distribution"})
    missing = sorted(KEYS[kind] - {"q"} - set(block))
    if extra or missing:
        problem = "not allowed" if extra else "required"
        raise PerfusionError(f"key '{key}.{(extra or missing)[0]}': {problem} for {kind}", path)
    return kind


def _flatten(block: Any, where: str, path: Path | None) -> dict[str, dict[str, Any]]:
    """Nested W&B ``parameters`` -> {dotted name: parameter block}."""
    if not isinstance(block, dict) or not block:
        raise PerfusionError(f"key '{where}': expected a non-empty mapping of parameters", path)
    flat: dict[str, dict[str, Any]] = {}
    for name, param in block.items():
        if not isinstance(param, dict):
            raise PerfusionError(f"key '{where}.{name}': expected a mapping", path)
        if set(param) == {"parameters"}:
            nested = _flatten(param["parameters"], f"{where}.{name}.parameters", path)
            flat.update({f"{name}.{sub}": p for sub, p in nested.items()})
        else:
            flat[str(name)] = param
    return flat


def _hyperband(block: Any, path: Path | None) -> dict[str, Any] | None:
    """W&B's hyperband block -> HyperbandPruner arguments (iterations = reports of the metric)."""
    if block is None:
        return None
    if not isinstance(block, dict) or block.get("type") != "hyperband":
        raise PerfusionError("key 'early_terminate.type': only hyperband is supported", path)
    extra = sorted(set(block) - HYPERBAND_KEYS)
    if extra:
        raise PerfusionError(f"key 'early_terminate.{extra[0]}': unknown", path)
    eta, max_iter = block.get("eta", 3), block.get("max_iter")
    if not isinstance(eta, int) or eta < 2:
        raise PerfusionError("key 'early_terminate.eta': an integer >= 2 (Optuna's)", path)
    if "min_iter" in block:
        min_iter = block["min_iter"]
    elif max_iter is not None and "s" in block:
        min_iter = max(1, int(max_iter / eta ** block["s"]))
    else:
        raise PerfusionError("key 'early_terminate': give min_iter, or max_iter and s", path)
    for key, value in (("min_iter", min_iter), ("max_iter", max_iter or 1)):
        if not isinstance(value, int) or value < 1:
            raise PerfusionError(f"key 'early_terminate.{key}': a positive integer", path)
    return {"min_resource": min_iter, "max_resource": max_iter or "auto", "reduction_factor": eta}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
