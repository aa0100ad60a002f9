"""The ``mlflow-energy`` command line.

Bad input exits with code 2 and one line naming the field, the value and what is allowed.
Heavy modules are imported inside each command so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from mlflow_energy.errors import ConfigError, MissingDependencyError


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, MissingDependencyError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlflow-energy")
def main() -> None:
    """Measure, predict and cut the energy of diffusion-model image generation, with MLflow."""


# --- commands: each block below is owned by one module; add new ones above the marker ---

# <<< commands end >>>


if __name__ == "__main__":  # pragma: no cover
    main()
