"""W&B sweep YAML: read, validate and hold a sweep definition.

The files under ``configs/sweeps/`` are standard Weights & Biases sweep configurations
(https://docs.wandb.ai/models/sweeps/sweep-config-keys), so ``wandb sweep FILE`` accepts them
unchanged. This module checks them without network or the optional ``sweeps`` package, naming
the offending key, and, when ``sweeps`` is installed, also against W&B's own JSON schema.

Nested ``parameters:`` blocks (W&B's ``param_dict``) are flattened to dotted names, which is how
the trial program receives them: ``--fields.encoding.n_levels=8``.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from perfusion.errors import PerfusionError

TOP_LEVEL_KEYS = frozenset(
    {
        "program", "method", "metric", "parameters", "early_terminate", "command", "name",
        "description", "project", "entity", "run_cap", "controller", "apiVersion", "kind", "job",
        "image_uri",
    }
)  # fmt: skip
METHODS = ("grid", "random", "bayes")
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# distribution -> (required keys, optional keys); mirrors the W&B schema's param_* definitions.
DISTRIBUTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "constant": (frozenset({"value"}), frozenset()),
    "categorical": (frozenset({"values"}), frozenset()),
    "categorical_w_probabilities": (frozenset({"values", "probabilities"}), frozenset()),
    "int_uniform": (frozenset({"min", "max"}), frozenset()),
    "uniform": (frozenset({"min", "max"}), frozenset()),
    "q_uniform": (frozenset({"min", "max"}), frozenset({"q"})),
    "log_uniform": (frozenset({"min", "max"}), frozenset()),
    "log_uniform_values": (frozenset({"min", "max"}), frozenset()),
    "q_log_uniform_values": (frozenset({"min", "max"}), frozenset({"q"})),
    "inv_log_uniform_values": (frozenset({"min", "max"}), frozenset()),
    "normal": (frozenset(), frozenset({"mu", "sigma"})),
    "q_normal": (frozenset(), frozenset({"mu", "sigma", "q"})),
    "log_normal": (frozenset(), frozenset({"mu", "sigma"})),
}
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")
POSITIVE_BOUNDS = ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values")
# W&B's default when a sweep has no `command:` (wandb_agent.py).
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


@dataclass(frozen=True)
class Metric:
    """The quantity a sweep optimises: a key of the trial's W&B summary."""

    name: str
    goal: str = "minimize"
    target: float | None = None

    def better(self, a: float, b: float) -> bool:
        """True if value ``a`` is strictly better than ``b`` under ``goal``."""
        return a > b if self.goal == "maximize" else a < b


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep definition.

    Attributes:
        name: sweep name (YAML ``name``, else the file stem); groups and tags the trials' runs.
        method: ``grid``, ``random`` or ``bayes``.
        parameters: flat dotted parameter name -> its W&B parameter block, with ``distribution``
            filled in as W&B infers it (``values`` -> categorical, integer min/max ->
            int_uniform, real min/max -> uniform, ``value`` -> constant).
        metric: what to optimise (required for bayes and hyperband).
        command: the trial command with W&B macros (``${args}``, ``${env}``, ...).
        program: the YAML's ``program``.
        early_terminate: the hyperband block, or None.
        run_cap: the YAML's ``run_cap``, or None.
        raw: the YAML as plain Python values (what W&B's schema checks).
        path: the file read.
    """

    name: str
    method: str
    parameters: dict[str, dict[str, Any]]
    metric: Metric | None = None
    command: tuple[str, ...] = DEFAULT_COMMAND
    program: str | None = None
    early_terminate: dict[str, Any] | None = None
    run_cap: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML; raise :class:`PerfusionError` naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PerfusionError(f"cannot read sweep file: {exc.strerror}", path) from None
    except yaml.YAMLError as exc:
        raise PerfusionError(f"unreadable YAML: {str(exc).splitlines()[0]}", path) from None
    return parse_spec(raw, path)


def parse_spec(raw: Any, path: Path | None = None) -> SweepSpec:
    """Validate a sweep definition already parsed from YAML (see :func:`load_spec`)."""
    if not isinstance(raw, dict):
        raise PerfusionError("sweep file must be a mapping of W&B sweep keys", path)
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise PerfusionError(f"unknown sweep key '{unknown[0]}'", path)
    method = raw.get("method")
    if method not in METHODS:
        raise PerfusionError(f"key 'method': expected one of {METHODS}, got {method!r}", path)
    parameters = _flatten_parameters(raw.get("parameters"), "parameters", path)
    metric = _parse_metric(raw.get("metric"), path)
    early = _parse_early_terminate(raw.get("early_terminate"), path)
    if (method == "bayes" or early) and metric is None:
        raise PerfusionError(
            f"key 'metric' is required for method {method} / early_terminate", path
        )
    if method == "grid":
        for name, block in parameters.items():
            if block["distribution"] not in GRID_DISTRIBUTIONS:
                raise PerfusionError(
                    f"key 'parameters.{name}': grid search needs values, value, int_uniform or "
                    f"q_uniform, not {block['distribution']}",
                    path,
                )
    return SweepSpec(
        name=str(raw.get("name") or (path.stem if path else "sweep")),
        method=method,
        parameters=parameters,
        metric=metric,
        command=_parse_command(raw, path),
        program=raw.get("program"),
        early_terminate=early,
        run_cap=_positive_int(raw.get("run_cap"), "run_cap", path),
        raw=raw,
        path=path,
    )


def _flatten_parameters(block: Any, where: str, path: Path | None) -> dict[str, dict[str, Any]]:
    """Nested W&B ``parameters`` -> {dotted name: parameter block with its distribution}."""
    if not isinstance(block, dict) or not block:
        raise PerfusionError(f"key '{where}': expected a non-empty mapping of parameters", path)
    flat: dict[str, dict[str, Any]] = {}
    for name, param in block.items():
        key = f"{where}.{name}"
        if not isinstance(name, str) or not PARAM_NAME.match(name):
            raise PerfusionError(f"key '{key}': parameter names are letters, digits, _ . -", path)
        if not isinstance(param, dict):
            raise PerfusionError(f"key '{key}': expected a mapping (value, values, min/max)", path)
        if set(param) == {"parameters"}:
            nested = _flatten_parameters(param["parameters"], f"{key}.parameters", path)
            flat.update({f"{name}.{sub}": p for sub, p in nested.items()})
        else:
            flat[name] = check_parameter(param, key, path)
    return flat


def check_parameter(param: dict[str, Any], key: str, path: Path | None = None) -> dict[str, Any]:
    """Validate one parameter block and return it with ``distribution`` filled in."""
    dist = param.get("distribution") or _infer_distribution(param, key, path)
    if dist not in DISTRIBUTIONS:
        raise PerfusionError(f"key '{key}.distribution': unsupported {dist!r}", path)
    required, optional = DISTRIBUTIONS[dist]
    extra = sorted(set(param) - required - optional - {"distribution"})
    if extra:
        raise PerfusionError(f"key '{key}.{extra[0]}': not allowed for distribution {dist}", path)
    missing = sorted(required - set(param))
    if missing:
        raise PerfusionError(f"key '{key}.{missing[0]}': required for distribution {dist}", path)
    _check_values(param, dist, key, path)
    return {**param, "distribution": dist}


def _infer_distribution(param: dict[str, Any], key: str, path: Path | None) -> str:
    """W&B's inference: value -> constant, values -> categorical, int/real min-max."""
    if "value" in param:
        return "constant"
    if "values" in param:
        return "categorical_w_probabilities" if "probabilities" in param else "categorical"
    if "min" in param and "max" in param:
        ints = all(
            isinstance(param[k], int) and not isinstance(param[k], bool) for k in ("min", "max")
        )
        return "int_uniform" if ints else "uniform"
    raise PerfusionError(f"key '{key}': give value, values, or min and max", path)


def _check_values(param: dict[str, Any], dist: str, key: str, path: Path | None) -> None:
    """Bounds, list lengths and probabilities, as W&B checks them."""
    if "values" in param and (not isinstance(param["values"], list) or not param["values"]):
        raise PerfusionError(f"key '{key}.values': expected a non-empty list", path)
    if dist == "categorical_w_probabilities":
        probs = param["probabilities"]
        if not isinstance(probs, list) or len(probs) != len(param["values"]):
            raise PerfusionError(f"key '{key}.probabilities': one per value", path)
        if any(not _is_number(p) or p < 0 for p in probs) or not math.isclose(sum(probs), 1.0):
            raise PerfusionError(f"key '{key}.probabilities': non-negative, summing to 1", path)
    for bound in ("min", "max", "q", "mu", "sigma"):
        if bound in param and not _is_number(param[bound]):
            raise PerfusionError(f"key '{key}.{bound}': expected a number", path)
    if dist == "int_uniform" and not all(isinstance(param[b], int) for b in ("min", "max")):
        raise PerfusionError(f"key '{key}.min': int_uniform needs integer bounds", path)
    if "min" in param and param["min"] >= param["max"]:
        raise PerfusionError(f"key '{key}.min': min {param['min']} is not less than max", path)
    if dist in POSITIVE_BOUNDS and param["min"] <= 0:
        raise PerfusionError(f"key '{key}.min': {dist} needs min > 0", path)
    if param.get("q", 1) <= 0 or param.get("sigma", 1) < 0:
        raise PerfusionError(f"key '{key}': q must be > 0 and sigma >= 0", path)


def _parse_metric(block: Any, path: Path | None) -> Metric | None:
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("name"), str):
        raise PerfusionError("key 'metric.name': required (the summary key to optimise)", path)
    extra = sorted(set(block) - {"name", "goal", "target", "impute", "impute_while_running"})
    if extra:
        raise PerfusionError(f"key 'metric.{extra[0]}': unknown", path)
    goal = block.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        raise PerfusionError(f"key 'metric.goal': minimize or maximize, not {goal!r}", path)
    target = block.get("target")
    if target is not None and not _is_number(target):
        raise PerfusionError("key 'metric.target': expected a number", path)
    return Metric(block["name"], goal, None if target is None else float(target))


