"""Run one trial program the way ``wandb agent`` does, offline.

The YAML's ``command`` is expanded with W&B's macros (``wandb/wandb_agent.py`` and
``wandb/sdk/launch/sweeps/utils.py``): ``${env}`` -> ``/usr/bin/env``, ``${interpreter}`` ->
this Python, ``${program}``, ``${args}`` -> ``--name=value`` per parameter,
``${args_no_hyphens}``, ``${args_no_boolean_flags}``, ``${args_json}``, ``${args_json_file}``,
and ``${envvar:NAME}`` inside a word. The program runs with ``WANDB_MODE=offline``, its W&B run
grouped by the sweep name and tagged ``sweep``/``sweep:<name>``, and ``WANDB_DIR`` in the trial
folder so ``wandb sync <trial>/wandb/offline-run-*`` uploads it later.

Two variables tell a trial program where this driver wants things (programs that ignore them
still run; the driver then reads only ``out/summary.json``):

- ``PERFUSION_TRIAL_OUT``: the folder for the program's outputs (for a ``perfusion fit``
  command the driver also replaces its ``out=`` with that folder);
- ``PERFUSION_SWEEP_HISTORY``: a JSON-lines file to which the program may append
  ``{"step": s, "<metric>": value}`` while it runs; each value of the sweep's metric is
  reported to the Optuna trial (hyperband pruning), as W&B's server reads the run history.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from perfusion.errors import PerfusionError

ENVVAR = re.compile(r"\$\{envvar:([A-Za-z0-9_]*)\}")
OUT_ENV = "PERFUSION_TRIAL_OUT"
HISTORY_ENV = "PERFUSION_SWEEP_HISTORY"
TERMINATE_GRACE_S = 10.0


def format_value(value: Any) -> str:
    """A parameter value as ``wandb agent`` writes it (Python ``str``)."""
    return str(value)


def expand_command(
    command: Sequence[str], program: str | None, config: dict[str, Any], json_file: Path
) -> list[str]:
    """Expand W&B command macros for one trial's configuration."""
    flags = [f"{k}={format_value(v)}" for k, v in config.items()]
    no_bool = [
        f"--{k}" if v is True else f"--{k}={format_value(v)}"
        for k, v in config.items()
        if v is not False
    ]
    macros: dict[str, list[str]] = {
        "env": ["/usr/bin/env"] if os.name != "nt" else [],
        "interpreter": [sys.executable],
        "program": [program] if program else [],
        "args": ["--" + f for f in flags],
        "args_no_hyphens": flags,
        "args_no_boolean_flags": no_bool,
        "args_json": [json.dumps(config)],
        "args_json_file": [str(json_file)],
    }
    out: list[str] = []
    for word in command:
        if word.startswith("${") and word.endswith("}") and word[2:-1] in macros:
            if word == "${args_json_file}":
                json_file.write_text(json.dumps(config))
            out += macros[word[2:-1]]
        else:
            out.append(ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), word))
    return out


def trial_env(sweep_name: str, trial_id: str, folder: Path) -> dict[str, str]:
    """Environment for one offline trial run (W&B offline, grouped and tagged by sweep)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)  # the venv's console scripts, e.g. `perfusion`
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(
        WANDB_MODE="offline" if env.get("WANDB_MODE") != "disabled" else "disabled",
        WANDB_SILENT="true",
        WANDB_DIR=str(folder),
        WANDB_RUN_GROUP=sweep_name,
        WANDB_TAGS=f"sweep,sweep:{sweep_name}",
        WANDB_NAME=f"{sweep_name}-{trial_id}",
        WANDB_JOB_TYPE="sweep-trial",
        **{OUT_ENV: str(folder / "out"), HISTORY_ENV: str(folder / "history.jsonl")},
    )
    return env


def run_trial_process(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 1.0,
) -> tuple[int, bool, float]:
    """Run a trial program to its end or until ``should_stop()`` says stop.

    Returns:
        (exit status, stopped early, wall time in s).
    """
    if shutil.which(argv[0], path=env.get("PATH")) is None and not Path(argv[0]).exists():
        raise PerfusionError(f"trial command not found: {argv[0]!r}")
    start = time.perf_counter()
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        stopped = False
        while proc.poll() is None:
            time.sleep(poll_s)
            if should_stop is not None and proc.poll() is None and should_stop():
                stopped = True
                _terminate(proc)
                break
        proc.wait()
    return proc.returncode, stopped, time.perf_counter() - start


def read_history(path: Path, metric: str) -> list[float]:
    """The finite values of ``metric`` a trial appended to its history file, in order."""
    if not path.is_file():
        return []
    values = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        value = record.get(metric) if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            values.append(float(value))
    return values


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM (what ``wandb agent`` sends), SIGKILL after a grace period."""
    proc.terminate()
    try:
        proc.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
