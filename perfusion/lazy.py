"""Lazy package re-exports (PEP 562): a package names its public objects without importing them.

``perfusion.fitting``, ``fields``, ``phantom`` and ``meta`` re-export names whose modules import
torch (and Lightning). Importing them eagerly made ``perfusion fit --help`` and a mistyped key
take 3-5 s before answering; with :func:`lazy_exports` a name's module is imported on first use,
so ``from perfusion.fitting.config import FitConfig`` stays torch-free while
``from perfusion.fitting import FitConfig`` still works.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, Iterable[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package's ``__init__``: each name loads on first access.

    Args:
        package: the package's ``__name__``.
        exports: ``{submodule: names}``, e.g. ``{"config": ("FitConfig",)}``.

    Returns:
        The module-level ``__getattr__`` and ``__dir__`` of PEP 562; an unknown name raises
        ``AttributeError`` (so ``from package import submodule`` still imports the submodule).
    """
    where = {name: f"{package}.{module}" for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)  # cached: the next lookup skips this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
