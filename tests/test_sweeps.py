"""Sweep YAML -> Optuna distributions, proposals within bounds, and argument merging.

Proposals are drawn through the driver's own claim path (:func:`next_trial`) with an objective
computed in the test, so no trial program runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from perfusion.config import config_dir, load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.driver import next_trial
from perfusion.sweeps.launch import expand_command
from perfusion.sweeps.spec import distribution, grid_values, load_spec, parse_spec
from perfusion.sweeps.study import open_study

SHIPPED = sorted((config_dir() / "sweeps").glob("*.yaml"))
BASE = {"program": "p", "method": "grid", "metric": {"name": "m"}}


def spec_of(parameters: dict, method: str = "grid", **extra) -> object:
    return parse_spec({**BASE, "method": method, "parameters": parameters, **extra})


# --- parsing and validation -----------------------------------------------------------------


def test_shipped_sweeps_parse() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"hash_encoding", "resppinn_optim", "label_free"} <= names
    for path in SHIPPED:
        spec = load_spec(path)  # what `wandb agent` runs: the same command, parameters as ${args}
        assert spec.command[:3] == ("${env}", "perfusion", "fit") and "${args}" in spec.command
    enc = load_spec(config_dir() / "sweeps" / "hash_encoding.yaml")
    assert "fields.encoding.n_levels" in enc.distributions and enc.constants["steps"] == 300
    optim = load_spec(config_dir() / "sweeps" / "resppinn_optim.yaml")
    assert optim.method == "bayes" and optim.distributions["steps"] == IntDistribution(
        100, 1000, step=100
    )
    assert load_spec(config_dir() / "sweeps" / "label_free.yaml").hyperband == {
        "min_resource": 2, "max_resource": "auto", "reduction_factor": 2,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        ({"methd": "grid"}, "unknown sweep key 'methd'"),
        ({"method": "anneal"}, "key 'method'"),
        ({"parameters": {"a": {"min": 2, "max": 1}}}, "key 'parameters.a.min'"),
        ({"parameters": {"a": {"values": [1, 2], "min": 0}}}, "key 'parameters.a.min'"),
        ({"parameters": {"a": {"values": []}}}, "key 'parameters.a.values'"),
        (
            {"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}},
            "parameters.lr.min",
        ),
        ({"parameters": {"lr": {"min": "1e-4", "max": 0.1}}}, "key 'parameters.lr.min'"),
        (
            {"parameters": {"a": {"distribution": "zipf", "min": 1, "max": 2}}},
            "parameters.a.distribution",
        ),
        ({"parameters": {"a": {"distribution": "normal"}}}, "parameters.a.distribution"),
        (
            {"method": "random", "parameters": {"a": {"distribution": "q_uniform", "min": 0}}},
            "parameters.a.max",
        ),
        ({"parameters": {"lr": {"min": 0.1, "max": 0.5}}}, "key 'parameters.lr': grid search"),
        ({"metric": {"name": "m", "goal": "max"}}, "key 'metric.goal'"),
        ({"metric": None}, "key 'metric.name'"),
        ({"early_terminate": {"type": "hyperband", "eta": 2}}, "early_terminate"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2.5}}, "eta"),
        ({"command": "perfusion fit"}, "key 'command'"),
    ],
)
def test_bad_sweeps_are_rejected_naming_the_key(raw: dict, fault: str) -> None:
    with pytest.raises(PerfusionError, match=_re(fault)):
        parse_spec({**BASE, "parameters": {"a": {"values": [1]}}, **raw})


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("method: grid\nparameters: [unclosed\n")
    with pytest.raises(PerfusionError, match="broken.yaml: unreadable YAML"):
        load_spec(path)


def test_distributions_follow_wandb_inference() -> None:
    assert distribution({"values": [1, "a"]}, "k") == CategoricalDistribution([1, "a"])
    assert distribution({"min": 1, "max": 4}, "k") == IntDistribution(1, 4)
    assert distribution({"min": 1.0, "max": 4}, "k") == FloatDistribution(1.0, 4.0)
    log_values = {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}
    assert distribution(log_values, "k") == FloatDistribution(1e-4, 1e-2, log=True)
    exponents = {"distribution": "log_uniform", "min": 0, "max": 2}
    assert distribution(exponents, "k") == FloatDistribution(1.0, math.exp(2), log=True)
    q = {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}
    assert distribution(q, "k") == FloatDistribution(0.0, 1.0, step=0.25)
    spec = spec_of({"c": {"value": 3}, "a": {"values": [1]}})
    assert spec.constants == {"c": 3} and list(spec.distributions) == ["a"]


def test_nested_parameters_flatten_to_key_paths() -> None:
    spec = spec_of(
        {"fields": {"parameters": {"encoding": {"parameters": {"n_levels": {"values": [4, 8]}}}}}}
    )
    assert list(spec.distributions) == ["fields.encoding.n_levels"]


def test_hyperband_from_max_iter_and_s() -> None:
    spec = spec_of(
        {"a": {"values": [1]}},
        early_terminate={"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3},
    )
    assert spec.hyperband == {"min_resource": 3, "max_resource": 27, "reduction_factor": 3}


def test_grid_values_of_int_and_q_uniform() -> None:
    assert grid_values(distribution({"min": 2, "max": 4}, "n")) == [2, 3, 4]
    q = distribution({"distribution": "q_uniform", "min": 0.0, "max": 0.75, "q": 0.25}, "q")
    assert grid_values(q) == [0.0, 0.25, 0.5, 0.75]


# --- proposals, through the driver's claim path ----------------------------------------------


def proposals(spec, tmp_path: Path, n: int, objective=None, **kw) -> list[dict]:  # noqa: ANN001
    """Claim ``n`` trials as the driver does, telling each the test's objective."""
    cfg = SweepRunConfig(dir=str(tmp_path), count=n, reference=False, **kw)
    studies = (open_study(spec, tmp_path, cfg, True), open_study(spec, tmp_path, cfg))
    out = []
    while (claimed := next_trial(spec, studies, tmp_path, cfg)) is not None:
        study, trial = claimed
        config = trial.user_attrs["config"]
        study.tell(trial, objective(config) if objective else 0.0)
        out.append(config)
    return out


