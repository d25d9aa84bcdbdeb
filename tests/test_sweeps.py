"""Sweep YAML parsing/validation, trial proposal, hyperband and argument merging (no trials run)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from perfusion.config import config_dir, load_config, split_args
from perfusion.errors import PerfusionError
from perfusion.sweeps import grid_points, load_spec, parse_spec, propose, sample_parameter
from perfusion.sweeps.hyperband import bands, should_stop, thresholds
from perfusion.sweeps.launch import expand_command
from perfusion.sweeps.spec import check_parameter, import_sweeps, wandb_schema_errors

SHIPPED = sorted((config_dir() / "sweeps").glob("*.yaml"))
needs_sweeps = pytest.mark.skipif(import_sweeps() is None, reason="optional 'sweeps' not installed")


def spec_of(parameters: dict, method: str = "grid", **extra) -> object:
    return parse_spec({"program": "p", "method": method, "parameters": parameters, **extra})


# --- parsing and validation -----------------------------------------------------------------


def test_shipped_sweeps_parse() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"hash_encoding", "resppinn_optim"} <= names
    for path in SHIPPED:
        spec = load_spec(path)
        assert spec.command[:3] == ("${env}", "perfusion", "fit") and "${args}" in spec.command
        assert spec.metric is not None
    enc = load_spec(config_dir() / "sweeps" / "hash_encoding.yaml")
    assert "fields.encoding.n_levels" in enc.parameters
    assert load_spec(config_dir() / "sweeps" / "resppinn_optim.yaml").method == "bayes"


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
        (
            {"method": "random", "parameters": {"a": {"distribution": "q_uniform", "min": 0}}},
            "parameters.a.max",
        ),
        ({"parameters": {"lr": {"min": 0.1, "max": 0.5}}}, "key 'parameters.lr': grid search"),
        ({"metric": {"name": "m", "goal": "max"}}, "key 'metric.goal'"),
        ({"method": "bayes"}, "key 'metric'"),
        (
            {"early_terminate": {"type": "hyperband", "eta": 2}, "metric": {"name": "m"}},
            "early_terminate",
        ),
        ({"command": "perfusion fit"}, "key 'command'"),
    ],
)
def test_bad_sweeps_are_rejected_naming_the_key(raw: dict, fault: str) -> None:
    base = {"program": "p", "method": "grid", "parameters": {"a": {"values": [1]}}}
    with pytest.raises(PerfusionError, match=_re(fault)):
        parse_spec({**base, **raw})


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("method: grid\nparameters: [unclosed\n")
    with pytest.raises(PerfusionError, match="broken.yaml: unreadable YAML"):
        load_spec(path)


def test_distribution_inference_follows_wandb() -> None:
    assert check_parameter({"value": 3}, "k")["distribution"] == "constant"
    assert check_parameter({"values": [1]}, "k")["distribution"] == "categorical"
    assert check_parameter({"min": 1, "max": 4}, "k")["distribution"] == "int_uniform"
    assert check_parameter({"min": 1.0, "max": 4}, "k")["distribution"] == "uniform"


def test_nested_parameters_flatten_to_key_paths() -> None:
    spec = spec_of(
        {"fields": {"parameters": {"encoding": {"parameters": {"n_levels": {"values": [4, 8]}}}}}}
    )
    assert list(spec.parameters) == ["fields.encoding.n_levels"]


@needs_sweeps
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_sweeps_pass_wandb_schema(path: Path) -> None:
    assert wandb_schema_errors(load_spec(path).raw) == []


@needs_sweeps
def test_wandb_schema_can_fail() -> None:
    errors = wandb_schema_errors(
        {"method": "grid", "parameters": {"a": {"values": [1], "bogus": 2}}}
    )
    assert errors


# --- proposal -------------------------------------------------------------------------------


def test_grid_exhausts_in_wandb_order() -> None:
    spec = spec_of({"b": {"values": ["x", "y", "z"]}, "a": {"values": [1, 2]}, "c": {"value": 0}})
    points = [propose(spec, i) for i in range(7)]
    assert points[6] is None
    assert points[:6] == [
        {"a": a, "b": b, "c": 0} for a in (1, 2) for b in ("x", "y", "z")
    ]  # names sorted, last varies fastest


def test_grid_expands_int_and_q_uniform() -> None:
    spec = spec_of(
        {
            "n": {"min": 2, "max": 4},
            "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
        }
    )
    assert [p["n"] for p in grid_points(spec)][::4] == [2, 3, 4]
    assert [p["q"] for p in grid_points(spec)][:4] == [0.0, 0.25, 0.5, 0.75]  # max excluded, as W&B


@needs_sweeps
def test_grid_matches_the_wandb_engine() -> None:
    import sweeps

    raw = {"method": "grid", "parameters": {"b": {"values": [3, 1]}, "a": {"min": 1, "max": 2}}}
    runs: list = []
    for _ in range(4):
        runs.append(sweeps.next_run(raw, runs))
    theirs = [{k: v["value"] for k, v in r.config.items()} for r in runs]
    assert theirs == grid_points(parse_spec({"program": "p", **raw}))


def draws(block: dict, n: int = 4000) -> list:
    rng = np.random.default_rng(1)
    block = check_parameter(block, "k")
    return [sample_parameter(block, rng) for _ in range(n)]


def test_random_uniform_and_int_uniform() -> None:
    u = np.array(draws({"min": -1.0, "max": 3.0}))
    assert u.min() >= -1.0 and u.max() <= 3.0 and abs(u.mean() - 1.0) < 0.1
    k = draws({"min": 2, "max": 5})
    assert all(isinstance(v, int) for v in k) and set(k) == {2, 3, 4, 5}  # both ends included


def test_random_log_uniform_values() -> None:
    v = np.array(draws({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}))
    assert v.min() >= 1e-4 and v.max() <= 1e-2
    assert abs(np.log10(v).mean() - (-3.0)) < 0.05  # uniform in log10 on [-4, -2]
    assert abs(np.mean(v < 1e-3) - 0.5) < 0.03  # median at the geometric mean
    w = np.array(draws({"distribution": "inv_log_uniform_values", "min": 1e-4, "max": 1e-2}))
    assert w.min() >= 1e-4 and w.max() <= 1e-2 and abs(np.log10(w).mean() + 3.0) < 0.05


def test_random_q_uniform() -> None:
    ints = draws({"distribution": "q_uniform", "min": 100, "max": 1000, "q": 100})
    assert all(isinstance(v, int) and v % 100 == 0 and 100 <= v <= 1000 for v in ints)
    floats = draws({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25})
    assert set(floats) == {0.0, 0.25, 0.5, 0.75, 1.0}  # rounded draws can reach both ends


def test_random_categorical() -> None:
    v = draws({"values": [16, "a", 2.5]}, 3000)
    assert {v.count(x) for x in (16, "a", 2.5)} and all(
        abs(v.count(x) / 3000 - 1 / 3) < 0.03 for x in (16, "a", 2.5)
    )
    w = draws({"values": ["x", "y"], "probabilities": [0.2, 0.8]}, 3000)
    assert abs(w.count("y") / 3000 - 0.8) < 0.03


def test_random_proposal_is_reproducible_per_trial_index() -> None:
    spec = spec_of(
        {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}, method="random"
    )
    assert propose(spec, 3, seed=7) == propose(spec, 3, seed=7) != propose(spec, 4, seed=7)


@needs_sweeps
def test_bayes_via_sweeps_gives_plain_python_values() -> None:
    spec = parse_spec({
        "program": "p", "method": "bayes", "metric": {"name": "m"},
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, "n": {"values": [1, 2]}},
    })  # fmt: skip
    finished = [({"lr": 1e-3, "n": 1}, 0.5), ({"lr": 5e-3, "n": 2}, 0.9)]
    config = propose(spec, 2, finished)
    assert type(config["lr"]) is float and 1e-4 <= config["lr"] <= 1e-2 and config["n"] in (1, 2)


# --- hyperband ------------------------------------------------------------------------------


def test_hyperband_bands() -> None:
    assert bands({"max_iter": 27, "s": 2, "eta": 3}) == [3, 9]
    assert bands({"max_iter": 5, "s": 2, "eta": 2}) == [1, 2]
    assert bands({"min_iter": 2, "eta": 2})[:4] == [2, 4, 8, 16]


def test_hyperband_threshold_and_stop_by_hand() -> None:
    # band 2 values: 4, 5, 9 -> sorted index int(3 / 2) = 1 -> threshold 5
    histories = [[6, 4], [7, 5], [10, 9]]
    assert thresholds(histories, [2], 2.0) == [5]
    et = {"type": "hyperband", "min_iter": 2, "eta": 2}
    assert should_stop([10, 9], histories, et)  # 9 > 5
    assert not should_stop([7, 5], histories, et)  # 5 is not worse than 5
    assert not should_stop([10], histories, et)  # has not reached a band yet
    # maximize: signs flip, the run with the lowest values is the poor one
    assert should_stop([1, 1], [[5, 5], [4, 4], [1, 1]], et, goal="maximize")
    # not strict: the best value so far counts (6 at iteration 1 is still > 5)
    assert not should_stop([3, 9], [[6, 4], [7, 5], [3, 9]], {**et, "strict": False})


@needs_sweeps
def test_hyperband_matches_the_wandb_engine() -> None:
    import sweeps

    config = {
        "method": "grid", "metric": {"name": "loss", "goal": "minimize"},
        "early_terminate": {"type": "hyperband", "max_iter": 5, "eta": 2, "s": 2},
        "parameters": {"a": {"values": [1, 2, 3]}},
    }  # fmt: skip
    histories = {"a": [10, 9], "b": [10, 10], "c": [10, 8, 8], "d": [10, 7, 7], "e": [10, 6, 6]}
    running = {"b", "c", "d"}
    runs = [
        sweeps.SweepRun(
            name=n, state=sweeps.RunState.running if n in running else sweeps.RunState.finished,
            history=[{"loss": v} for v in h],
        )
        for n, h in histories.items()
    ]  # fmt: skip
    theirs = {r.name for r in sweeps.stop_runs(config, runs)}
    ours = {
        n
        for n in running
        if should_stop(histories[n], list(histories.values()), config["early_terminate"])
    }
    assert ours == theirs and theirs


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
    cfg = merged(propose(spec, 0), fit_config.FitConfig)
    assert cfg.fields.encoding.n_levels == propose(spec, 0)["fields.encoding.n_levels"]
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
