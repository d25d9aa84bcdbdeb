"""The offline sweep driver with a tiny fake trial program: results, report, hyperband pruning,
resume without rerunning, an edited YAML as a new study, and no double run when two driver
processes share one journal."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from perfusion.cli import main as cli_main
from perfusion.sweeps.config import SweepRunConfig
from perfusion.sweeps.driver import run_sweep
from perfusion.sweeps.report import pareto_ids, rows
from perfusion.sweeps.spec import load_spec
from perfusion.sweeps.study import open_study, study_name

# A trial program in the spirit of `perfusion fit`: --key=value arguments, reports its metric
# `loss` = (x - 0.3)^2 + 1/(step + 1) at every step, appends its name to a shared ledger (to count
# runs), writes summary.json at the end. No perfusion import: starts in ~50 ms.
FAKE = """
import json, os, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
x, steps, pause = float(args.get("x", 0)), int(args.get("steps", 3)), float(args.get("pause", 0))
with open(os.environ["LEDGER"], "a") as f:
    f.write(os.environ["WANDB_NAME"] + " " + str(os.getppid()) + "\\n")
deadline = time.time() + 30
while args.get("peer") == "True" and len(open(os.environ["LEDGER"]).readlines()) < 2 and time.time() < deadline:
    time.sleep(0.05)  # hold the first trial until another driver has started one
if args.get("crash") == "True":
    sys.exit(3)
for step in range(steps):
    loss = (x - 0.3) ** 2 + 1.0 / (step + 1)
    with open(os.environ["PERFUSION_SWEEP_HISTORY"], "a") as f:
        f.write(json.dumps({"step": step, "loss": loss}) + "\\n")
    time.sleep(pause)
