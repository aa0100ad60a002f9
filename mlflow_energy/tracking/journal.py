"""The local journal: every measurement is on disk (fsync) before it is sent to MLflow.

A measurement costs minutes of a GPU; a tracking server that is down, slow or restarted must
never lose it. :class:`Journal` appends one JSONL record per measurement (the format of
:mod:`.jsonl`, plus the ``experiment`` and ``parent_run_id`` it belongs to) and flushes it to
disk with ``fsync`` *before* the run is logged. Once the run is logged, its key (config hash,
hardware) is appended to a side file ``<journal>.logged``; the records without such a line are
*pending*. :meth:`Journal.replay` logs the pending records (skipping any already FINISHED in
MLflow, so it is idempotent) and marks them logged; ``mlflow-energy ingest <journal>`` does the
same by hand.

Several processes may share one journal (every worker started in one directory does): each
append holds the file's exclusive lock, so records never cut into each other, and a replay holds
``<journal>.replay.lock``, so one process replays a record, not each of them. A line before the
last one that is not a valid record is moved to ``<journal>.bad`` (with its byte offset) and
the rest replays; a complete last record that only lacks its newline is kept.

The journal is ``$MLFLOW_ENERGY_JOURNAL`` when set, else ``mlflow-energy-journal.jsonl`` in the
working directory (``--journal`` on ``measure`` and ``sweep`` chooses another).

Example:
    >>> import os, tempfile
    >>> j = Journal(os.path.join(tempfile.mkdtemp(), "journal.jsonl"))
    >>> j.pending()
    []
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from mlflow_energy import schema
from mlflow_energy.tracking.records import JournalUnwritable, _fsync_dir, append_lines, check_writable, file_lock

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_energy.measure.runner import Measurement

__all__ = ["Journal", "JournalUnwritable", "check_writable", "default_journal_path", "ledger_key", "log_records",
           "tracking_digest"]

JOURNAL_ENV = "MLFLOW_ENERGY_JOURNAL"
#: Seconds an automatic replay waits for another process's replay of the same journal to end.
REPLAY_WAIT_S = 60.0
_log = logging.getLogger(__name__)
DEFAULT_JOURNAL = "mlflow-energy-journal.jsonl"


def default_journal_path() -> str:
    """``$MLFLOW_ENERGY_JOURNAL``, else ``mlflow-energy-journal.jsonl`` in the working directory."""
    return os.environ.get(JOURNAL_ENV) or os.path.abspath(DEFAULT_JOURNAL)


def tracking_digest(uri: str | None = None) -> str:
    """A short digest of the tracking URI (a journal replays into the server it was meant for)."""
    import hashlib

    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    return hashlib.sha256(str(uri).encode()).hexdigest()[:12]


def ledger_key(record: dict[str, Any], *, store: str | None = None, experiment: str | None = None
               ) -> tuple[str, ...]:
    """``(config hash, hardware, tracking store digest, experiment)`` of a journal record.

    ``store``/``experiment`` default to the record's own (where it was meant to be logged).
    """
    from mlflow_energy.tracking.jsonl import record_key

    h, hw = record_key(record)
    return (h, hw, store or record.get("tracking") or "", experiment or record.get("experiment") or "")


class Journal:
    """An append-only, fsync'ed JSONL file of measurements, and which of them reached MLflow.

    Several processes may share one journal: appends hold the file's lock, a replay holds the
    journal's replay lock (``<journal>.replay.lock``), and a bad line is moved aside, not fatal.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = check_writable(path or default_journal_path(), "journal")
        self.logged_path = self.path + ".logged"
        self.bad_path = self.path + ".bad"
        self.ledger_error: str | None = None  # the last failure to write the ``.logged`` side file
        self.replay_busy = False  # the last replay was left to another process that held the lock

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
        append_lines(self.path, [json.dumps(record, sort_keys=True, allow_nan=False)])

    def mark_logged(self, records: Iterable[dict[str, Any]], *, experiment: str | None = None) -> None:
        """Record that these records are FINISHED runs of the current tracking store.

        The ledger is keyed by (config hash, hardware, tracking store, experiment): a journal that
        served two stores replays to each what it missed. ``experiment``: where they were logged
        (default: each record's own).
        """
        store = tracking_digest()
        lines = [json.dumps(list(ledger_key(r, store=store, experiment=experiment))) for r in records]
        if lines:
            append_lines(self.logged_path, lines)

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
        """The journal's records. A bad line before the last one is moved aside (see :meth:`move_bad_lines`);
        a torn last line (a writer killed mid-write, or one still writing) is left where it is."""
        if not os.path.isfile(self.path) or os.path.getsize(self.path) == 0:
            return []
        with open(self.path, "rb") as fh:
            records, bad = _scan(fh.read())
        if bad:
            records = self.move_bad_lines()
        return records

    def move_bad_lines(self) -> list[dict[str, Any]]:
        """Move the bad lines (not a valid record, before the last line) to ``<journal>.bad``; return the records.

        Under the append lock: each bad line goes to ``<journal>.bad`` (one JSON line: its byte
        offset in the journal, why it is refused, the line), then the journal is rewritten without
        it (a new file renamed over the old one). Said in one line (a warning of this module's logger).
        """
        with file_lock(self.path) as fd:
            if fd is None:
                return []
            with open(self.path, "rb") as fh:
                data = fh.read()
            records, bad = _scan(data)
            if not bad:
                return records
            try:
                self._rewrite_without(fd, data, bad)
            except (OSError, JournalUnwritable) as exc:  # a read-only disk: skipped, not moved
                _log.warning("could not move %d bad line(s) of the journal %s aside (%s); they are skipped, "
                             "the other records replay", len(bad), self.path, getattr(exc, "strerror", None) or exc)
                return records
        first = bad[0]
        _log.warning("moved %d bad line(s) of the journal %s aside to %s (first at byte offset %d: %s); "
                     "the other records replay", len(bad), self.path, self.bad_path, first[0], first[2])
        return records

    def _rewrite_without(self, fd: int, data: bytes, bad: list[tuple[int, bytes, str]]) -> None:
        """Append the bad lines to ``<journal>.bad``, then replace the journal by its other lines (under its lock)."""
        append_lines(self.bad_path, [json.dumps({"journal": self.path, "offset": off, "error": why,
                                                 "line": raw.decode("utf-8", "backslashreplace")})
                                     for off, raw, why in bad])
        from mlflow_energy.tracking import checkpoint

        checkpoint.drop(self.path)  # offsets shift (a checkpoint written meanwhile no longer matches)
        cut = {off for off, _, _ in bad}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as out:
                out.write(b"".join(raw for off, raw in _lines(data) if off not in cut))
                out.flush()
                os.fchmod(out.fileno(), os.fstat(fd).st_mode & 0o777)
                os.fsync(out.fileno())
            os.replace(tmp, self.path)  # appenders waiting on the lock reopen the new file
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        _fsync_dir(self.path)

    def pending(self, *, this_server: bool = False) -> list[dict[str, Any]]:
        """Records not yet marked logged (a key measured twice counts once).

        ``this_server``: only those meant for the current tracking URI.
        """
        from mlflow_energy.tracking import checkpoint

        ledger_size = checkpoint.ledger_size(self.path)  # before the keys are read: they cover at least this
        done = self.logged()
        start, records, spans = self._records_after(checkpoint.read(self.path))
        out, seen = [], set()
        digest = tracking_digest() if this_server else None
        logged_to, gap = (start, start), spans is None  # the last line logged without a gap from ``start``
        for i, r in enumerate(records):
            key = ledger_key(r)
            if key in done:
                logged_to = logged_to if gap else spans[i]  # type: ignore[index]
                continue
            gap = True  # a pending record: the checkpoint stops before it
            if digest is not None and r.get("tracking", digest) != digest:
                continue
            if key not in seen:
                seen.add(key)
                out.append(r)
        if logged_to[1] > start:
            checkpoint.write(self.path, logged_to[1], line_bytes=logged_to[1] - logged_to[0], ledger_size=ledger_size)
        return out

    def _records_after(self, start: int) -> tuple[int, list[dict[str, Any]], list[tuple[int, int]] | None]:
        """``(offset read from, the records from there, the span of each's line)``; a journal with a
        bad line is read whole once its bad lines are moved aside, without spans (None)."""
        if not os.path.isfile(self.path):
            return 0, [], None
        with open(self.path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
        spans: list[tuple[int, int]] = []
        records, bad = _scan(data, start, spans)
        if bad:  # moving them aside rewrites the journal, and drops the checkpoint (_rewrite_without)
            return 0, self.move_bad_lines(), None
        return start, records, spans

    @contextlib.contextmanager
    def replay_lock(self, wait: float | None = REPLAY_WAIT_S) -> Iterator[bool]:
        """Hold the journal's replay lock (``<journal>.replay.lock``); yields False when another process
        kept it for ``wait`` seconds (None: as long as it takes). A directory where the lock file
        cannot be made (read-only) is replayed without it."""
        try:
            fd = os.open(self.path + ".replay.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield True
            return
        try:
            deadline = None if wait is None else time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:  # type: ignore[operator]
                        yield False
                        return
                    time.sleep(0.05)
            yield True
        finally:
            os.close(fd)

    def replay(self, *, experiment: str | None = None, this_server: bool = False,
               keep: Callable[[dict[str, Any]], bool | None] | None = None,
               wait: float | None = REPLAY_WAIT_S) -> tuple[list[str], int]:
        """Log the pending records (each into its own experiment unless ``experiment`` is given).

        ``this_server``: only the records meant for the current tracking URI (automatic replays).
        ``keep(record)``: False for a record that must not be logged; it is marked done without a
        run. None for one that must not be logged yet (another live worker holds its claim): it
        stays pending.

        One process at a time replays a journal: this one waits up to ``wait`` seconds for another's
        replay to end, then reads what is still pending (what the other logged is marked by then);
        if the other is still at it, it leaves the replay to it (:attr:`replay_busy`, nothing logged).
        Idempotent: a record already FINISHED in MLflow is skipped and marked logged.
        Returns ``(new run ids, records skipped)``.
        """
        with self.replay_lock(wait) as held:
            self.replay_busy = not held
            if not held:
                return [], 0
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


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(byte offset, line with its newline)`` of each line of ``data``."""
    off = 0
    while off < len(data):
        end = data.find(b"\n", off)
        end = len(data) if end < 0 else end + 1
        yield off, data[off:end]
        off = end


def _scan(data: bytes, base: int = 0, spans: list[tuple[int, int]] | None = None
          ) -> tuple[list[dict[str, Any]], list[tuple[int, bytes, str]]]:
    """The records of a journal's bytes, and its bad lines ``(offset, line, why)``; a torn tail is neither.

    ``base``: the journal's byte offset of ``data``; ``spans``, when given, gets the journal's byte
    offsets ``(start, end)`` of each record's line."""
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.tracking.jsonl import parse_line, parses

    records: list[dict[str, Any]] = []
    bad: list[tuple[int, bytes, str]] = []
    for lineno, (off, raw) in enumerate(_lines(data), 1):
        try:
            record = parse_line(raw, f"line {lineno}" if base == 0 else f"byte offset {base + off}",
                                first=base + off == 0)
        except ConfigError as exc:
            if not raw.endswith(b"\n") and not parses(raw):
                break  # the last line, torn by a crash or still being written: never moved
            bad.append((base + off, raw, str(exc)))
            continue
        if record is not None:
            records.append(record)
            if spans is not None:
                spans.append((base + off, base + off + len(raw)))
    return records, bad


def log_records(
    records: Iterable[dict[str, Any]],
    *,
    experiment: str | None = None,
    on_logged: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[str], int]:
    """Log JSONL export records as FINISHED runs, skipping (config hash, hardware) already there.

    A record carrying ``parent_run_id`` (a journal record) is nested under that run.
    ``on_logged(record)`` is called for each record that is FINISHED in MLflow afterwards.
    """
    from mlflow_energy.tracking.jsonl import record_key
    from mlflow_energy.tracking.read import finished_keys
    from mlflow_energy.tracking.runs import _log_fields, client, default_run_name, display_of, experiment_id, run
    from mlflow_energy.tracking.stale import worker_id

    exp_id = experiment_id(experiment)
    seen = finished_keys(exp_id)
    new_ids: list[str] = []
    skipped = 0
    for record in records:
        key = record_key(record)
        if key not in seen and _finished_now(exp_id, key):  # another worker logged it meanwhile
            seen.add(key)
        if key in seen:
            skipped += 1
            if on_logged is not None:
                on_logged(record)
            continue
        tags = dict(record["tags"])
        kind = tags.pop(schema.T_KIND, schema.KIND_MEASUREMENT)
        config = record.get("config")
        name = default_run_name(_Cfg(config)) if isinstance(config, dict) else None
        parent = record.get("parent_run_id") or None
        worker = {schema.T_WORKER: worker_id()}  # on the run from its creation: a killed ingest's run is found
        metrics = dict(record["metrics"])
        if kind == schema.KIND_MEASUREMENT:  # the energy view's short columns, as a run logged directly has
            metrics.update(display_of(metrics))
        with run(exp_id, kind=kind, run_name=name, parent_run_id=parent, tags=worker) as run_id:
            _log_fields(run_id, record["params"], metrics, tags)
            if isinstance(config, dict):
                client().log_dict(run_id, {**config, "config_hash": key[0]}, schema.A_CONFIG_JSON)
        seen.add(key)
        new_ids.append(run_id)
        if on_logged is not None:
            on_logged(record)
    return new_ids, skipped


def _finished_now(exp_id: str, key: tuple[str, str]) -> bool:
    """Whether a FINISHED measurement run of ``key`` exists right now (rechecked before each log)."""
    from mlflow_energy.tracking.read import _search

    filt = (f"tags.`{schema.T_CONFIG_HASH}` = '{key[0]}' and attributes.status = 'FINISHED' and "
            f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}'")
    return any(r.data.tags.get(schema.T_HARDWARE, "") == key[1] for r in _search([exp_id], filt))


class _Cfg:
    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)

    def __getattr__(self, name: str) -> Any:
        return None
