"""Architecture checks with ``ast``: no module imports a later layer; Lightning and MONAI stay put.

Layers (team contract; style.md section 3): a module may import its own layer and earlier ones.
Every import counts, including those inside functions (a lazy import is still a dependency).
Every module under perfusion/ must be in the table (a new one fails until it is placed), and
every table entry must exist. The top-level ``experiments`` package may import perfusion; no
perfusion module imports it (the CLI names its two commands as strings, in cli.py only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "perfusion"
EXPERIMENTS = REPO / "experiments"
LAYERS: list[set[str]] = [
    {
        "__init__",
        "units",
        "config",
        "errors",
        "atomic",
        "tracking",
        "progress",
        "help",
        "resources",
        "lazy",
        "cache",
    },
    {"io", "datasets", "evaluation", "clinical"},
    {
        "preprocess",
        "registration",
        "masks",
        "aif",
        "physics",
        "domain",
        "gamma_variate",
        "prepared",
        "noise",
    },
    {"phantom", "fields", "report"},
    {"fitting", "baselines"},
    {"meta"},
    {"segmentation"},
    {"sweeps", "commands", "cli"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}
LIGHTNING = {"lightning", "pytorch_lightning", "lightning_fabric"}
LIGHTNING_FILES = {"tracking.py", "progress.py", "experiment.py", "stopping.py", "train.py"}
CLI_REACHES_EXPERIMENTS = {"cli.py"}
"""The files of perfusion allowed to name ``experiments.*`` in a string (the CLI dispatch)."""


def _module_parts(path: Path, root: Path) -> list[str]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, root: Path) -> set[str]:
    """Absolute dotted names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_parts(path, root)
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            # `from perfusion import io` imports perfusion.io
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _layer_key(dotted: str, root: Path) -> str | None:
    parts = dotted.split(".")
    if parts[0] != root.name or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYER_OF else None


def _own_key(path: Path, root: Path) -> str:
    """The table name of the file ``path``: its top-level module or subpackage under ``root``."""
    return path.relative_to(root).parts[0].removesuffix(".py")


def unknown_modules(root: Path) -> list[str]:
    """Files under ``root`` whose module or subpackage is in no layer of the table."""
    return [
        str(path.relative_to(root.parent))
        for path in sorted(root.rglob("*.py"))
        if _own_key(path, root) not in LAYER_OF
    ]


def stale_entries(root: Path) -> list[str]:
    """Table entries naming no module or subpackage under ``root``."""
    present = {_own_key(path, root) for path in root.rglob("*.py")}
    return sorted(set(LAYER_OF) - present)


def layer_violations(root: Path) -> list[str]:
    """``file (layer) imports module`` for each later-layer module imported under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        own = _own_key(path, root)
        if own not in LAYER_OF:
            continue  # reported by unknown_modules
        others = {_layer_key(dotted, root) for dotted in imported_modules(path, root)}
        for other in sorted(o for o in others if o is not None and LAYER_OF[o] > LAYER_OF[own]):
            found.append(f"{path.relative_to(root.parent)} ({own}) imports {other}")
    return found


def _defines_module_class(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.ClassDef) and n.name.endswith("Module") for n in ast.walk(tree))


def placement_violations(root: Path) -> list[str]:
    """Files importing Lightning outside its allowed places, or MONAI outside segmentation/."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tops = {name.split(".")[0] for name in imported_modules(path, root)}
        rel = path.relative_to(root)
        if tops & LIGHTNING and not (
            rel.parts[0] == "commands" or rel.name in LIGHTNING_FILES or _defines_module_class(path)
        ):
            found.append(f"{rel}: imports Lightning")
        if "monai" in tops and rel.parts[0] != "segmentation":
            found.append(f"{rel}: imports MONAI")
    return found


def experiment_imports(root: Path, experiments: str = "experiments") -> list[str]:
    """``file imports experiments...`` for each import of the experiments package under ``root``,
    and ``file names 'experiments...'`` for each string naming one outside the CLI dispatch."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        for name in sorted(imported_modules(path, root)):
            if name.split(".")[0] == experiments:
                found.append(f"{rel} imports {name}")
        if path.relative_to(root).as_posix() in CLI_REACHES_EXPERIMENTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and value.split(".")[0] == experiments and "." in value:
                found.append(f"{rel} names {value!r}")
    return found


def test_every_module_is_in_a_layer() -> None:
    assert unknown_modules(PACKAGE) == []
    assert stale_entries(PACKAGE) == []


def test_no_module_imports_a_later_layer() -> None:
    assert layer_violations(PACKAGE) == []


def test_experiments_import_perfusion_and_perfusion_never_imports_them() -> None:
    assert experiment_imports(PACKAGE) == []
    tops = {
        name.split(".")[0]
        for path in EXPERIMENTS.rglob("*.py")
        for name in imported_modules(path, EXPERIMENTS)
    }
    assert "perfusion" in tops


def test_lightning_and_monai_only_where_allowed() -> None:
    assert placement_violations(PACKAGE) == []


@pytest.fixture
def fake_package(tmp_path: Path) -> Path:
    root = tmp_path / "perfusion"
    (root / "fitting").mkdir(parents=True)
    (root / "segmentation").mkdir()
    files = {
        "__init__.py": "",
        "io.py": "def f():\n    from perfusion.fitting import run\n",  # lazy, still counted
        "units.py": "from . import errors\n",
        "errors.py": "",
        "newthing.py": "from perfusion import cli\n",  # in no layer: reported, not checked
        "late.py": "import experiments.bench\nNAME = 'experiments.commands.fit'\n",  # never
        "cli.py": "MODULE = 'experiments.commands.bench'\n",  # the CLI dispatch: allowed
        "fitting/__init__.py": "from ..io import read_case\nfrom .module import FitModule\n",
        "fitting/module.py": "import lightning\nclass FitModule: ...\n",
        "fitting/run.py": "from lightning import Trainer\nimport monai\n",
        "segmentation/net.py": "from monai.networks.nets import UNet\nfrom .. import sweeps\n",
        "meta.py": "from .fitting import run\n",  # an earlier layer: allowed
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_checker_finds_planted_violations(fake_package: Path) -> None:
    assert unknown_modules(fake_package) == ["perfusion/late.py", "perfusion/newthing.py"]
    assert "sweeps" in stale_entries(fake_package) and "fitting" not in stale_entries(fake_package)
    assert experiment_imports(fake_package) == [
        "perfusion/late.py imports experiments.bench",
        "perfusion/late.py names 'experiments.commands.fit'",
    ]
    assert layer_violations(fake_package) == [
        "perfusion/io.py (io) imports fitting",
        "perfusion/segmentation/net.py (segmentation) imports sweeps",
    ]
    assert placement_violations(fake_package) == [
        "fitting/run.py: imports Lightning",
        "fitting/run.py: imports MONAI",
    ]
