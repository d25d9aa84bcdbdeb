"""The sweep directory: one folder per trial, claimed atomically, resumable.

Layout of ``<sweep dir>/``::

    sweep.json                the sweep definition this folder belongs to
    sweep.lock                file lock held while choosing and claiming the next trial
    trials/<id>/claim.json    created with O_EXCL: id, configuration, pid, host, start time
    trials/<id>/history.jsonl metric values the trial reports while running (hyperband)
    trials/<id>/result.json   written atomically when the trial ends: state, metric, summary
    trials/<id>/out/          the trial program's outputs (fit maps, summary.json)

A trial with ``result.json`` is done and never rerun. A claim without a result whose process is
gone (same host, pid not alive) is stale: the next driver takes it over with the same
configuration. Trial folders are created with ``os.mkdir`` and claims with ``O_CREAT | O_EXCL``,
both atomic on POSIX, and every choice of the next trial happens under ``sweep.lock``, so two
drivers sharing a folder never run a trial twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfusion.errors import PerfusionError
from perfusion.io import write_json_atomic

REFERENCE_ID = "ref"


@dataclass
class Trial:
    """One trial's folder and what is known about it.

    Attributes:
        trial_id: ``"000"``, ``"001"``, ... or ``"ref"`` (the program's defaults).
        folder: ``<sweep dir>/trials/<trial_id>``.
        config: swept parameter name -> value passed to the program.
        result: the parsed ``result.json``, or None while running / never finished.
    """

    trial_id: str
    folder: Path
    config: dict[str, Any]
    result: dict[str, Any] | None = None

    @property
    def history_path(self) -> Path:
        return self.folder / "history.jsonl"

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    @property
    def index(self) -> int | None:
        return int(self.trial_id) if self.trial_id.isdigit() else None


def trials_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / "trials"


def list_trials(sweep_dir: Path) -> list[Trial]:
    """Every claimed trial (finished or not), reference first, then by number."""
    root = trials_dir(sweep_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir(), key=lambda p: (p.name != REFERENCE_ID, p.name)):
        claim = _read_json(folder / "claim.json")
        if claim is None:
            continue  # folder made, claim not yet written: still being claimed
        out.append(Trial(folder.name, folder, claim["config"], _read_json(folder / "result.json")))
    return out


def claim(sweep_dir: Path, trial_id: str, config: dict[str, Any]) -> Trial | None:
    """Create ``trials/<trial_id>`` and its claim; None if another process got there first."""
    folder = trials_dir(sweep_dir) / trial_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        return None
    _write_claim(folder, trial_id, config, exclusive=True)
    return Trial(trial_id, folder, config)


def take_over(trial: Trial) -> Trial:
    """Re-claim a stale trial for this process (call under the sweep lock)."""
    _write_claim(trial.folder, trial.trial_id, trial.config, exclusive=False)
    for name in ("history.jsonl",):
        (trial.folder / name).unlink(missing_ok=True)
    return trial


def is_stale(trial: Trial) -> bool:
    """A claim without a result whose process on this host no longer runs."""
    if trial.result is not None:
        return False
    claim_info = _read_json(trial.folder / "claim.json") or {}
    if claim_info.get("host") != socket.gethostname():
        return False  # another machine's process: we cannot tell, leave it alone
    return not _pid_alive(int(claim_info.get("pid", -1)))


def finish(trial: Trial, result: dict[str, Any]) -> Trial:
    """Record a trial's end atomically; from then on it is never rerun."""
    write_json_atomic(trial.folder / "result.json", result)
    trial.result = result
    return trial


def read_history(path: Path, metric: str) -> list[float]:
    """The finite values of ``metric`` a trial reported, in order (JSON lines)."""
    if not path.is_file():
        return []
    values = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        value = record.get(metric) if isinstance(record, dict) else None
        if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
            values.append(float(value))
    return values


def check_sweep_dir(sweep_dir: Path, raw: dict[str, Any]) -> None:
    """Bind a folder to one sweep definition: refuse to mix two sweeps in one folder."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    marker = sweep_dir / "sweep.json"
    if marker.is_file():
        if _read_json(marker) != json.loads(json.dumps(raw)):
            raise PerfusionError("folder holds another sweep definition; use a new dir=", marker)
        return
    write_json_atomic(marker, raw)


def _write_claim(folder: Path, trial_id: str, config: dict[str, Any], exclusive: bool) -> None:
    payload = {
        "id": trial_id,
        "config": config,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "claimed_at": time.time(),
    }
    if not exclusive:
        write_json_atomic(folder / "claim.json", payload)
        return
    fd = os.open(folder / "claim.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
