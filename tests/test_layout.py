"""The package layout: every module belongs to a layer, and no module imports a higher layer.

The layers follow the data flow (ARCHITECTURE.md). Imports under ``if TYPE_CHECKING:`` are for
annotations only and do not count. A module that imports a higher layer, even inside a
function, fails here with the offending line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlflow_energy"

# Lowest first. Modules of one layer may import each other's layer-mates only where listed as
# one group; `sweep` and `fit` share a rank but neither imports the other.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "_version", "schema"),
    ("_imports", "carbon"),
    ("families",),
    ("config",),
    ("flops",),
    ("measure",),
    ("tracking",),
    ("_plotstyle",),
    ("sweep", "fit", "autologging"),
    ("predict",),
    ("search",),
    ("plugins",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_LINES = 420  # "about 400": one concept per module


def _unit(module: str) -> str:
    """The first component below ``mlflow_energy`` (a package or a top-level module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.parts)


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, module)`` of every import outside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mlflow_energy":
                found.extend((node.lineno, f"mlflow_energy.{a.name}") for a in node.names)
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return [(line, mod) for line, mod in found if mod.startswith("mlflow_energy.")]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    name = _module_name(path)
    unit = _unit(name)
    if unit == "__init__":
        return
    assert unit in RANK, f"{name}: add its package to LAYERS in tests/test_layout.py and ARCHITECTURE.md"
    bad = []
    for line, target in _runtime_imports(ast.parse(path.read_text())):
        other = _unit(target)
        if other in ("__init__", unit):
            continue
        if RANK[other] >= RANK[unit]:
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} ({other} is not below {unit})")
    assert not bad, "\n".join(bad)


def test_every_package_is_in_a_layer() -> None:
    units = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert units <= set(RANK), sorted(units - set(RANK))


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these into one concept per module: {long}"


def test_packages_declare_their_public_names() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.parent.name}/__init__.py: say what the package owns"
        names = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}
        assert "__all__" in names, f"{init.parent.name}/__init__.py: list the public names in __all__"


@pytest.mark.parametrize(
    "package", ["families", "flops", "measure", "tracking", "sweep", "fit", "autologging", "predict", "search"]
)
def test_public_names_resolve(package: str) -> None:
    import importlib

    mod = importlib.import_module(f"mlflow_energy.{package}")
    for name in mod.__all__:
        assert getattr(mod, name) is not None, f"mlflow_energy.{package}.{name}"
