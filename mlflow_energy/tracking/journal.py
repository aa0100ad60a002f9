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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mlflow_energy.errors import ConfigError, MlflowEnergyError

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


class JournalUnwritable(MlflowEnergyError):
    """The journal (or its ``.logged`` side file) could not be written: disk full, read-only, gone."""


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a nearly full disk writes short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - the kernel raises ENOSPC rather than writing 0 bytes
            raise OSError(28, "No space left on device")
        view = view[n:]


def _fsync_dir(path: str) -> None:
    """fsync the directory of ``path``, so that a newly created file's name survives a crash."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the data itself is synced
        pass
    finally:
        os.close(fd)


def _fence_torn_tail(fd: int) -> None:
    """Cut a last line left without its newline by a crash mid-write (it never was a whole record).

    Appending after it would glue the next record onto it and make a line that is valid JSON
    neither for the torn record nor for the new one.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    tail_start, pos, block = 0, size, 65536
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            tail_start = start + i + 1
            break
        pos = start
    os.ftruncate(fd, tail_start)


def _append_synced(path: str, lines: Iterable[str]) -> None:
    """Append whole lines and fsync them (the directory too when the file is new).

    A torn last line is cut first; every byte is written (short writes are continued).

    Raises:
        JournalUnwritable: one line, naming the file and the reason (disk full, read-only, ...).
    """
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    try:
        created = not os.path.exists(path)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not created and os.path.isfile(path):
                _fence_torn_tail(fd)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path)
    except OSError as exc:
        raise JournalUnwritable(f"could not write the journal file {path}: "
                                f"{exc.strerror or type(exc).__name__}") from None


def ledger_key(record: dict[str, Any], *, store: str | None = None, experiment: str | None = None
               ) -> tuple[str, ...]:
    """``(config hash, hardware, tracking store digest, experiment)`` of a journal record.

    ``store``/``experiment`` default to the record's own (where it was meant to be logged).
    """
    from mlflow_energy.tracking.jsonl import record_key

    h, hw = record_key(record)
    return (h, hw, store or record.get("tracking") or "", experiment or record.get("experiment") or "")


class Journal:
    """An append-only, fsync'ed JSONL file of measurements, and which of them reached MLflow."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = check_writable(path or default_journal_path(), "journal")
        self.logged_path = self.path + ".logged"
        self.ledger_error: str | None = None  # the last failure to write the ``.logged`` side file

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

    def mark_logged(self, records: Iterable[dict[str, Any]], *, experiment: str | None = None) -> None:
        """Record that these records are FINISHED runs of the current tracking store.

        The ledger is keyed by (config hash, hardware, tracking store, experiment): a journal that
        served two stores replays to each what it missed. ``experiment``: where they were logged
        (default: each record's own).
        """
        store = tracking_digest()
        lines = [json.dumps(list(ledger_key(r, store=store, experiment=experiment))) for r in records]
        if lines:
            _append_synced(self.logged_path, lines)

    def _try_mark(self, record: dict[str, Any], experiment: str | None) -> None:
        """Mark one record; a ledger that cannot be written is noted in :attr:`ledger_error`, not raised
        (the run is in MLflow, and the next replay finds it FINISHED)."""
        try:
            self.mark_logged([record], experiment=experiment)
        except JournalUnwritable as exc:
            self.ledger_error = str(exc)

    def logged(self) -> set[tuple[str, ...]]:
        """The ledger keys of the ``.logged`` side file (see :func:`ledger_key`)."""
        if not os.path.isfile(self.logged_path):  # a device (/dev/full) is never read
            return set()
        with open(self.logged_path, encoding="utf-8") as fh:
            out = set()
            for line in fh:
                try:
                    key = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash: its record is simply replayed again (idempotent)
                # a line of an older ledger (config hash, hardware) names no store: the record is
                # checked against the store again on replay, which logs nothing twice
                if isinstance(key, list) and len(key) == 4:
                    out.add(tuple(key))
            return out

    def records(self) -> list[dict[str, Any]]:
        from mlflow_energy.tracking.jsonl import read_jsonl

        if not os.path.isfile(self.path) or os.path.getsize(self.path) == 0:
            return []
        return read_jsonl(self.path, tolerate_torn_tail=True)

    def pending(self, *, this_server: bool = False) -> list[dict[str, Any]]:
        """Records not yet marked logged (a key measured twice counts once).

        ``this_server``: only those meant for the current tracking URI.
        """
        done = self.logged()
        out, seen = [], set()
        digest = tracking_digest() if this_server else None
        for r in self.records():
            if digest is not None and r.get("tracking", digest) != digest:
                continue
            key = ledger_key(r)
            if key not in done and key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def replay(self, *, experiment: str | None = None, this_server: bool = False,
               keep: Callable[[dict[str, Any]], bool | None] | None = None) -> tuple[list[str], int]:
        """Log the pending records (each into its own experiment unless ``experiment`` is given).

        ``this_server``: only the records meant for the current tracking URI (automatic replays).
        ``keep(record)``: False for a record that must not be logged; it is marked done without a
        run. None for one that must not be logged yet (another live worker holds its claim): it
        stays pending.

        Idempotent: a record already FINISHED in MLflow is skipped and marked logged.
        Returns ``(new run ids, records skipped)``.
        """
        from mlflow_energy.tracking.replay import log_records

        groups: dict[str | None, list[dict[str, Any]]] = {}
        skipped = 0
        for r in self.pending(this_server=this_server):
            verdict = True if keep is None else keep(r)
            if not verdict:
                if verdict is False:
                    self._try_mark(r, None)
                skipped += 1
                continue
            groups.setdefault(experiment or r.get("experiment"), []).append(r)
        new_ids: list[str] = []
        for exp, records in groups.items():
            ids, n = log_records(records, experiment=exp, on_logged=lambda r, exp=exp: self._try_mark(r, exp))
            new_ids += ids
            skipped += n
        return new_ids, skipped
