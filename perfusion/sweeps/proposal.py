"""Trial proposal with W&B sweep semantics: grid, random, and bayes through ``sweeps``.

Grid and random are built in, so tests and ``make sweep`` never need the optional package:

- grid: the cartesian product of every parameter's values, parameters in sorted name order with
  the last varying fastest; ``int_uniform`` contributes ``min..max`` and ``q_uniform``
  ``arange(min, max, q)`` (max excluded), as in ``sweeps/grid_search.py``. Trial ``i`` is grid
  point ``i``, so a resumed or shared sweep never proposes a point twice.
- random: every parameter drawn from its distribution with a generator seeded by
  ``(seed, trial index)``, so trial ``i`` gets the same configuration whichever process runs it.
- bayes: W&B's Gaussian-process engine (``sweeps.next_run``) fed the finished trials; without
  the ``sweeps`` package it falls back to random search and says so (:func:`proposer_name`).

Values are plain Python scalars (numpy scalars from ``sweeps`` are converted with ``.item()``),
ready for omegaconf.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from perfusion.sweeps.spec import SweepSpec, import_sweeps

log = logging.getLogger(__name__)


def grid_values(block: dict[str, Any]) -> list[Any]:
    """The discrete values one parameter contributes to a grid (W&B's expansion)."""
    dist = block["distribution"]
    if dist == "constant":
        return [block["value"]]
    if dist == "categorical":
        return list(block["values"])
    if dist == "int_uniform":
        return list(range(block["min"], block["max"] + 1))
    if dist == "q_uniform":
        return [_plain(v) for v in np.arange(block["min"], block["max"], block.get("q", 1.0))]
    raise ValueError(f"distribution {dist} has no grid")


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every grid configuration in W&B's order (names sorted, last name varies fastest)."""
    names = sorted(spec.parameters)
    values = [grid_values(spec.parameters[n]) for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def sample_parameter(block: dict[str, Any], rng: np.random.Generator) -> Any:
    """One draw from a W&B parameter distribution, as a plain Python value.

    ``log_uniform`` takes exponents as bounds (W&B v1); ``log_uniform_values`` and
    ``inv_log_uniform_values`` take the values themselves, and both are log-uniform on
    [min, max] (the inverse form draws 1/X log-uniformly on [1/max, 1/min], the same law).
    ``q_*`` round to multiples of q, integers when q is an integer.
    """
    dist = block["distribution"]
    lo, hi = block.get("min"), block.get("max")
    mu, sigma = block.get("mu", 0.0), block.get("sigma", 1.0)
    if dist == "constant":
        return block["value"]
    if dist == "categorical":
        return block["values"][int(rng.integers(len(block["values"])))]
    if dist == "categorical_w_probabilities":
        return block["values"][int(rng.choice(len(block["values"]), p=block["probabilities"]))]
    if dist == "int_uniform":
        return int(rng.integers(lo, hi + 1))
    draws = {
        "uniform": lambda: rng.uniform(lo, hi),
        "q_uniform": lambda: rng.uniform(lo, hi),
        "log_uniform": lambda: math.exp(rng.uniform(lo, hi)),
        "log_uniform_values": lambda: math.exp(rng.uniform(math.log(lo), math.log(hi))),
        "q_log_uniform_values": lambda: math.exp(rng.uniform(math.log(lo), math.log(hi))),
        "inv_log_uniform_values": lambda: 1.0 / math.exp(rng.uniform(-math.log(hi), -math.log(lo))),
        "normal": lambda: rng.normal(mu, sigma),
        "q_normal": lambda: rng.normal(mu, sigma),
        "log_normal": lambda: math.exp(rng.normal(mu, sigma)),
    }
    value = float(draws[dist]())
    if dist.startswith("q_"):
        q = block.get("q", 1.0)
        value = round(value / q) * q
        return int(value) if isinstance(q, int) else float(value)
    return value


def random_config(spec: SweepSpec, index: int, seed: int = 0) -> dict[str, Any]:
    """Trial ``index``'s random configuration; the same for every process."""
    rng = np.random.default_rng([seed, index])
    return {name: sample_parameter(spec.parameters[name], rng) for name in sorted(spec.parameters)}


def proposer_name(spec: SweepSpec) -> str:
    """How this sweep's trials are proposed here (bayes may fall back to random)."""
    if spec.method != "bayes":
        return spec.method
    return (
        "bayes (sweeps)" if _sweeps_available() else "random (bayes fallback: sweeps not installed)"
    )


def propose(
    spec: SweepSpec,
    index: int,
    finished: Sequence[tuple[dict[str, Any], float]] = (),
    seed: int = 0,
) -> dict[str, Any] | None:
    """The configuration of trial ``index`` (0-based), or None when a grid is exhausted.

    Args:
        spec: the sweep.
        index: trial number; grid point ``index`` or the random draw seeded by it.
        finished: (configuration, metric value) of finished trials, used by bayes only.
        seed: sweep seed.
    """
    if spec.method == "grid":
        points = grid_points(spec)
        return points[index] if index < len(points) else None
    if spec.method == "bayes" and _sweeps_available():
        return _bayes_config(spec, index, finished, seed)
    if spec.method == "bayes" and index == 0:
        log.warning("method bayes: the optional 'sweeps' package is missing, using random search")
    return random_config(spec, index, seed)


def _bayes_config(
    spec: SweepSpec, index: int, finished: Sequence[tuple[dict[str, Any], float]], seed: int
) -> dict[str, Any]:
    """W&B's Bayesian proposal from the finished trials (their metric in the summary)."""
    sweeps = import_sweeps()
    assert sweeps is not None and spec.metric is not None  # parse_spec requires a metric for bayes
    config = {
        "method": "bayes",
        "metric": {"name": spec.metric.name, "goal": spec.metric.goal},
        "parameters": {n: dict(b) for n, b in spec.parameters.items()},
    }
    runs = [
        sweeps.SweepRun(
            name=f"trial-{i:03d}",
            state=sweeps.RunState.finished,
            config={k: {"value": v} for k, v in cfg.items()},
            summary_metrics={spec.metric.name: value},
            history=[],
        )
        for i, (cfg, value) in enumerate(finished)
        if value is not None and math.isfinite(value)
    ]
    # The engine draws from the global generators; seed them so trial `index` is reproducible.
    random.seed(hash((seed, index)) & 0xFFFFFFFF)
    np.random.seed(hash((seed, index)) & 0xFFFFFFFF)
    suggestion = sweeps.next_run(config, runs)
    return {k: _plain(v["value"]) for k, v in suggestion.config.items()}


def _plain(value: Any) -> Any:
    """numpy scalars (what ``sweeps`` returns) -> Python scalars omegaconf accepts."""
    return value.item() if isinstance(value, np.generic) else value


def _sweeps_available() -> bool:
    return import_sweeps() is not None
