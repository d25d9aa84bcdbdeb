"""The offline sweep driver with a tiny fake trial program: results, report, hyperband stopping,
resume without rerunning, and no double run when two drivers share a sweep folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from perfusion.cli import main as cli_main
from perfusion.sweeps import SweepRunConfig, load_spec, run_sweep
from perfusion.sweeps.report import pareto_ids, rows
from perfusion.sweeps.trials import claim, list_trials

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
    assert [t.trial_id for t in known] == ["000", "001", "002"]  # grid exhausted before count
    by_x = {t.config["x"]: t.result for t in known}
    assert by_x[0.3]["state"] == "finished"
    assert by_x[0.3]["metric"] == pytest.approx(1 / 3)  # 0 + 1/(2 + 1) at the last step
    assert by_x[1.0]["metric"] == pytest.approx(0.49 + 1 / 3)
    assert (
        by_x[0.0]["metrics"]["time/wall_s"] == 0.5 and by_x[0.0]["metrics"]["model/n_params"] == 30
    )
    table = rows(spec, known)
    assert [r["config"]["x"] for r in table] == [0.3, 0.0, 1.0]  # best first
    # wall 0.5/0.8/1.5 s: x=0 fastest, x=0.3 most accurate, x=1 dominated by both
    assert pareto_ids(table, "minimize") == {"000", "001"}


def test_hyperband_stops_the_poor_trial(tmp_path: Path, sweep_file) -> None:
    path = sweep_file(
        {"x": {"values": [0.3, 0.4, 5.0]}, "steps": {"value": 8}, "pause": {"value": 0.15}},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2},
    )
    known = run_sweep(load_spec(path), driver_cfg(tmp_path))
    states = {t.config["x"]: t.result["state"] for t in known}
    assert states == {0.3: "finished", 0.4: "finished", 5.0: "stopped"}
    poor = next(t for t in known if t.config["x"] == 5.0)
    reported = (poor.folder / "history.jsonl").read_text().splitlines()
    assert 2 <= len(reported) < 8  # stopped after its second report, well before its end
    assert not (poor.folder / "out" / "summary.json").exists()
    assert poor.result["metric"] == pytest.approx(json.loads(reported[-1])["loss"])


def test_resume_does_not_rerun_finished_trials(tmp_path: Path, sweep_file) -> None:
    spec = load_spec(
        sweep_file({"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}}, method="random")
    )
    run_sweep(spec, driver_cfg(tmp_path, count=2))
    first = {t.trial_id: t.config for t in list_trials(tmp_path / "sweep")}
    # an interrupted trial: claimed by a process that no longer exists, no result
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = claim(tmp_path / "sweep", "002", {"x": 0.5})
    claim_file = stale.folder / "claim.json"
    claim_file.write_text(json.dumps({**json.loads(claim_file.read_text()), "pid": dead.pid}))
    known = run_sweep(spec, driver_cfg(tmp_path, count=4))
    assert ledger(tmp_path) == ["fake-000", "fake-001", "fake-002", "fake-003"]
    assert all(t.result["state"] == "finished" for t in known) and len(known) == 4
    assert {t.trial_id: t.config for t in known if t.trial_id in first} == first
    taken_over = next(t for t in known if t.trial_id == "002")
    assert taken_over.config == {"x": 0.5}  # rerun with the configuration it was claimed with
    run_sweep(spec, driver_cfg(tmp_path, count=4))
    assert len(ledger(tmp_path)) == 4  # complete: nothing rerun


def test_two_drivers_never_run_a_trial_twice(tmp_path: Path, sweep_file) -> None:
    path = sweep_file({"x": {"values": [0.1, 0.2, 0.3, 0.4, 0.5]}, "pause": {"value": 0.05}})
    spec = load_spec(path)
    workers = [
        threading.Thread(target=run_sweep, args=(spec, driver_cfg(tmp_path))) for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    runs = ledger(tmp_path)
    assert sorted(runs) == [f"fake-{i:03d}" for i in range(5)]  # each once, none twice


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
    assert [t.result["state"] for t in known] == ["finished", "failed"]
    assert known[1].result["returncode"] == 3 and known[1].result["metric"] is None
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
    table = json.loads((out / "sweep-fake.json").read_text())
    # ref passes no x (the program's default 0): same metric as 000, ties sorted by id
    assert [t["id"] for t in table["trials"]] == ["001", "000", "ref"]
    assert table["proposer"] == "grid"
    assert (out / "sweep-fake.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 001 | finished | 0.5 | 0.8 | 20 | 0.3 |" in (out / "sweep-fake.md").read_text()
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