def test_grid_covers_every_point_once(tmp_path: Path) -> None:
    spec = spec_of({"b": {"values": ["x", "y", "z"]}, "a": {"values": [1, 2]}, "c": {"value": 0}})
    points = proposals(spec, tmp_path, 10)
    assert len(points) == 6  # the grid's size, though count=10
    assert sorted(map(str, points)) == sorted(
        str({"a": a, "b": b, "c": 0}) for a in (1, 2) for b in ("x", "y", "z")
    )


OPTIM = {
    "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
    "batch": {"values": [2048, 4096, 8192]},
    "steps": {"distribution": "q_uniform", "min": 100, "max": 1000, "q": 100},
    "width": {"min": 0.5, "max": 2.0},
}


def within_bounds(config: dict) -> bool:
    return (
        type(config["lr"]) is float
        and 1e-4 <= config["lr"] <= 1e-2
        and config["batch"] in (2048, 4096, 8192)
        and type(config["steps"]) is int
        and config["steps"] % 100 == 0
        and 100 <= config["steps"] <= 1000
        and 0.5 <= config["width"] <= 2.0
    )


@pytest.mark.parametrize(
    ("method", "sampler"), [("random", "tpe"), ("bayes", "tpe"), ("bayes", "gp")]
)
def test_proposals_stay_within_bounds(tmp_path: Path, method: str, sampler: str) -> None:
    spec = spec_of(OPTIM, method=method)
    loss = lambda c: (math.log10(c["lr"]) + 3) ** 2 + c["steps"] / 1000  # noqa: E731
    points = proposals(spec, tmp_path, 7, loss, bayes_sampler=sampler, startup_trials=3)
    assert len(points) == 7 and all(within_bounds(p) for p in points), points
    assert len({p["lr"] for p in points}) == 7  # seeded per trial: no two draws alike


def test_random_proposals_depend_on_seed_and_trial_only(tmp_path: Path) -> None:
    spec = spec_of(OPTIM, method="random")
    first = proposals(spec, tmp_path / "a", 3, seed=7)
    assert proposals(spec, tmp_path / "b", 3, seed=7) == first
    assert proposals(spec, tmp_path / "c", 3, seed=8) != first


# --- arguments as wandb agent passes them ---------------------------------------------------


@dataclass
class _Inner:
    n_levels: int = 16
    finest_resolution: int | None = 4096


@dataclass
class _Schema:
    steps: int | None = None
    progress_bar: bool = True
    lr: float = 1e-3
    encoding: _Inner = field(default_factory=_Inner)


def merged(config: dict, schema: type = _Schema):  # noqa: ANN201
    argv = expand_command(
        ["${env}", "perfusion", "fit", "CASE", "${args}"], None, config, Path("unused")
    )
    assert argv[:4] == ["/usr/bin/env", "perfusion", "fit", "CASE"]
    positionals, overrides = split_args(argv[3:])
    assert positionals == ["CASE"]
    return load_config(schema, [], overrides)


