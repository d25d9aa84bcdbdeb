"""Lazy package re-exports (perfusion/lazy.py): the same public names, loaded on first use.

That ``--help`` and key errors stay torch-free is checked through the CLI in test_cli.py.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perfusion"
LAZY = ["perfusion.fitting", "perfusion.fields", "perfusion.phantom", "perfusion.meta"]


def _type_checking_imports(package: str) -> dict[str, str]:
    """``{name: module}`` of the ``if TYPE_CHECKING:`` imports in the package's ``__init__``."""
    path = PACKAGE / package.split(".", 1)[1] / "__init__.py"
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for item in node.body:
                assert isinstance(item, ast.ImportFrom), ast.dump(item)
                found.update({alias.name: item.module for alias in item.names})
    return found


@pytest.mark.parametrize("package", LAZY)
def test_every_public_name_is_its_modules_object(package: str) -> None:
    """``__all__``, the TYPE_CHECKING imports and the lazy table name the same objects."""
    module = importlib.import_module(package)
    declared = _type_checking_imports(package)
    assert sorted(module.__all__) == sorted(declared)
    for name, source in declared.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), name), name
    assert set(module.__all__) <= set(dir(module))


def test_unknown_name_raises_attribute_error_and_submodules_still_import() -> None:
    import perfusion.fitting as fitting

    with pytest.raises(AttributeError, match="'perfusion.fitting' has no attribute 'nope'"):
        _ = fitting.nope
    from perfusion.fitting import maps  # a submodule, not a re-export

    assert maps.__name__ == "perfusion.fitting.maps"


def test_a_name_loads_its_module_on_first_use_only() -> None:
    code = (
        "import sys, perfusion.fitting as f; a = 'perfusion.fitting.steps' in sys.modules; "
        "f.train_step; print(a, 'perfusion.fitting.steps' in sys.modules, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "False True True\n", done.stderr
