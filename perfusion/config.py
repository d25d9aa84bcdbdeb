"""Structured configuration: YAML files and ``key=value`` overrides merged onto dataclasses.

Every command builds its config with :func:`load_config`, so an unknown key or a value of the
wrong type fails with a one-line :class:`~perfusion.errors.PerfusionError` naming the key, and
every run saves the resolved result with :func:`save_resolved`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from perfusion.atomic import write_text_atomic
from perfusion.errors import PerfusionError

T = TypeVar("T")

CONFIG_ENV = "PERFUSION_CONFIGS"


def config_dir() -> Path:
    """The folder of shipped YAML configs: ``$PERFUSION_CONFIGS`` or the repository's ``configs/``."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(__file__).resolve().parents[1] / "configs"


def repository_path(name: str | Path) -> Path:
    """A relative path from the working directory, or else from the repository root where the
    shipped files (``checkpoints/``) live; as given when neither exists."""
    path = Path(name)
    shipped = Path(__file__).resolve().parents[1] / path
    return shipped if not path.exists() and not path.is_absolute() and shipped.exists() else path


def resolve_config_path(name: str | Path) -> Path:
    """A YAML path as given, or relative to :func:`config_dir` (``.yaml`` optional)."""
    path = Path(name)
    candidates = [path, config_dir() / path, config_dir() / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PerfusionError(f"config file not found (nor under {config_dir()})", path)


def split_args(argv: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split command-line words into positionals and ``key=value`` overrides.

    ``--key=value`` (how ``wandb agent`` passes sweep parameters) is accepted as ``key=value``.
    """
    positionals, overrides = [], []
    for word in argv:
        if "=" in word:
            overrides.append(word[2:] if word.startswith("--") else word)
        else:
            positionals.append(word)
    return positionals, overrides


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """``["a.b=1", "c=[1,2]"]`` -> a DictConfig; values are parsed as YAML scalars or lists."""
    merged = OmegaConf.create()
    for item in overrides:
        key = item.split("=", 1)[0]
        if not key or key != key.strip():
            raise PerfusionError(f"bad override {item!r}: expected key=value")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except yaml.YAMLError as exc:  # e.g. unquoted brackets inside a list item
            raise PerfusionError(f"bad override {item!r}: not YAML ({_first_line(exc)})") from None
        except OmegaConfBaseException as exc:
            raise PerfusionError(f"bad override {item!r}: {_first_line(exc)}") from None
    return merged


def load_config(
    schema: type[T],
    yaml_paths: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    nested: dict[str, str | Path] | None = None,
) -> T:
    """Merge YAML files, then overrides, onto the dataclass ``schema``; return a typed DictConfig.

    ``nested`` maps a key of ``schema`` to a YAML merged under that key first (e.g.
    ``{"fit": "fit.yaml"}``: a meta-training run starts from the shipped fit settings). A
    ``config=NAME`` override, when present, adds ``NAME`` (a path or a name under ``configs/``)
    after ``yaml_paths``. Unknown keys and wrong types raise :class:`PerfusionError` naming the key.
    """
    extra = [o.split("=", 1)[1] for o in overrides if o.startswith("config=")]
    overrides = [o for o in overrides if not o.startswith("config=")]
    cfg = OmegaConf.structured(schema)
    sources: list[tuple[str, Any]] = []
    for key, path in (nested or {}).items():
        resolved = resolve_config_path(path)
        sources.append((str(resolved), OmegaConf.create({key: _load_yaml(resolved)})))
    for path in [*yaml_paths, *extra]:
        resolved = resolve_config_path(path)
        sources.append((str(resolved), _load_yaml(resolved)))
    sources.append(("command line", parse_overrides(overrides)))
    for origin, source in sources:
        try:
            cfg = OmegaConf.merge(cfg, source)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            raise PerfusionError(f"config key '{key}' ({origin}): {_first_line(exc)}") from None
    return cfg  # type: ignore[return-value]


def _load_yaml(path: Path) -> Any:
    try:
        return OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise PerfusionError(f"unreadable YAML: {_first_line(exc)}", path) from None


def to_object(cfg: Any) -> Any:
    """The dataclass instance behind a structured DictConfig (plain values for constructors)."""
    return OmegaConf.to_object(cfg)


def save_resolved(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs (atomically) and return its path."""
    return write_text_atomic(Path(out_dir) / name, OmegaConf.to_yaml(cfg, resolve=True))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
