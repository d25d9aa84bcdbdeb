"""The command line: help, version, config errors naming the key, refusals naming full paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from layouts import AFFINE, SHAPE, make_case

from perfusion.cli import COMMANDS, error_line, main
from perfusion.config import load_config, save_resolved, split_args, to_object
from perfusion.errors import PerfusionError
from perfusion.help import Options, command_help, one_line, plain
from perfusion.io import read_case, write_nifti_atomic
from perfusion.resources import check_out_dir


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


# --- help and version ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_answers_help(name: str, flag: str, capsys: pytest.CaptureFixture) -> None:
    assert main([name, flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: perfusion {name}"), out[:200]
    assert "\nkeys (key=value" in out


def test_help_lines_come_from_yaml_defaults_and_field_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERFUSION_CONFIGS", str(tmp_path))
    (tmp_path / "tiny.yaml").write_text("lr: 0.5\n")
    module = ModuleType("fake")
    module.__doc__ = "``perfusion fake CASE [key=value ...]``: does a thing.\n\nMore words."
    module.OPTIONS = Options(_Schema, ("tiny.yaml",), aliases={"n": "inner.steps"})
    text = command_help("fake", module, "summary")
    lines = text.splitlines()
    assert lines[:5] == [
        "usage: perfusion fake CASE [key=value ...]",
        "",
        "does a thing.",
        "",
        "More words.",
    ]
    assert f"  {'lr=0.5':<32}  Learning rate." in lines  # the YAML's value, the field's docstring
    assert f"  {'name=run':<32}  Run name." in lines
    assert "  inner.*: Nested options." in lines
    assert f"  {'inner.steps=10':<32}  Iterations." in lines
    assert lines[-1] == "shorthands: n= for inner.steps="


def test_one_line_keeps_eq_references_and_cuts_long_text() -> None:
    assert one_line("Uses Eq. (1), ``C(t)``. Second sentence.") == "Uses Eq. (1), C(t)."
    assert one_line("word " * 30, chars=20) == "word word word ..."
    assert plain(":class:`~perfusion.io.Case` or :mod:`perfusion.io`") == "Case or perfusion.io"


def test_version_is_the_distribution_version(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"perfusion {version('perfusion-fields')}\n"


def test_a_dash_option_is_refused_naming_key_value(capsys: pytest.CaptureFixture) -> None:
    assert main(["fit", "case", "--steps", "4"]) == 2
    assert capsys.readouterr().err == (
        "perfusion fit: unknown option '--steps': options are key=value (perfusion fit --help)\n"
    )


# --- refusals before any work: full paths, no torch -----------------------------------------------

NO_TORCH = """
import sys
from perfusion.cli import main
code = main(sys.argv[1:])
print(code, "torch" in sys.modules)
"""


@pytest.mark.parametrize("command", ["fit", "preprocess", "segment"])
def test_missing_case_folder_names_full_path_before_torch(tmp_path: Path, command: str) -> None:
    words = [command, "no-such-case", f"out={tmp_path / 'out'}"]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, *words],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.stdout == "2 False\n", done.stderr
    assert (
        done.stderr == f"perfusion {command}: {tmp_path / 'no-such-case'}: case folder not found\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


NO_TORCH_EACH = """
import contextlib, io, json, sys
from perfusion.cli import main
answers = []
for words in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(words)
    answers.append([code, out.getvalue()[:40], err.getvalue(), "torch" in sys.modules])
