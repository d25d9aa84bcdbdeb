"""A phantom cohort that processes started together generate once: the others wait for it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from filelock import FileLock

from perfusion.errors import PerfusionError
from perfusion.meta.config import MetaConfig
from perfusion.meta.experiment import ensure_cohort
from perfusion.phantom import cohort as phantom_cohort


def record_generations(monkeypatch) -> list[Path]:
    """Replace the generator by one that writes only the completion mark, and list its calls."""
    calls: list[Path] = []

    def fake_make_cohort(cfg, folder):
        assert cfg.n == 2 and Path(cfg.out) == Path(folder)  # phantom.yaml + the overrides
        calls.append(Path(folder))
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "cohort.json").write_text("{}")

    monkeypatch.setattr(phantom_cohort, "make_cohort", fake_make_cohort)
    return calls


def test_a_folder_from_elsewhere_is_never_written(tmp_path: Path, monkeypatch) -> None:
    calls = record_generations(monkeypatch)
    theirs = tmp_path / "theirs"
    (theirs / "case-a").mkdir(parents=True)
    phantom_cohort.ensure_generated(theirs, ["no_such_key=1"], "generating")  # not read
    assert calls == [] and not (theirs / "cohort.json").exists()
    phantom_cohort.ensure_generated(tmp_path / "new", ["n=2"], "generating")
    assert calls == [tmp_path / "new"]
    phantom_cohort.ensure_generated(tmp_path / "new", ["n=2"], "generating")
    assert calls == [tmp_path / "new"]  # complete: not again


def test_a_second_process_waits_for_the_whole_cohort(tmp_path: Path, monkeypatch) -> None:
    calls = record_generations(monkeypatch)
    folder = tmp_path / "cohort"
    (folder / "patient-000").mkdir(parents=True)  # a first process is half-way through
    with FileLock(str(tmp_path / "cohort.lock")):
        waiter = threading.Thread(
            target=phantom_cohort.ensure_generated, args=(folder, ["n=2"], "generating")
        )
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive()  # it does not read the half-written cohort
        (folder / "cohort.json").write_text("{}")  # the first process finishes
    waiter.join(timeout=10.0)
    assert not waiter.is_alive() and calls == []


def test_a_generation_cut_short_is_done_again(tmp_path: Path, monkeypatch) -> None:
    calls = record_generations(monkeypatch)
    folder = tmp_path / "cohort"
    (folder / "patient-000").mkdir(parents=True)
    (tmp_path / "cohort.lock").touch()  # generated here, but no cohort.json: interrupted
    phantom_cohort.ensure_generated(folder, ["n=2"], "generating")
    assert calls == [folder]


def test_meta_training_refuses_a_foreign_folder_without_cases(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    (theirs / "notes").mkdir(parents=True)
    cfg = MetaConfig()
    cfg.cohort.dir = str(theirs)
    with pytest.raises(PerfusionError, match="no case folders"):
        ensure_cohort(cfg)
    assert not (theirs / "cohort.json").exists()
