"""Fit every case of a cohort folder, resumably and split over processes without a coordinator.

Each case ``DIR/<case>`` is fitted into ``out/<case>/`` exactly as ``perfusion fit`` writes it,
and ``out/<case>/cohort.json`` records the attempt (status, one-line error, timing, who ran it),
stamped with the digest of the fit's configuration (:mod:`perfusion.cache`).

- Resume: a case whose fit folder ran the wanted configuration
  (:func:`~perfusion.fitting.reuse.finished_fit`) is reused; a changed configuration, a missing
  or failed fit is fitted again.
- Shards: ``shard=i/n`` takes the sorted cases i, i + n, i + 2n, ... (0-based), so the n tasks of
  a job array split the cohort the same way without talking to each other.
- Claims: each case is fitted under its ``cohort.json.lock`` (:func:`perfusion.cache.claim`); a
  process that finds a case taken goes on to the next, so processes started at once over the
  same cases never fit one twice.
- Failures: a case that fails is recorded with its one-line error and the others go on.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfusion import cache
from perfusion.errors import PerfusionError, error_line
from perfusion.io import CTP_FILE
from perfusion.prepared import PREPARED_JSON, scan_file

RECORD_FILE = "cohort.json"
"""Per case, beside its maps: the last attempt's status, error and timing."""
FITTED, REUSED, FAILED = "fitted", "reused", "failed"
BUSY = "busy"
"""Not a stored status: another process held the case's claim (it records the outcome)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the cases index, index + count, ..."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` with 0 <= i < n; anything else is refused naming the key."""
        index, sep, count = str(text).partition("/")
        try:
            shard = cls(int(index), int(count)) if sep else None
        except ValueError:
            shard = None
        if shard is None or not 0 <= shard.index < shard.count:
            raise PerfusionError(f"shard: {text!r}, expected i/n with 0 <= i < n (e.g. 0/4)")
        return shard

    def take(self, cases: Sequence[Path]) -> list[Path]:
        """This shard's share of ``cases`` (sorted by name first, so every process agrees)."""
        return sorted(cases, key=lambda p: p.name)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def find_cases(folder: str | Path) -> list[Path]:
    """The case folders directly under ``folder`` (holding ``ctp.nii.gz``, or ``prepared.json``
    for a preprocessed case, as ``perfusion fit`` accepts), sorted by name; [] when none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if (p / CTP_FILE).is_file() or (p / PREPARED_JSON).is_file()
    )


def case_dirs(cohort: str | Path) -> list[Path]:
    """:func:`find_cases` of ``cohort``, refused when the folder is missing or holds none."""
    cohort = Path(cohort)
    if not cohort.is_dir():
        raise PerfusionError("cohort folder not found", cohort)
    cases = find_cases(cohort)
    if not cases:
        raise PerfusionError(f"no case folders (with {CTP_FILE} or {PREPARED_JSON})", cohort)
    return cases


def record_path(out: str | Path, case: Path) -> Path:
    """``out/<case>/cohort.json``."""
    return Path(out) / case.name / RECORD_FILE


def read_record(out: str | Path, case: Path) -> dict[str, Any] | None:
    """The case's last record, whatever configuration made it (None when absent or unreadable;
    its ``config_digest`` says which)."""
    try:
        record = json.loads(record_path(out, case).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def fit_cohort(
    cases: Sequence[Path],
    out: str | Path,
    cfg: Any,
    after: Callable[[Path, Path, Any], dict[str, Any]] | None = None,
    say: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Fit ``cases`` into ``out/<case>/`` under ``cfg`` (a FitConfig DictConfig) as the module
    docstring says; ``say`` gets one line per case. Returns one record per case (status
    ``fitted``, ``reused``, ``failed`` or ``busy``)."""
    from perfusion.fitting.reuse import fit_digest

    key = fit_digest(cfg)
    records = []
    for number, case in enumerate(cases, start=1):
        record = fit_one(case, Path(out), cfg, key, after)
        records.append(record)
        if say is not None:
            say(f"[{number}/{len(cases)}] {case.name}: {describe(record)}")
    return records


def fit_one(
    case: Path, out: Path, cfg: Any, key: str, after: Callable | None = None
) -> dict[str, Any]:
    """Claim ``case``, then reuse its fit, or fit it and store the record (see the module)."""
    from perfusion.fitting.reuse import finished_fit

    path = record_path(out, case)
    with cache.claim(path) as mine:
        if not mine:
            return {"case": case.name, "status": BUSY}
        summary = finished_fit(out / case.name, cfg, case)
        if summary is not None:
            stored = cache.load(path, key)
            if stored is not None and stored.get("status") in (FITTED, REUSED):
                return {**stored, "status": REUSED}
            return cache.store(path, key, _record(case, REUSED, summary=summary))
        return cache.store(path, key, _attempt(case, out / case.name, cfg, after))


def _attempt(case: Path, fit_dir: Path, cfg: Any, after: Callable | None) -> dict[str, Any]:
    """Fit one case; any failure becomes the record's one-line error."""
    from perfusion.fitting.tracked import fit_tracked
    from perfusion.resources import check_memory

    started = time.perf_counter()
    try:
        check_memory("fit", scan_file(case))
        summary = fit_tracked(case, cfg, fit_dir, after=after)
    except PerfusionError as exc:
        return _record(case, FAILED, error=error_line(exc), seconds=time.perf_counter() - started)
    except Exception as exc:  # a bug or a resource fault in one case must not stop the cohort
        first = (str(exc).strip().splitlines() or [""])[0]
        error = f"{case}: {type(exc).__name__}: {first}".rstrip(": ")
        return _record(case, FAILED, error=error, seconds=time.perf_counter() - started)
    return _record(case, FITTED, summary=summary, seconds=time.perf_counter() - started)


def _record(
    case: Path,
    status: str,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    return {
        "case": case.name,
        "path": str(case),
        "status": status,
        "error": error,
        "seconds": seconds,
        "method": (summary or {}).get("method"),
        "wall_time_s": (summary or {}).get("wall_time_s"),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def describe(record: dict[str, Any]) -> str:
    """The progress line's text for one record."""
    status = record["status"]
    if status == BUSY:
        return "taken by another process"
    if status == FAILED:
        return f"failed: {record['error']}"
    if status == REUSED:
        return "reused (fitted before with this configuration)"
    return f"fitted in {record['seconds']:.1f} s ({record['method']})"


def cohort_group(out: str | Path) -> str:
    """The W&B group of a cohort's runs: the same for every shard writing to ``out``."""
    return f"fit-cohort-{Path(out).absolute().name}"
