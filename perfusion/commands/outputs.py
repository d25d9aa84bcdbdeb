"""Where a case's maps go by default, and the last line of a command: which files it wrote,
where (``wrote /abs/out: ...``)."""

from __future__ import annotations

from pathlib import Path

NIFTI = ".nii.gz"
SHOWN = 10
"""Entries of one kind listed by name; more are shortened to first, ..., last (count)."""
CLOCK_SLACK_S = 1.0
"""File times come from the kernel's coarse clock, which may lag ``time.time()`` slightly."""


def case_maps_folder(case: Path, method: str) -> Path:
    """``CASE/fits/<method>``: where ``perfusion fit`` writes without ``out=`` and where
    ``perfusion segment`` looks first."""
    return case / "fits" / method


def wrote_line(folder: str | Path, since: float) -> str:
    """``wrote <abs folder>: cbf, cbv .nii.gz; summary.json; wandb/`` for entries changed since.

    Args:
        folder: the output folder.
        since: ``time.time()`` at the start of the run; older entries (an earlier run's files
            kept in the folder) are not listed.
    """
    folder = Path(folder).absolute()
    entries = (
        sorted(p for p in folder.iterdir() if p.stat().st_mtime >= since - CLOCK_SLACK_S)
        if folder.is_dir()
        else []
    )
    maps = [p.name[: -len(NIFTI)] for p in entries if p.is_file() and p.name.endswith(NIFTI)]
    files = [p.name for p in entries if p.is_file() and not p.name.endswith(NIFTI)]
    folders = [f"{p.name}/" for p in entries if p.is_dir() and not p.name.startswith(".")]
    groups = [_names(maps) + f" {NIFTI}" if maps else "", _names(files), _names(folders)]
    listed = "; ".join(g for g in groups if g)
    return f"wrote {folder}: {listed or 'nothing new'}"


def _names(names: list[str]) -> str:
    if len(names) > SHOWN:
        return f"{', '.join(names[:3])}, ..., {names[-1]} ({len(names)})"
    return ", ".join(names)
