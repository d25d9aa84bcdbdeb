"""The one exception type the command line turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class PerfusionError(Exception):
    """Bad input or an unrecoverable run state, reported as ``<file>: <fault>``.

    Args:
        message: what is wrong, in one line.
        path: the file or folder at fault; prefixed to the message when given.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.fault = message
        super().__init__(message if path is None else f"{Path(path).name or path}: {message}")