def _parse_early_terminate(block: Any, path: Path | None) -> dict[str, Any] | None:
    """Hyperband block with W&B's defaults (eta 3, strict true)."""
    if block is None:
        return None
    if not isinstance(block, dict) or block.get("type") != "hyperband":
        raise PerfusionError("key 'early_terminate.type': only hyperband is supported", path)
    extra = sorted(set(block) - {"type", "min_iter", "max_iter", "s", "eta", "strict"})
    if extra:
        raise PerfusionError(f"key 'early_terminate.{extra[0]}': unknown", path)
    if "min_iter" not in block and not ("max_iter" in block and "s" in block):
        raise PerfusionError("key 'early_terminate': give min_iter, or max_iter and s", path)
    for key in ("min_iter", "max_iter"):
        if key in block:
            _positive_int(block[key], f"early_terminate.{key}", path)
    eta = block.get("eta", 3)
    if not _is_number(eta) or eta <= 1:
        raise PerfusionError("key 'early_terminate.eta': a number > 1", path)
    if not isinstance(block.get("strict", True), bool):
        raise PerfusionError("key 'early_terminate.strict': true or false", path)
    return {"eta": eta, "strict": True, **block}


def _parse_command(raw: dict[str, Any], path: Path | None) -> tuple[str, ...]:
    command = raw.get("command")
    if command is None:
        if not raw.get("program"):
            raise PerfusionError("key 'program': required when there is no 'command'", path)
        return DEFAULT_COMMAND
    if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
        raise PerfusionError("key 'command': expected a non-empty list of strings", path)
    return tuple(command)


def _positive_int(value: Any, key: str, path: Path | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PerfusionError(f"key '{key}': expected a positive integer", path)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def wandb_schema_errors(raw: dict[str, Any]) -> list[str] | None:
    """Violations of W&B's own sweep JSON schema, or None when ``sweeps`` is not installed.

    Uses the ``sweeps`` package (W&B's open-source sweep engine, optional extra ``sweeps``).
    """
    sweeps = import_sweeps()
    if sweeps is None:
        return None
    return list(sweeps.schema_violations_from_proposed_config(raw))


def import_sweeps() -> ModuleType | None:
    """The optional ``sweeps`` package, or None; its pydantic-v1 config warning is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            import sweeps
        except ImportError:
            return None
    return sweeps
