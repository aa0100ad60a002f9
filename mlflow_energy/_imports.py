"""Deferred imports: optional packages with a helpful message (Optuna's style), and lazy package exports."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from mlflow_energy.errors import MissingDependencyError


def require(module: str, feature: str, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only when a package is missing
        raise MissingDependencyError(package or module.split(".")[0], feature, extra) from exc


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names live in submodules.

    ``exports`` maps each public name to the submodule (relative to ``package``) that defines
    it. A name is imported on first access, so importing the package stays cheap and a light
    submodule never pays for a heavy sibling (PEP 562).

    Example:
        >>> getattr_, dir_ = lazy_exports("mlflow_energy.flops", {"PHASES": "count"})
        >>> getattr_("PHASES")[0]
        'text_encode'
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
