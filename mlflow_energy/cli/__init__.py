"""The ``mlflow-energy`` command line: parse, call one library function, print.

Bad input exits with code 2 and one line naming the field, the value and what is allowed:
options are typed (:mod:`mlflow_energy.cli._types`), and the group turns every
:class:`~mlflow_energy.errors.ConfigError` into that line, whether it comes from parsing or
from the library. Heavy modules are imported inside each command, so ``--help`` stays fast.
Modules (one per group of commands): ``measure`` (measure, sweep, ingest), ``predict`` (predict, calibrate), ``fit`` (fit,
import-mlenergy), ``search``, ``info`` (flops, families), ``serve``, ``doctor`` (which meter, and why).

Example:
    >>> from click.testing import CliRunner
    >>> from mlflow_energy.cli import main
    >>> result = CliRunner().invoke(main, ["flops", "--model", "sd2", "--steps", "0"])
    >>> result.exit_code, result.output.strip()
    (2, 'Error: steps=0 is not allowed: expected an integer >= 1')
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import click

from mlflow_energy.errors import ConfigError, MissingDependencyError, MlflowEnergyError

__all__ = ["main", "quiet_libraries"]


#: transformers' notice that an image processor falls back to its PIL twin without torchvision:
#: the pipelines never process images with it, so the terminal need not hear of it.
_TORCHVISION_NOTICE = "requires torchvision (not installed)"


class _DropNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _TORCHVISION_NOTICE not in record.getMessage()


#: MLflow's SQL store logs every database error at ERROR with its full traceback before raising
#: it; the commands catch those errors (bounded retries, offline, one line of their own), so a
#: database that stops for 15 s would otherwise print thousands of traceback lines.
_SQL_ERROR_LOG = "SQLAlchemy database error"


class _DropSqlTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _SQL_ERROR_LOG not in record.getMessage()


def quiet_libraries() -> None:
    """Keep the terminal to what the command means to say.

    Drops transformers' torchvision fall-back notice (only that message), keeps MLflow's own
    INFO chatter (database set-up, input-example validation) and its artifact progress bars out
    unless ``MLFLOW_LOGGING_LEVEL`` / ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` say otherwise.
    MLflow's warnings and errors still show, but for two: importing ``mlflow.pyfunc`` infers a
    schema for MLflow's own agent request types and warns that it has integer columns (nothing
    of this package's data is involved: the energy model's example is all floats), and the SQL
    store's traceback of a database error the command itself catches and reports in one line.
    """
    warnings.filterwarnings("ignore", message=r"(?s).*Inferred schema contains integer column")
    for name, drop in (("transformers.utils.import_utils", _DropNotice), ("mlflow.store.db.utils", _DropSqlTraceback)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, drop) for f in logger.filters):
            logger.addFilter(drop())
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class _Group(click.Group):
    """A group that prints our input errors as one line and exits 2 (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        quiet_libraries()
        try:
            return super().invoke(ctx)
        except (ConfigError, MissingDependencyError) as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except MlflowEnergyError as exc:  # e.g. the tracking server stayed away: one line, exit 1
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlflow-energy")
def main() -> None:
    """Measure, predict and cut the energy of diffusion-model image generation, with MLflow."""


# Each module registers its commands on `main`.
from mlflow_energy.cli import doctor, fit, info, measure, predict, search, serve  # noqa: E402, F401