def test_agent_arguments_merge_with_types() -> None:
    cfg = merged({"encoding.n_levels": 8, "lr": 1.2e-05, "progress_bar": False, "steps": 300})
    assert cfg.encoding.n_levels == 8 and cfg.steps == 300 and cfg.progress_bar is False
    assert math.isclose(cfg.lr, 1.2e-05)  # "1.2e-05" (str of a float) parses as a float
    assert cfg.encoding.finest_resolution == 4096


def test_agent_arguments_reject_unknown_key() -> None:
    with pytest.raises(PerfusionError, match="encoding.n_level"):
        merged({"encoding.n_level": 8})


def test_agent_arguments_merge_onto_fit_config() -> None:
    fit_config = pytest.importorskip("perfusion.fitting.config")
    spec = load_spec(config_dir() / "sweeps" / "hash_encoding.yaml")
    config = {n: grid_values(d)[-1] for n, d in spec.distributions.items()}
    cfg = merged({**spec.constants, **config}, fit_config.FitConfig)
    assert cfg.fields.encoding.n_levels == config["fields.encoding.n_levels"] == 16
    with pytest.raises(PerfusionError, match="fields.encoding.levels"):
        merged({"fields.encoding.levels": 4}, fit_config.FitConfig)


def test_command_macros(tmp_path: Path) -> None:
    config = {"a": 1, "flag": False, "on": True}
    argv = expand_command(
        ["${interpreter}", "${program}", "${args_no_hyphens}", "${args_no_boolean_flags}", "${args_json_file}"],
        "train.py", config, tmp_path / "args.json",
    )  # fmt: skip
    assert argv[1:] == [
        "train.py",
        "a=1",
        "flag=False",
        "on=True",
        "--a=1",
        "--on",
        str(tmp_path / "args.json"),
    ]
    assert (tmp_path / "args.json").read_text() == '{"a": 1, "flag": false, "on": true}'


def _re(text: str) -> str:
    import re

    return re.escape(text)


# --- what a trial reports -------------------------------------------------------------------


def test_map_error_by_hand() -> None:
    import math

    from perfusion.evaluation import map_error

    metrics = {"eval/cbf_r": 0.9, "eval/rcbf30_dice": 0.8, "eval/tmax6_dice": 0.95}
    assert map_error(metrics, prefix="eval/") == pytest.approx((0.1 + 0.2 + 0.05) / 3)
    assert math.isnan(map_error(metrics))  # the unprefixed keys are missing
    assert math.isnan(map_error({"eval/cbf_r": 0.9}, prefix="eval/"))


def test_trial_metrics_from_a_fit_summary(tmp_path: Path) -> None:
    import json

    from perfusion.sweeps.objective import record_trial_metrics, trial_metrics

    summary = {
        "wall_time_s": 12.5,
        "n_params": 34821,
        "losses": {"val_rms_hu": 0.063, "tac": 0.05},
        "loss": 2.0,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert trial_metrics(tmp_path, tmp_path / "no-case", wall_s=99.0) == {
        "time/wall_s": 12.5, "model/n_params": 34821.0, "val/rms_hu": 0.063,
    }  # fmt: skip
    assert trial_metrics(tmp_path, keep=("loss",))["loss"] == 2.0

    class Logger:
        logged: dict = {}

        def log_metrics(self, metrics: dict) -> None:
            self.logged = metrics

    logger = Logger()
    record_trial_metrics(tmp_path / "no-case", tmp_path, logger)
    assert logger.logged == {"time/wall_s": 12.5, "model/n_params": 34821.0}
    assert json.loads((tmp_path / "summary.json").read_text())["time/wall_s"] == 12.5


def test_preprocess_parameters_need_a_raw_case(tmp_path: Path) -> None:
    from perfusion.sweeps.cases import check_case_parameters

    prepared = tmp_path / "prepared" / "patient-000"
    check_case_parameters(prepared, ["fields.encoding.n_levels", "steps"])
    with pytest.raises(PerfusionError, match="preprocess.smooth_sigma_mm"):
        check_case_parameters(prepared, ["preprocess.smooth_sigma_mm"])
    check_case_parameters(tmp_path / "phantom" / "patient-000", ["preprocess.smooth_sigma_mm"])


def test_trial_metrics_of_a_failed_fit_are_empty(tmp_path: Path) -> None:
    from perfusion.sweeps.objective import trial_metrics

    (tmp_path / "case" / "truth").mkdir(parents=True)  # a phantom, but the fit wrote nothing
    assert trial_metrics(tmp_path / "out", tmp_path / "case") == {}
