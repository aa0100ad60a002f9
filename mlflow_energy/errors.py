"""Errors that carry one clear line for the user.

Every user-facing failure names the field, the value and what is allowed, so the
CLI can print it on one line and exit with code 2 (click's usage-error code).
"""

from __future__ import annotations

from typing import Any


class MlflowEnergyError(Exception):
    """Base class of every error mlflow-energy raises on purpose."""


class ConfigError(MlflowEnergyError, ValueError):
    """A field of an input has a value that is not allowed.

    Example:
        >>> str(ConfigError("steps", 0, "an integer >= 1"))
        'steps=0 is not allowed: expected an integer >= 1'
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: expected {allowed}")


class MissingColumnError(ConfigError):
    """Input rows lack columns they need: says which are missing, and what is expected.

    Example:
        >>> str(MissingColumnError(["steps"], "the predictor's input columns"))
        "column 'steps' is missing: expected the predictor's input columns"
    """

    def __init__(self, columns: list[str], expected: str) -> None:
        super().__init__("columns", ", ".join(columns), expected)
        names = ", ".join(repr(c) for c in columns)
        self.args = (f"column{'s' if len(columns) > 1 else ''} {names} {'are' if len(columns) > 1 else 'is'} "
                     f"missing: expected {expected}",)


class MissingDependencyError(MlflowEnergyError, ImportError):
    """An optional dependency is needed for this feature and is not installed."""

    def __init__(self, package: str, feature: str, extra: str | None = None) -> None:
        hint = f"pip install 'mlflow-energy[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the package '{package}', which is not installed: run {hint}")
