"""Deferred optional imports with a helpful message (Optuna's style)."""

from __future__ import annotations

import importlib
from types import ModuleType

from mlflow_energy.errors import MissingDependencyError


def require(module: str, feature: str, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only when a package is missing
        raise MissingDependencyError(package or module.split(".")[0], feature, extra) from exc
