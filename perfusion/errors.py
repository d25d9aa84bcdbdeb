"""The one exception type the command line turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class PerfusionError(Exception):
    """Bad input or an unrecoverable run state, reported as ``<file>: <fault>``.

    Args:
        message: what is wrong, in one line.
        path: the file or folder at fault; prefixed to the message when given.
        full_path: prefix the whole path, not only its name (for files whose name alone is
            ambiguous, such as ``core.nii.gz`` in one of many case folders).
    """

    def __init__(
        self, message: str, path: str | Path | None = None, full_path: bool = False
    ) -> None:
        self.path = None if path is None else Path(path)
        self.fault = message
        if path is None:
            text = message
        else:
            text = f"{path if full_path else Path(path).name or path}: {message}"
        super().__init__(text)


def error_line(exc: PerfusionError) -> str:
    """``<absolute path>: <fault>`` (or the bare message): the user can find the file named."""
    if exc.path is None:
        return str(exc)
    return f"{exc.path.absolute()}: {exc.fault}"
