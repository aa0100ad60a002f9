"""A sweep spec's grid lists checked value by value: sizes, integers, finite numbers, names.

Each bad value raises a one-line :class:`~mlflow_energy.errors.ConfigError` naming the field
(``grid.steps``, ``overrides.tiny-sd2.resolution``), the value (a long one cut short) and what is
allowed.

Example:
    >>> check_axes("grid", {"resolution": [32, "64x48"], "steps": 2}, ("resolution", "steps"))
    {'resolution': [(32, 32), (64, 48)], 'steps': [2]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow_energy.config import MAX_BATCH, MAX_GUIDANCE, MAX_POWER_LIMIT_W, MAX_SIDE, MAX_STEPS, PRECISIONS
from mlflow_energy.errors import ConfigError

__all__ = ["check_axes", "short"]


class _Short:
    """A long value in an error line: the start of its repr and its length."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def short(value: Any, limit: int = 60) -> Any:
    """``value`` itself, or the start of its repr when that is long (an error line stays one short line)."""
    text = repr(value)
    return value if len(text) <= limit else _Short(f"{text[:limit]}... ({len(text)} characters)")


def _as_list(field_name: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(field_name, value, "a non-empty list")
        return list(value)
    return [value]


def _int_list(field_name: str, values: Sequence[Any], minimum: int, maximum: int | None = None) -> list[int]:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
            raise ConfigError(field_name, v, f"integers from {minimum} to {maximum}" if maximum else
                              f"integers >= {minimum}")
    return list(values)


def _resolution(field_name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ConfigError(field_name, value, "a size: 512, \"512x768\" or [512, 768]")
    if isinstance(value, int):
        h = w = value
    elif isinstance(value, str) and "x" in value:
        parts = value.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(field_name, value, "a size: 512, \"512x768\" or [512, 768]")
        h, w = (int(p) for p in parts)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        h, w = value
    else:
        raise ConfigError(field_name, value, "a size: 512, \"512x768\" or [512, 768]")
    if h < 1 or w < 1 or h > MAX_SIDE or w > MAX_SIDE:
        raise ConfigError(field_name, value, f"sizes from 1 to {MAX_SIDE} pixels")
    return int(h), int(w)


def check_axes(prefix: str, axes: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, list[Any]]:
    if not isinstance(axes, Mapping):
        raise ConfigError(prefix, short(axes), "a mapping of " + ", ".join(allowed))
    out: dict[str, list[Any]] = {}
    for key, raw in axes.items():
        name = f"{prefix}.{key}"
        if key not in allowed:
            raise ConfigError(name, short(raw), "one of the keys " + ", ".join(allowed))
        if key == "weights":
            if not isinstance(raw, str) or not raw:
                raise ConfigError(name, raw, "'random', a local directory or a hub id")
            out[key] = [raw]
            continue
        values = _as_list(name, raw)
        if key == "resolution":
            values = [_resolution(name, v) for v in values]
        elif key in ("steps", "batch_size"):
            values = _int_list(name, values, 1, MAX_STEPS if key == "steps" else MAX_BATCH)
        elif key == "cfg_passes":  # 1 or 2, or null: what pipe(prompt) does for the family
            for v in values:
                if v is not None and (isinstance(v, bool) or v not in (1, 2)):
                    raise ConfigError(name, v, "1, 2 or null (what pipe(prompt) does for the family)")
        elif key == "guidance_scale":
            for v in values:
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                      or not 0 <= v <= MAX_GUIDANCE):
                    raise ConfigError(name, v, f"finite numbers from 0 to {MAX_GUIDANCE:g} or null (the family default)")
            values = [None if v is None else float(v) for v in values]
        elif key == "power_limit_w":
            for v in values:
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                      or not 0 < v <= MAX_POWER_LIMIT_W):
                    raise ConfigError(name, v, f"watts, numbers > 0 and <= {MAX_POWER_LIMIT_W:g}, or null (as it is)")
            values = [None if v is None else float(v) for v in values]
        elif key == "precision":
            for v in values:
                if v not in PRECISIONS:
                    raise ConfigError(name, v, "one of " + ", ".join(PRECISIONS))
        elif key in ("model", "scheduler"):
            for v in values:
                if not isinstance(v, str) or not v:
                    raise ConfigError(name, v, "names (strings)")
        out[key] = values
    return out
