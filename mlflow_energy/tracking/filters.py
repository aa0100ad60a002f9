"""MLflow search filters with any string value, and the store's size limits on names and values.

MLflow's filter parser (``mlflow.utils.search_utils``, on sqlparse) has no escape for a quote:
a value is whatever lies between its quotes, with no unescaping. So ``tags.t = 'it''s'`` looks
for ``it''s`` and ``'it\\'s'`` for ``it\\'s``. A value with a single quote can be written in
double quotes (``"it's"``) and one with a double quote in single quotes; one with both has no
exact spelling, so :func:`tag_equals` matches it with a ``LIKE`` pattern (each quote, ``%``
and ``_`` a one-character wildcard) and :func:`exact` keeps the runs whose tag is the value.

Example:
    >>> tag_equals("mlflow_energy.sweep_spec", "it's")
    'tags.`mlflow_energy.sweep_spec` = "it\\'s"'
    >>> tag_equals("mlflow_energy.sweep_spec", "a'b\\"c")
    "tags.`mlflow_energy.sweep_spec` LIKE 'a_b_c'"
    >>> literal("cpu-demo")
    "'cpu-demo'"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlflow_energy.errors import ConfigError

__all__ = [
    "MAX_EXPERIMENT_NAME",
    "MAX_KEY",
    "MAX_PARAM_VALUE",
    "MAX_RUN_NAME",
    "MAX_TAG_VALUE",
    "check_name",
    "exact",
    "literal",
    "tag_equals",
]

#: ``experiments.name`` is ``String(256)`` in MLflow's SQL schema (its REST check allows 500, so
#: a longer name reaches PostgreSQL and fails there; SQLite does not enforce the size).
MAX_EXPERIMENT_NAME = 256
#: ``runs.name`` is ``String(250)``.
MAX_RUN_NAME = 250
#: ``mlflow.utils.validation``: ``MAX_ENTITY_KEY_LENGTH``, ``MAX_PARAM_VAL_LENGTH``, ``MAX_TAG_VAL_LENGTH``.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000


def literal(value: str) -> str:
    """``value`` as an MLflow filter string literal: ``'v'``, or ``"v"`` when ``v`` holds a single quote.

    Raises:
        ConfigError: the value holds both quote kinds (use :func:`tag_equals` and :func:`exact`).
    """
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError("filter value", value[:80], "a string without both ' and \" (MLflow filters cannot escape them)")


def tag_equals(tag: str, value: str) -> str:
    """A filter clause for runs whose tag ``tag`` is ``value``; may match more (see :func:`exact`)."""
    try:
        return f"tags.`{tag}` = {literal(value)}"
    except ConfigError:
        pattern = "".join("_" if ch in "'\"%_\\" else ch for ch in value)
        return f"tags.`{tag}` LIKE '{pattern}'"


def exact(runs: Iterable[Any], tag: str, value: str) -> list[Any]:
    """The runs of a :func:`tag_equals` search whose tag is exactly ``value``."""
    return [r for r in runs if r.data.tags.get(tag) == value]


def check_name(field: str, value: Any, maximum: int) -> str:
    """``value`` if it is a non-empty string of at most ``maximum`` printable characters.

    Example:
        >>> check_name("experiment", "x" * 300, MAX_EXPERIMENT_NAME)
        Traceback (most recent call last):
        ...
        mlflow_energy.errors.ConfigError: experiment='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (300 characters)' is \
not allowed: expected a non-empty name of at most 256 printable characters
    """
    allowed = f"a non-empty name of at most {maximum} printable characters"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, value, allowed)
    if len(value) > maximum:
        raise ConfigError(field, f"{value[:40]}... ({len(value)} characters)", allowed)
    if not value.isprintable():
        raise ConfigError(field, value[:80], allowed)
    return value
