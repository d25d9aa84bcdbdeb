"""Results keyed by a digest of the configuration that made them.

Every long-running command that resumes (bench, compare, loocv, sweeps, meta-train, fit-cohort)
keeps its finished results here in one way: a JSON file whose ``config_digest`` is
:func:`digest` of the settings that made it. :func:`load` returns it only when the digest
matches, so a changed configuration never reuses an old result; :func:`claim` lets several
processes share the work without a coordinator (the first to take a unit's lock runs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from perfusion.atomic import json_default, write_json_atomic

DIGEST_KEY = "config_digest"


def canonical(config: Any) -> Any:
    """Plain JSON-able data of a config: OmegaConf nodes resolved, dataclasses as dicts,
    paths as strings; dict keys sorted by :func:`digest`."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(config, (DictConfig, ListConfig)):
        return canonical(OmegaConf.to_container(config, resolve=True))
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return canonical(dataclasses.asdict(config))
    if isinstance(config, dict):
        return {str(k): canonical(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [canonical(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def digest(*parts: Any) -> str:
    """16 hex characters of SHA-256 over the canonical JSON of ``parts`` (order of dict keys
    does not matter, order of ``parts`` and of lists does)."""
    text = json.dumps(canonical(list(parts)), sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load(path: str | Path, key: str) -> dict[str, Any] | None:
    """The result at ``path`` when it was made with digest ``key``; None when absent, unreadable
    (a run killed before the atomic rename leaves no file) or made with another configuration."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(result, dict) or result.get(DIGEST_KEY) != key:
        return None
    return result


def store(path: str | Path, key: str, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``result`` stamped with ``key`` atomically; returns the stamped dict."""
    stamped = {DIGEST_KEY: key, **{k: v for k, v in result.items() if k != DIGEST_KEY}}
    write_json_atomic(path, stamped)
    return stamped


@contextlib.contextmanager
def claim(path: str | Path) -> Iterator[bool]:
    """Try to take ``<path>.lock`` without waiting: yields True to the one process that holds
    it (it should re-check :func:`load`, then compute and :func:`store`), False to the others."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def cached(path: str | Path, key: str, compute: Any) -> dict[str, Any] | None:
    """The result at ``path`` for ``key``, computing and storing it when missing or stale;
    None when another process holds the unit (it will store it)."""
    result = load(path, key)
    if result is not None:
        return result
    with claim(path) as mine:
        if not mine:
            return None
        result = load(path, key)  # another process may have finished it meanwhile
        return result if result is not None else store(path, key, compute())
