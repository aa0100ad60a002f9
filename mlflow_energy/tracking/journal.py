"""The local journal: every measurement is on disk (fsync) before it is sent to MLflow.

A measurement costs minutes of a GPU; a tracking server that is down, slow or restarted must
never lose it. :class:`Journal` appends one JSONL record per measurement (the format of
:mod:`.jsonl`, plus the ``experiment`` and ``parent_run_id`` it belongs to) and flushes it to
disk with ``fsync`` *before* the run is logged. Once the run is logged, its key (config hash,
hardware) is appended to a side file ``<journal>.logged``; the records without such a line are
*pending*. :meth:`Journal.replay` logs the pending records (skipping any already FINISHED in
MLflow, so it is idempotent) and marks them logged; ``mlflow-energy ingest <journal>`` does the
same by hand.

The journal is ``$MLFLOW_ENERGY_JOURNAL`` when set, else ``mlflow-energy-journal.jsonl`` in the
working directory (``--journal`` on ``measure`` and ``sweep`` chooses another).

Example:
    >>> import os, tempfile
    >>> j = Journal(os.path.join(tempfile.mkdtemp(), "journal.jsonl"))
    >>> j.pending()
    []
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlflow_energy.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_energy.measure.runner import Measurement

JOURNAL_ENV = "MLFLOW_ENERGY_JOURNAL"
DEFAULT_JOURNAL = "mlflow-energy-journal.jsonl"


def default_journal_path() -> str:
    """``$MLFLOW_ENERGY_JOURNAL``, else ``mlflow-energy-journal.jsonl`` in the working directory."""
    return os.environ.get(JOURNAL_ENV) or os.path.abspath(DEFAULT_JOURNAL)


def check_writable(path: str | os.PathLike[str], field: str = "output") -> str:
    """Check that a file can be appended to at ``path`` (its directory is created); return the path.

    Called before anything is measured, so that a bad ``--output``/``--journal`` costs no GPU time.

    Raises:
        ConfigError: naming ``field``: ``path`` is a directory, under a file, or not writable.

    Example:
        >>> check_writable("/etc/passwd/x.jsonl")
        Traceback (most recent call last):
        ...
        mlflow_energy.errors.ConfigError: output='/etc/passwd/x.jsonl' is not allowed: expected a writable file path (a parent is not a directory)
    """
    path = os.fspath(path)
    if not path or path.endswith(os.sep):
        raise ConfigError(field, path, "a file path")
    if os.path.isdir(path):
        raise ConfigError(field, path, "a .jsonl file path, not a directory")
    parent = os.path.dirname(os.path.abspath(path))
    probe = parent
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if probe and not os.path.isdir(probe):
        raise ConfigError(field, path, "a writable file path (a parent is not a directory)")
    existed = os.path.exists(path)
    try:
        os.makedirs(parent, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
        if not existed:
            os.remove(path)  # a probe only: the file appears with its first record
    except OSError as exc:
        raise ConfigError(field, path, f"a writable file path ({exc.strerror or type(exc).__name__})") from None
    return path


def tracking_digest(uri: str | None = None) -> str:
    """A short digest of the tracking URI (a journal replays into the server it was meant for)."""
    import hashlib

    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    return hashlib.sha256(str(uri).encode()).hexdigest()[:12]


def _append_synced(path: str, lines: Iterable[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only, fsync'ed JSONL file of measurements, and which of them reached MLflow."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = check_writable(path or default_journal_path(), "journal")
        self.logged_path = self.path + ".logged"

    def append(self, m: Measurement, *, experiment: str | None = None, parent_run_id: str | None = None
               ) -> dict[str, Any]:
        """Write the record of ``m`` and fsync it; return the record."""
        from mlflow_energy.tracking.jsonl import to_record

        record = to_record(m)
        record["experiment"] = experiment
        record["parent_run_id"] = parent_run_id
        record["tracking"] = tracking_digest()
        self.append_record(record)
        return record

    def append_record(self, record: dict[str, Any]) -> None:
        _append_synced(self.path, [json.dumps(record, sort_keys=True, allow_nan=False)])

    def mark_logged(self, keys: Iterable[tuple[str, str]]) -> None:
        """Record that these (config hash, hardware) keys are FINISHED runs in MLflow."""
        lines = [json.dumps(list(k)) for k in keys]
        if lines:
            _append_synced(self.logged_path, lines)

    def logged(self) -> set[tuple[str, str]]:
        if not os.path.exists(self.logged_path):
            return set()
        with open(self.logged_path, encoding="utf-8") as fh:
            out = set()
            for line in fh:
                try:
                    h, hw = json.loads(line)
                except (ValueError, TypeError):
                    continue  # a line cut by a crash: its record is simply replayed again
                out.add((h, hw))
            return out

    def records(self) -> list[dict[str, Any]]:
        from mlflow_energy.tracking.jsonl import read_jsonl

        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return []
        return read_jsonl(self.path, tolerate_torn_tail=True)

    def pending(self, *, this_server: bool = False) -> list[dict[str, Any]]:
        """Records not yet marked logged (a key measured twice counts once).

        ``this_server``: only those meant for the current tracking URI.
        """
        from mlflow_energy.tracking.jsonl import record_key

        done = self.logged()
        out, seen = [], set()
        digest = tracking_digest() if this_server else None
        for r in self.records():
            if digest is not None and r.get("tracking", digest) != digest:
                continue
            key = record_key(r)
            if key not in done and key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def replay(self, *, experiment: str | None = None, this_server: bool = False) -> tuple[list[str], int]:
        """Log the pending records (each into its own experiment unless ``experiment`` is given).

        ``this_server``: only the records meant for the current tracking URI (automatic replays).

        Idempotent: a record already FINISHED in MLflow is skipped and marked logged.
        Returns ``(new run ids, records skipped)``.
        """
        from mlflow_energy.tracking.jsonl import record_key
        from mlflow_energy.tracking.replay import log_records

        groups: dict[str | None, list[dict[str, Any]]] = {}
        for r in self.pending(this_server=this_server):
            groups.setdefault(experiment or r.get("experiment"), []).append(r)
        new_ids: list[str] = []
        skipped = 0
        for exp, records in groups.items():
            ids, n = log_records(records, experiment=exp, on_logged=lambda r: self.mark_logged([record_key(r)]))
            new_ids += ids
            skipped += n
        return new_ids, skipped