out = os.environ["PERFUSION_TRIAL_OUT"]
os.makedirs(out)
json.dump({"loss": loss, "wall_time_s": 0.5 + x, "n_params": 10 * steps}, open(out + "/summary.json", "w"))
"""


@pytest.fixture
def sweep_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    program = tmp_path / "fake_fit.py"
    program.write_text(FAKE)
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger.txt"))

    def write(parameters: dict, method: str = "grid", **extra) -> Path:
        raw = {
            "name": "fake", "program": str(program), "method": method,
            "command": ["${interpreter}", "${program}", "${args}"],
            "metric": {"name": "loss", "goal": "minimize"}, "parameters": parameters, **extra,
        }  # fmt: skip
        path = tmp_path / "fake.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def driver_cfg(tmp_path: Path, **kw) -> SweepRunConfig:
    return SweepRunConfig(
        dir=str(tmp_path / "sweep"), reference=False, poll_s=0.05, log_wandb=False, **kw
    )


def test_grid_sweep_records_every_trial(tmp_path: Path, sweep_file) -> None:
    spec = load_spec(sweep_file({"x": {"values": [0.0, 0.3, 1.0]}}))
    known = run_sweep(spec, driver_cfg(tmp_path, count=10))
    assert [t.user_attrs["id"] for t in known] == ["000", "001", "002"]  # grid exhausted first
    assert sorted(ledger(tmp_path)) == ["fake-000", "fake-001", "fake-002"]
    by_x = {t.user_attrs["config"]["x"]: t for t in known}
    assert by_x[0.3].user_attrs["state"] == "finished"
    assert by_x[0.3].value == pytest.approx(1 / 3)  # 0 + 1/(2 + 1) at the last step
    assert by_x[1.0].value == pytest.approx(0.49 + 1 / 3)
    metrics = by_x[0.0].user_attrs["metrics"]
    assert metrics["time/wall_s"] == 0.5 and metrics["model/n_params"] == 30
    table = rows(spec, known)
    assert [r["config"]["x"] for r in table] == [0.3, 0.0, 1.0]  # best first
    # wall 0.5/0.8/1.5 s: x=0 fastest, x=0.3 most accurate, x=1 dominated by both
    x_of = {r["id"]: r["config"]["x"] for r in table}
    assert {x_of[i] for i in pareto_ids(table, "minimize")} == {0.0, 0.3}


def test_hyperband_prunes_the_poor_trial(tmp_path: Path, sweep_file) -> None:
    # one bracket (max_iter / min_iter < eta): the second trial meets the first at step 2
    path = sweep_file(
        {"x": {"min": 4.0, "max": 6.0}, "steps": {"value": 8}, "pause": {"value": 0.15}},
        "random",
        early_terminate={"type": "hyperband", "min_iter": 2, "max_iter": 3, "eta": 2},
    )
    spec = load_spec(path)
    with warnings.catch_warnings():  # a good first trial, outside the drawn range
        warnings.simplefilter("ignore")
        open_study(spec, tmp_path / "sweep", driver_cfg(tmp_path)).enqueue_trial({"x": 0.3})
        known = run_sweep(spec, driver_cfg(tmp_path, count=2))
    states = [(t.user_attrs["state"], t.state.name) for t in known]
    assert states == [("finished", "COMPLETE"), ("stopped", "PRUNED")]
    poor = known[1]
    folder = Path(poor.user_attrs["folder"])
    reported = (folder / "history.jsonl").read_text().splitlines()
    assert 2 <= len(reported) < 8  # stopped after its second report, well before its end
    assert not (folder / "out" / "summary.json").exists()
    assert poor.value == pytest.approx(poor.intermediate_values[max(poor.intermediate_values)])
    assert poor.value == pytest.approx(
        json.loads(reported[len(poor.intermediate_values) - 1])["loss"]
    )


def test_resume_does_not_rerun_finished_trials(tmp_path: Path, sweep_file) -> None:
    spec = load_spec(
        sweep_file({"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}}, method="random")
    )
    first = {t.user_attrs["id"]: t.params for t in run_sweep(spec, driver_cfg(tmp_path, count=2))}
    # an interrupted trial: claimed by a process that no longer exists, never told
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = open_study(spec, tmp_path / "sweep", driver_cfg(tmp_path)).ask()
    attrs = {"id": "002", "config": {"x": 0.5}, "host": socket.gethostname(), "pid": dead.pid}
    for key, value in attrs.items():
        stale.set_user_attr(key, value)
    known = run_sweep(spec, driver_cfg(tmp_path, count=4))
    assert ledger(tmp_path) == ["fake-000", "fake-001", "fake-002", "fake-003"]
    assert [t.user_attrs["state"] for t in known] == ["finished"] * 4
    assert {t.user_attrs["id"]: t.params for t in known if t.user_attrs["id"] in first} == first
    taken_over = next(t for t in known if t.user_attrs["id"] == "002")
    assert taken_over.user_attrs["config"] == {"x": 0.5}  # rerun with its claimed configuration
    run_sweep(spec, driver_cfg(tmp_path, count=4))
    assert len(ledger(tmp_path)) == 4  # complete: nothing rerun


def test_an_edited_sweep_is_a_new_study(tmp_path: Path, sweep_file) -> None:
    spec = load_spec(sweep_file({"x": {"values": [0.0, 0.3]}}))
    run_sweep(spec, driver_cfg(tmp_path))
    edited = load_spec(sweep_file({"x": {"values": [0.0, 0.3, 0.6]}}))
    assert study_name(edited) != study_name(spec)
    known = run_sweep(edited, driver_cfg(tmp_path))  # same folder, same journal
    assert len(ledger(tmp_path)) == 5 and len(known) == 3  # the old trials are not reused
    assert (tmp_path / "sweep" / study_name(edited) / "002" / "out" / "summary.json").is_file()
    assert len(run_sweep(spec, driver_cfg(tmp_path))) == 2 and len(ledger(tmp_path)) == 5


def test_two_driver_processes_share_a_sweep_folder(tmp_path: Path, sweep_file) -> None:
    path = sweep_file({"x": {"values": [0.1 * i for i in range(6)]}, "peer": {"value": True}})
    argv = [sys.executable, "-m", "perfusion.cli", "sweep", str(path), f"dir={tmp_path / 'sweep'}",
            "count=6", "reference=false", "log_wandb=false", "poll_s=0.05", f"results_dir={tmp_path}",
            f"best_config_dir={tmp_path}"]  # fmt: skip
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    lines = (tmp_path / "ledger.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == [f"fake-{i:03d}" for i in range(6)]
    assert len({line.split()[1] for line in lines}) == 2  # both drivers ran trials, concurrently


def test_failed_trial_is_recorded_not_retried(tmp_path: Path, sweep_file) -> None:
    spec = load_spec(sweep_file({"crash": {"values": [False, True]}}))
    known = run_sweep(spec, driver_cfg(tmp_path))
    crashed = {t.user_attrs["config"]["crash"]: t for t in known}
    assert {c: t.user_attrs["state"] for c, t in crashed.items()} == {
        False: "finished",
        True: "failed",
    }
    assert crashed[True].user_attrs["returncode"] == 3 and crashed[True].value is None
    run_sweep(spec, driver_cfg(tmp_path))
    assert len(ledger(tmp_path)) == 2


def test_cli_writes_table_figure_and_best_config(tmp_path: Path, sweep_file, capsys) -> None:
    path = sweep_file({"x": {"values": [0.0, 0.3]}, "steps": {"value": 2}})
    out = tmp_path / "results"
    code = cli_main([
        "sweep", str(path), f"dir={tmp_path / 'sweep'}", f"results_dir={out}", f"best_config_dir={out}",
        "poll_s=0.05",  # log_wandb stays on: a W&B run in the tests' disabled mode
    ])  # fmt: skip
    assert code == 0
    table = json.loads((out / "sweep-fake" / "trials.json").read_text())
    # ref passes no x (the program's default 0): same metric as x=0, ties sorted by id
    assert [t["config"].get("x", "ref") for t in table["trials"]] == [0.3, 0.0, "ref"]
    assert table["sampler"] == "GridSampler"
    assert (out / "sweep-fake" / "speed_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    readme = (out / "sweep-fake" / "README.md").read_text()
    best_id = table["trials"][0]["id"]
    assert f"| {best_id} | finished | 0.5 | 0.8 | 20 | 0.3 |" in readme
    assert f"Command: `perfusion sweep {path} dir=" in readme
    best = yaml.safe_load((out / "best-fake.yaml").read_text())
    assert best == {"steps": 2, "x": 0.3}


def test_cli_rejects_a_bad_sweep_naming_the_key(tmp_path: Path, sweep_file, capsys) -> None:
    path = sweep_file({"x": {"values": [1], "max": 3}})
    assert cli_main(["sweep", str(path), f"dir={tmp_path / 's'}"]) == 2
    assert "parameters.x.max" in capsys.readouterr().err
    assert cli_main(["sweep", str(sweep_file({"x": {"value": 1}})), "cont=3"]) == 2
    assert "cont" in capsys.readouterr().err


def test_trial_environment_is_offline_grouped_and_tagged(tmp_path: Path, monkeypatch) -> None:
    from perfusion.sweeps.launch import trial_env

    monkeypatch.setenv("WANDB_MODE", "online")
    env = trial_env("enc", "003", tmp_path)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_RUN_GROUP"] == "enc"
    assert env["WANDB_TAGS"] == "sweep,sweep:enc" and env["WANDB_DIR"] == str(tmp_path)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_cli_count_zero_only_prepares(tmp_path: Path, sweep_file, capsys) -> None:
    path = sweep_file({"x": {"values": [1]}})
    argv = ["sweep", str(path), f"dir={tmp_path / 's'}", "count=0", "reference=false"]
    assert cli_main([*argv, f"results_dir={tmp_path / 'r'}"]) == 0
    assert "no trials run" in capsys.readouterr().out and not (tmp_path / "r").exists()
    assert ledger(tmp_path) == []
