"""``make gpu-check``'s CPU dry run: the same script at tiny sizes, saying what it skipped."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_on_the_cpu_and_says_the_gpu_parts_were_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    save = tmp_path / "table.md"
    assert _load().main(["--dry-run", "--work", str(tmp_path / "work"), "--save", str(save)]) == 0
    assert "gpu-check: GPU parts skipped (" in capsys.readouterr().out
    text = save.read_text()
    assert text.startswith("# GPU check\n\nCommand: `make gpu-check ARGS=--dry-run`")
    cells = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")][2:]
    rows = {c[0].strip("| "): (c[1], c[2], c[3].strip(" |")) for c in cells}
    assert rows["tcnn parity tests"][2] in ("ok", "skipped")
    setting, result, status = rows["fit step, torch hash encoding"]
    assert status == "ok" and setting.startswith("batch 2,000 points, cpu")
    assert float(result.split()[0]) > 0
    setting, result, status = rows["whole default perfusion fit"]
    assert (setting, status) == ("phantom 24x24x4, cpu", "ok") and " s wall (fit " in result
    assert rows["GPU parts"][2] == "skipped"
    assert all(status != "FAILED" for _, _, status in rows.values())
