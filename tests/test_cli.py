"""The command line: help, unknown commands, and config errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from perfusion.cli import COMMANDS, main
from perfusion.config import load_config, save_resolved, split_args, to_object
from perfusion.errors import PerfusionError


@dataclass
class _Inner:
    """A nested group."""

    steps: int = 10
    """Iterations."""


@dataclass
class _Schema:
    """A tiny schema standing in for a command's config."""

    lr: float = 1e-3
    """Learning rate."""
    name: str = "run"
    """Run name."""
    inner: _Inner = field(default_factory=_Inner)
    """Nested options."""


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: perfusion <command>")
    assert all(name in out for name in COMMANDS)


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_overrides_merge_with_types(tmp_path: Path) -> None:
    cfg = load_config(_Schema, overrides=["lr=0.5", "inner.steps=3"])
    assert to_object(cfg) == _Schema(lr=0.5, inner=_Inner(steps=3))
    assert "steps: 3" in save_resolved(cfg, tmp_path).read_text()


def test_unknown_key_is_named() -> None:
    with pytest.raises(PerfusionError, match="inner.stepz"):
        load_config(_Schema, overrides=["inner.stepz=3"])


def test_wrong_type_is_named() -> None:
    with pytest.raises(PerfusionError, match="'inner.steps'"):
        load_config(_Schema, overrides=["inner.steps=many"])


def test_yaml_unknown_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("lr: 0.1\nbatch: 4\n")
    with pytest.raises(PerfusionError, match="'batch'.*bad.yaml"):
        load_config(_Schema, [tmp_path / "bad.yaml"])


def test_split_args_accepts_double_dash_overrides() -> None:
    assert split_args(["case", "--lr=0.1", "out=x"]) == (["case"], ["lr=0.1", "out=x"])


def test_command_override_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(tmp_path), "colour=red"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perfusion inspect: ") and "colour" in err and err.count("\n") == 1


def test_override_that_is_not_yaml_is_named() -> None:
    """Brackets inside an unquoted list item used to escape as a yaml traceback."""
    with pytest.raises(PerfusionError, match=r"bad override 'name=\[a=\[1,2\]\]': not YAML"):
        load_config(_Schema, overrides=["name=[a=[1,2]]"])


def test_later_override_of_the_same_key_wins() -> None:
    cfg = load_config(_Schema, overrides=["inner.steps=3", "lr=0.5", "inner.steps=4"])
    assert to_object(cfg) == _Schema(lr=0.5, inner=_Inner(steps=4))
