"""``out/cohort.csv``: one row per case of a fitted cohort, its DEFUSE-3 volumes, warnings and
fit diagnostics.

Read from each case's ``cohort.json`` record and, for a fitted or reused case, its
``summary.json`` (:mod:`perfusion.fitting.cohort`). A case with no record is ``missing`` (not yet
fitted, or fitted by another process that has not finished); a failed case keeps its error and
no volumes. ``config_digest`` tells cases fitted with different configurations apart.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perfusion.atomic import write_text_atomic
from perfusion.cache import DIGEST_KEY
from perfusion.clinical import fit_warnings
from perfusion.fitting.cohort import FAILED, FITTED, REUSED, read_record

TABLE_FILE = "cohort.csv"
MISSING = "missing"

COLUMNS: dict[str, tuple[str, ...]] = {
    # column: path of keys into summary.json
    "method": ("method",),
    "wall_time_s": ("wall_time_s",),
    "fit_time_s": ("fit_time_s",),
    "steps": ("steps",),
    "stop_reason": ("stop", "reason"),
    "noise_sd_hu": ("noise", "sd_hu"),
    "aif_source": ("preprocess", "aif", "source"),
    "aif_confidence": ("preprocess", "aif", "confidence"),
    "tissue_cnr": ("preprocess", "contrast", "cnr"),  # below preprocess.min_tissue_cnr: flagged
    "affected_side": ("defuse3", "affected_side"),
    "core_ml": ("defuse3", "core_volume_ml"),
    "tmax_gt_6s_ml": ("defuse3", "tmax_gt_6s_volume_ml"),
    "tmax_gt_10s_ml": ("defuse3", "tmax_gt_10s_volume_ml"),
    "mismatch_ml": ("defuse3", "mismatch_volume_ml"),
    "mismatch_ratio": ("defuse3", "mismatch_ratio"),
    "defuse3_target_mismatch": ("defuse3", "defuse3_target_mismatch"),
}
"""The columns taken from summary.json (the noise and stop reason exist for neural fits only)."""
HEADER = ("case", "status", "error", *COLUMNS, "warnings", "seconds", DIGEST_KEY)
"""``warnings``: the findings the fit warned about, ``; ``-separated
(:func:`perfusion.clinical.fit_warnings`)."""


def case_row(case: Path, out: Path) -> dict[str, Any]:
    """The CSV row of one case (values as found; empty where unknown)."""
    record = read_record(out, case) or {}
    status = record.get("status", MISSING)
    row: dict[str, Any] = {
        "case": case.name,
        "status": status,
        "error": record.get("error"),
        "seconds": record.get("seconds"),
        DIGEST_KEY: record.get(DIGEST_KEY),
    }
    summary_path = out / case.name / "summary.json"
    if status in (FITTED, REUSED) and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row.update({column: _get(summary, keys) for column, keys in COLUMNS.items()})
        found = fit_warnings(summary)
        row["warnings"] = "; ".join(finding for finding, _ in found)
    return row


def write_table(cases: Sequence[Path], out: str | Path) -> tuple[Path, dict[str, int]]:
    """Write ``out/cohort.csv`` for ``cases``; returns its path and the count of each status."""
    out = Path(out)
    rows = [case_row(case, out) for case in sorted(cases, key=lambda p: p.name)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(row.get(k)) for k in HEADER} for row in rows)
    path = write_text_atomic(out / TABLE_FILE, buffer.getvalue())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return path, counts


def count_line(counts: dict[str, int]) -> str:
    """``3 fitted, 1 failed`` in a fixed order."""
    order = [FITTED, REUSED, FAILED, MISSING]
    keys = order + sorted(k for k in counts if k not in order)
    return ", ".join(f"{counts[k]} {k}" for k in keys if counts.get(k))


def _get(summary: dict[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = summary
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