print(json.dumps(answers))
"""


def test_help_and_key_errors_of_every_command_answer_without_torch(tmp_path: Path) -> None:
    """One interpreter runs them in turn, so the first that imports torch is the one named."""
    case = tmp_path / "case"
    make_case(case)
    out = f"out={tmp_path / 'out'}"
    runs = [[name, "--help"] for name in COMMANDS]
    refusals = {  # argv: what the one-line error must say
        ("fit", str(case), out, "colour=red"): "colour",
        ("fit", str(case), out, "steps=-5"): "steps: -5, expected 0 or more",
        ("fit", str(case), out, "method=foo"): "method: 'foo', expected one of",
        ("fit", str(case), out, "ode_prefit_schedule=cosine"): "ode_prefit_schedule: 'cosine'",
        ("fit", str(case), out, "ode_prefit_tmax=mode"): "ode_prefit_tmax: 'mode'",
        ("fit", str(case), out, "ode_prefit_prior_share=2"): "ode_prefit_prior_share: 2",
        ("fit", str(case), out, "stop.min_steps=-1"): "stop.min_steps: -1, expected 0 or more",
        ("fit", str(case), out, "ode_prefit_prior_block=[0,4,2]"): "ode_prefit_prior_block: [0",
        ("fit", str(case), out, "ode_prefit_prior_block=[4,4]"): "ode_prefit_prior_block: [4, 4]",
        ("fit", str(case), out, "ode_prefit_prior_block_mm=[0,7,9]"): "prior_block_mm: [0.0, 7",
        ("fit", str(case), out, "ode_prefit_prior_block=[4,4,2]"): "prior_block_mm are both set",
        ("fit", str(case), out, "ode_prefit_start_mm=[1.8,1.8]"): "ode_prefit_start_mm: [1.8, 1.8]",
        ("fit", str(case), out, "seed=many"): "'seed'",
        ("fit-cohort", str(tmp_path), out, "shard=2/2"): "shard: '2/2', expected i/n",
        ("fit-cohort", str(tmp_path), out, "method=foo"): "method: 'foo', expected one of",
        ("phantom", out, "colour=red"): "colour",
        ("phantom", out, "n=many"): "'n'",
        ("meta-train", "colour=red"): "colour",
        ("compare", "colour=red"): "colour",
    }
    runs += [list(words) for words in refusals]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_EACH, json.dumps(runs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout)
    for words, (code, start, err, torch) in zip(runs[: len(COMMANDS)], answers, strict=False):
        assert (code, torch) == (0, False), f"{words}: exit {code}, torch imported: {torch}"
        assert start.startswith(f"usage: perfusion {words[0]}") and err == "", words
    for words, (code, _, err, torch) in zip(refusals, answers[len(COMMANDS) :], strict=True):
        assert (code, torch) == (2, False), f"{words}: exit {code}, torch imported: {torch}"
        assert err.startswith(f"perfusion {words[0]}: ") and err.count("\n") == 1, err
        assert refusals[words] in err, err
    assert not (tmp_path / "out").exists()


def _out_commands(tmp_path: Path) -> dict[str, list[str]]:
    case = tmp_path / "case"
    make_case(case)
    return {
        "fit": ["fit", str(case)],
        "fit-cohort": ["fit-cohort", str(tmp_path)],
        "preprocess": ["preprocess", str(case)],
        "convert": ["convert", str(case)],
        "phantom": ["phantom"],
        "bench": ["bench"],
        "train-seg": ["train-seg", str(tmp_path / "cohort")],
        "segment": ["segment", str(case)],
    }


@pytest.mark.parametrize(
    "command",
    ["fit", "fit-cohort", "preprocess", "convert", "phantom", "bench", "train-seg", "segment"],
)
def test_out_naming_a_file_or_under_a_file_is_refused(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture
) -> None:
    words = _out_commands(tmp_path)[command]
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*words, f"out={taken}"]) == 2
    assert capsys.readouterr().err == (
        f"perfusion {command}: {taken}: out= names an existing file, not a folder\n"
    )
    assert main([*words, f"out={taken / 'sub'}"]) == 2
    assert (
        capsys.readouterr().err
        == f"perfusion {command}: {taken}: out= lies under a file, not a folder\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before and taken.read_text() == "keep me"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_out_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PerfusionError, match="out= is not writable") as info:
        check_out_dir("/proc/perfusion-test/out")
    assert info.value.path == Path("/proc")
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # the probe file is gone, nothing created


def test_relative_error_paths_are_shown_absolute() -> None:
    assert error_line(PerfusionError("3-D image", "case/ctp.nii.gz")) == (
        f"{Path.cwd() / 'case' / 'ctp.nii.gz'}: 3-D image"
    )
    assert error_line(PerfusionError("no path here")) == "no path here"


# --- reading options: core_label= -----------------------------------------------------------------


def test_label_core_is_refused_until_core_label_picks_one(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    case = tmp_path / "case"
    make_case(case)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, 2, 1] = 1
    labels[3, 2, 1] = labels[4, 2, 1] = 2
    write_nifti_atomic(case / "core.nii.gz", labels, AFFINE, dtype=np.uint8)
    assert main(["inspect", str(case)]) == 2
    assert "mask holds values 0, 1, 2" in capsys.readouterr().err
    assert main(["inspect", str(case), "core_label=1"]) == 0
    assert "core: 1 voxels, 0.02 ml" in capsys.readouterr().out  # 2 x 2 x 5 mm voxels
    assert main(["convert", str(case), f"out={tmp_path / 'out'}", "core_label=2"]) == 0
    converted = read_case(tmp_path / "out")  # written as a 0/1 mask: no label needed any more
    assert converted.core is not None and converted.core.sum() == 2 and converted.core[4, 2, 1]
    assert main(["inspect", str(case), "core_label=3"]) == 2
    assert "no voxel has label 3 (values found: 0, 1, 2)" in capsys.readouterr().err


def test_every_fit_key_has_its_own_help_line() -> None:
    """Every leaf key of FitConfig has the docstring written after it (``perfusion help fit``);
    a field inserted between another and its docstring would take that line and leave a key
    without one."""
    import dataclasses
    import typing

    from perfusion.fitting.config import FitConfig
    from perfusion.help import field_docs

    missing = []

    def walk(cls: type, prefix: str) -> None:
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[item.name]):
                walk(hints[item.name], f"{prefix}{item.name}.")
            elif item.name not in docs:
                missing.append(prefix + item.name)

    walk(FitConfig, "")
    assert missing == []
