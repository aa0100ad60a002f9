"""Typed command-line options: each parses its text once, the MLproject way included.

``mlflow run`` passes every parameter, so an unset one arrives as an empty string (or as
``default``/``None`` where a spec says so). :func:`unset` is the one place that convention is
read: every type below turns such a value into its ``unset`` value (``None``: "use the family
or library default"). A bad value raises :class:`~mlflow_energy.errors.ConfigError`, which the
command group prints as one line naming the field, the value and what is allowed (exit 2).

Example:
    >>> Int("steps", minimum=1).convert("30", None, None)
    30
    >>> Int("steps", minimum=1).convert("", None, None) is None
    True
    >>> Float("guidance_scale", minimum=0.0).convert("inf", None, None)
    Traceback (most recent call last):
    ...
    mlflow_energy.errors.ConfigError: guidance_scale='inf' is not allowed: expected a finite number >= 0
"""

from __future__ import annotations

import math
from typing import Any

import click

from mlflow_energy.errors import ConfigError

UNSET_TEXTS = ("", "default", "none", "null")


def unset(value: Any) -> bool:
    """True for a value that means "not given": ``None``, or MLproject's empty/``default`` strings."""
    return value is None or (isinstance(value, str) and value.strip().lower() in UNSET_TEXTS)


class _Typed(click.ParamType):
    """Base: ``unset`` values map to ``self.unset_value``; others go through :meth:`parse`."""

    def __init__(self, field: str, *, unset_value: Any = None) -> None:
        self.field = field
        self.unset_value = unset_value

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if unset(value):
            return self.unset_value
        if not isinstance(value, str):
            return value  # a default given in Python, already typed
        return self.parse(value.strip())

    def parse(self, text: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Int(_Typed):
    """An integer in ``[minimum, maximum]``."""

    name = "integer"

    def __init__(self, field: str, *, minimum: int | None = None, maximum: int | None = None,
                 unset_value: int | None = None) -> None:
        super().__init__(field, unset_value=unset_value)
        self.minimum, self.maximum = minimum, maximum

    def _allowed(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"an integer from {self.minimum} to {self.maximum}"
        return f"an integer >= {self.minimum}" if self.minimum is not None else "an integer"

    def parse(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(self.field, text, self._allowed()) from None
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ConfigError(self.field, value, self._allowed())
        return value


class Float(_Typed):
    """A finite number ``>= minimum`` (``> minimum`` with ``strict``) and ``<= maximum``."""

    name = "number"

    def __init__(self, field: str, *, minimum: float | None = None, strict: bool = False,
                 unset_value: float | None = None, allowed: str | None = None, maximum: float | None = None) -> None:
        super().__init__(field, unset_value=unset_value)
        self.minimum, self.strict, self.maximum = minimum, strict, maximum
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        if maximum is not None:
            bound += f"{' and' if minimum is not None else ''} <= {maximum:g}"
        self.allowed = allowed or f"a finite number{bound}"

    def parse(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(self.field, text, self.allowed) from None
        low = self.minimum
        if not math.isfinite(value) or (low is not None and (value <= low if self.strict else value < low)):
            raise ConfigError(self.field, text, self.allowed)
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(self.field, text, self.allowed)
        return value


class Text(_Typed):
    """A string; unset values map to ``unset_value``."""

    name = "text"

    def __init__(self, field: str = "", *, unset_value: str | None = None) -> None:
        super().__init__(field, unset_value=unset_value)

    def parse(self, text: str) -> str:
        return text


class Name(_Typed):
    """A name the tracking store keeps: non-empty, printable, at most ``maximum`` characters.

    Example:
        >>> Name("experiment").convert("energy-h100", None, None)
        'energy-h100'
    """

    name = "name"

    def __init__(self, field: str, *, maximum: int | None = None, unset_value: str | None = None,
                 required: bool = False) -> None:
        from mlflow_energy.tracking.filters import MAX_EXPERIMENT_NAME

        super().__init__(field, unset_value=unset_value)
        self.maximum = MAX_EXPERIMENT_NAME if maximum is None else maximum
        self.required = required

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if self.required and isinstance(value, str):
            return self.parse(value)  # "" is a bad name here, not "unset"
        return super().convert(value, param, ctx)

    def parse(self, text: str) -> str:
        from mlflow_energy.tracking.filters import check_name

        return check_name(self.field, text, self.maximum)


class NumberOrText(_Typed):
    """A number where the text is one, else the text (``--carbon-intensity 350`` or ``DEU``)."""

    name = "number-or-name"

    def parse(self, text: str) -> float | str:
        try:
            value = float(text)
        except ValueError:
            return text
        if not math.isfinite(value) or value < 0:
            raise ConfigError(self.field, text, "a country code, WORLD or a finite number >= 0 in g/kWh")
        return value


def values(items: tuple[str, ...]) -> list[str]:
    """A repeated option's given values, unset ones dropped (MLproject passes ``''``)."""
    return [v.strip() for v in items if not unset(v)]
