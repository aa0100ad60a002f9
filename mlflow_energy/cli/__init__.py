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

__all__ = ["explain", "from_store", "main", "quiet_libraries", "tracking_uri"]


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


#: Libraries whose errors come from the tracking or artifact store (a server away, a full disk,
#: a refused URI): the group prints them in one line with the tracking URI instead of a traceback.
_STORE_LIBRARIES = ("mlflow", "requests", "urllib3", "sqlalchemy", "psycopg", "psycopg2", "botocore", "boto3")

#: What a database error says, and the few words a user needs.
_REASONS = (("database is locked", "database is locked"), ("Connection refused", "connection refused"),
            ("timed out", "timed out"), ("could not connect", "could not connect"))


def tracking_uri() -> str:
    """The tracking URI MLflow uses now (``$MLFLOW_TRACKING_URI``, else MLflow's default)."""
    import mlflow

    return str(mlflow.get_tracking_uri())


def explain(exc: BaseException) -> str:
    """One line for an error of the tracking or artifact store, naming the tracking URI and what to check.

    Example:
        >>> from mlflow_energy.tracking.retry import TrackingUnavailable
        >>> import mlflow; mlflow.set_tracking_uri("sqlite:///mlflow.db")
        >>> print(explain(TrackingUnavailable("tracking server unavailable while reading the runs: "
        ...                                   "OperationalError: (sqlite3.OperationalError) database is locked")))
        the tracking store sqlite:///mlflow.db could not be used while reading the runs (database is locked): \
MLFLOW_TRACKING_URI names the store
        >>> mlflow.set_tracking_uri("")
    """
    from mlflow_energy.tracking.retry import ArtifactStoreError, TrackingUnavailable, is_storage_full, is_unavailable

    uri = tracking_uri()
    text = " ".join(str(exc).split())
    if isinstance(exc, ArtifactStoreError) or is_storage_full(exc):
        return f"{text[:300]} (tracking URI {uri})"
    if "mlflow-artifacts" in text and not uri.startswith(("http://", "https://")):
        return (f"the experiment keeps its artifacts on a tracking server (mlflow-artifacts:), which the tracking "
                f"URI {uri} cannot reach: set MLFLOW_TRACKING_URI to that server's http(s) address")
    served = uri.startswith(("http://", "https://"))
    refused = next((t for t in _chain(exc) if "mlflow-artifacts/artifacts" in t), None)
    if served and refused and _answers(uri):
        return (f"the tracking server {uri} answers, but its artifact store refused a file (full or read-only?): "
                f"{refused[:200]}")
    if isinstance(exc, TrackingUnavailable) or is_unavailable(exc):
        what = text.split(": ", 1)[0].replace("tracking server unavailable ", "")
        what = f" {what}" if what.startswith("while ") else ""
        if uri.startswith(("http://", "https://")):
            return (f"the tracking server {uri} did not answer{what} ({_probe(uri)}): is it running? "
                    "MLFLOW_TRACKING_URI names the tracking store")
        reason = next((r for needle, r in _REASONS if needle in text), text.split(": ", 1)[-1][:120])
        return f"the tracking store {uri} could not be used{what} ({reason}): MLFLOW_TRACKING_URI names the store"
    return f"{type(exc).__name__}: {text[:300]} (tracking URI {uri})"


def _chain(exc: BaseException, most: int = 40) -> list[str]:
    """The texts of ``exc`` and the errors it was raised from or while handling (an upload refused, then the
    run's end meeting the connection the server closed after it)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < most:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return [" ".join(str(e).split()) for e in seen]


def _answers(uri: str) -> bool:
    """True when the tracking server at ``uri`` answers its health check within 5 s (one try)."""
    import requests

    try:
        return requests.get(uri.rstrip("/") + "/health", timeout=5).ok
    except requests.RequestException:
        return False


def _probe(uri: str) -> str:
    """Why a tracking server does not answer, from one TCP connection to its host and port."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((host, port), timeout=3.0).close()
    except ConnectionRefusedError:
        return f"connection refused: nothing listens on {host}:{port}"
    except socket.gaierror:
        return f"unknown host {host}"
    except TimeoutError:
        return f"{host}:{port} did not accept a connection within 3 s"
    except (OSError, ValueError) as exc:
        return " ".join(str(exc).split())[:120]
    return f"{host}:{port} accepts connections, but its API did not answer in time"


class _Group(click.Group):
    """A group that prints our input errors as one line and exits 2 (no traceback).

    Errors of the tracking store (our :class:`MlflowEnergyError`, or MLflow's and its clients' own
    errors escaping a command) are one line too, naming the tracking URI (exit 1).
    """

    def invoke(self, ctx: click.Context) -> Any:
        quiet_libraries()
        try:
            return super().invoke(ctx)
        except (ConfigError, MissingDependencyError) as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except MlflowEnergyError as exc:  # e.g. the tracking server stayed away: one line, exit 1
            click.echo(f"Error: {explain(exc) if from_store(exc) else exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            if not from_store(exc):
                raise
            click.echo(f"Error: {explain(exc)}", err=True)
            ctx.exit(1)


def from_store(exc: BaseException) -> bool:
    """True for an error of the tracking or artifact store (see :data:`_STORE_LIBRARIES`), or a full disk."""
    from mlflow_energy.tracking.retry import ArtifactStoreError, TrackingUnavailable, is_storage_full

    if isinstance(exc, (TrackingUnavailable, ArtifactStoreError)):
        return True
    return type(exc).__module__.split(".", 1)[0] in _STORE_LIBRARIES or is_storage_full(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlflow-energy")
def main() -> None:
    """Measure, predict and cut the energy of diffusion-model image generation, with MLflow."""


# Each module registers its commands on `main`.
from mlflow_energy.cli import doctor, fit, info, measure, predict, search, serve  # noqa: E402, F401
