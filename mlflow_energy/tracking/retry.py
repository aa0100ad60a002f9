"""Short, bounded retries for the tracking server, so a dead server costs seconds, not minutes.

MLflow's HTTP client retries a failed request up to 7 times with an exponential back-off
(about 8 minutes in all) and a 120 s timeout. A sweep holds a GPU meanwhile, so
:func:`configure_client_retries` lowers those defaults (2 retries, back-off factor 1, 10 s
timeout) unless the user set them; :func:`retrying` then calls a tracking function a few times
with a short back-off and raises :class:`TrackingUnavailable` (one line) when the server stays
away. The caller keeps the measurement in the local journal (:mod:`.journal`).

Example:
    >>> from mlflow_energy.tracking.retry import retrying
    >>> retrying(lambda: 42, what="a no-op")
    42
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mlflow_energy.errors import MlflowEnergyError

T = TypeVar("T")

#: MLflow's client settings lowered by :func:`configure_client_retries` (set ones are kept).
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: Seconds slept before each further attempt of :func:`retrying`.
BACKOFF_S = (0.5, 1.0, 2.0)


class TrackingUnavailable(MlflowEnergyError):
    """The tracking server did not answer after the bounded retries."""


class ArtifactStoreError(MlflowEnergyError):
    """The artifact store refused to store a file (full, read-only, over quota): not an outage.

    Retrying cannot help and measuring on would only fill the journal: a sweep stops at once.
    """


#: What a full or read-only store says (the server's 500 carries the OS error of its disk).
STORAGE_ERRORS = ("No space left on device", "Read-only file system", "Disk quota exceeded", "File too large",
                  "ENOSPC", "EROFS", "EDQUOT", "[Errno 28]", "[Errno 30]", "[Errno 122]", "[Errno 27]",
                  "QuotaExceeded", "InsufficientStorage")


def is_storage_full(exc: BaseException) -> bool:
    """True for an error of a store that is full or read-only (see :class:`ArtifactStoreError`)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG):
        return True
    text = f"{exc} {getattr(getattr(exc, 'response', None), 'text', '')}"
    return any(s in text for s in STORAGE_ERRORS)


def configure_client_retries() -> None:
    """Lower MLflow's HTTP retry defaults (see the module doc); values already set win."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def is_unavailable(exc: BaseException) -> bool:
    """True for an error that says the server is away (connection, timeout, 5xx, 429), not a bad request."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        if any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out",
                                   "Read timed out", "API request to", "TEMPORARILY_UNAVAILABLE")):
            return True
        code = getattr(exc, "get_http_status_code", lambda: 400)()
        return code >= 500 or code == 429
    # SQLAlchemy: a database that is locked or gone (a local store under load)
    return type(exc).__name__ in ("OperationalError", "DisconnectionError", "InterfaceError")


def _artifact_store_refused(exc: BaseException) -> bool:
    """An artifact upload through the server's proxy failed (5xx) while its tracking API answers.

    The server's 500 hides its disk's error (``too many 500 error responses``): a tracking call that
    answers tells a full artifact store from a server that is away. The server closes the kept-alive
    connection after its 500 without saying so, so the first probe can meet a reset connection; the
    probe is tried three times (a reset connection leaves the pool, the next try opens a new one).
    """
    if "mlflow-artifacts/artifacts" not in str(exc):
        return False
    from mlflow import MlflowClient

    for attempt in range(3):
        try:
            MlflowClient().search_experiments(max_results=1)
            return True
        except Exception:
            time.sleep(0.2 * (attempt + 1))
    return False


def retrying(fn: Callable[[], T], *, what: str, backoff: tuple[float, ...] = BACKOFF_S) -> T:
    """``fn()``, retried after each delay of ``backoff`` while the server is unavailable.

    Raises:
        TrackingUnavailable: after the last attempt, naming ``what`` and the last error in one line.
        ArtifactStoreError: at once, when the store says it is full or read-only (not retried).
        Exception: any error that is not about availability, at once (a bad request is not retried).
    """
    last: BaseException | None = None
    for delay in (0.0, *backoff):
        if delay:
            time.sleep(delay)
        try:
            return fn()
        except Exception as exc:
            if is_storage_full(exc):
                text = " ".join(str(exc).split())[:200]
                raise ArtifactStoreError(f"the artifact store refused a file while {what} (full or read-only, "
                                         f"not an outage): {type(exc).__name__}: {text}") from None
            if not is_unavailable(exc):
                raise
            if _artifact_store_refused(exc):
                text = " ".join(str(exc).split())[:200]
                raise ArtifactStoreError(f"the artifact store refused a file while {what} (the tracking server "
                                         f"answers; full or read-only?): {type(exc).__name__}: {text}") from None
            last = exc
    first = " ".join(str(last).split())[:200]
    raise TrackingUnavailable(f"tracking server unavailable while {what}: {type(last).__name__}: {first}")


def ensure_store(attempts: int = 8) -> None:
    """Open the tracking store once, retrying the race of workers creating a fresh database's schema.

    N workers started together on a new SQLite or PostgreSQL store all run MLflow's migrations;
    the losers fail (``table _alembic_tmp_experiments already exists``, ``UniqueViolation``) and
    find the schema made on the next attempt. SQLite's migrations are not transactional (a lost
    race leaves a ``_alembic_tmp_*`` table behind for good), so on a SQLite file the workers of one
    host take turns under a file lock instead. A server that is away raises :class:`TrackingUnavailable`.
    """
    import mlflow
    from mlflow import MlflowClient

    use_database_driver()
    uri = mlflow.get_tracking_uri()
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            with _schema_lock(uri):
                MlflowClient(uri).search_experiments(max_results=1)
            return
        except Exception as exc:
            text = f"{type(exc).__name__} {exc}"
            racing = any(s in text for s in ("already exists", "UniqueViolation", "IntegrityError", "locked",
                                              "DuplicateTable", "DuplicateObject", "alembic"))
            if not racing and not is_unavailable(exc):
                raise
            last = exc
            if not racing and attempt >= 2:
                break
            time.sleep(0.3 * (attempt + 1))
    first = " ".join(str(last).split())[:200]
    raise TrackingUnavailable(f"tracking store could not be opened: {type(last).__name__}: {first}")


def _schema_lock(uri: str) -> Any:
    """An exclusive lock beside a SQLite database file (no-op for other stores)."""
    import contextlib

    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return contextlib.nullcontext()
    return _FileLock(uri[len("sqlite:///"):] + ".schema-lock")


class _FileLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fh: Any = None

    def __enter__(self) -> _FileLock:
        import fcntl

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def database_url(url: str) -> str:
    """``postgresql://`` made ``postgresql+psycopg2://`` when only psycopg2 is installed.

    SQLAlchemy 2.1 opens a plain ``postgresql://`` URL with psycopg 3; a host with the common
    ``psycopg2-binary`` would fail with an import error. Other URLs are returned unchanged.

    Example:
        >>> database_url("sqlite:///mlflow.db")
        'sqlite:///mlflow.db'
    """
    import importlib.util

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
            if prefix == "postgres://":
                return "postgresql://" + url[len(prefix):]
    return url


def use_database_driver() -> None:
    """Apply :func:`database_url` to the current MLflow tracking URI (and ``$MLFLOW_TRACKING_URI``)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    fixed = database_url(uri)
    if fixed != uri:
        mlflow.set_tracking_uri(fixed)
        os.environ["MLFLOW_TRACKING_URI"] = fixed
