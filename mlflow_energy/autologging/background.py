"""The background logger: autologged calls reach MLflow off the caller's thread, journal first.

A pipeline call returns as soon as its meter windows are read. What it logs (params, metrics,
the step history, tags, the image) becomes one *entry*, queued to one daemon thread that

1. fsyncs the entry, which the caller's thread appended to the autolog journal
   (``autolog-journal.jsonl`` in ``$MLFLOW_ENERGY_STATE_DIR``, default
   ``~/.local/state/mlflow-energy``) before it returned;
2. creates the run (or uses the run that was active on the caller's thread) and logs the
   entry, with the project's short, bounded retries (:mod:`mlflow_energy.tracking.retry`);
3. marks the entry done in ``autolog-journal.jsonl.done``.

A tracking server that is away costs the caller nothing: the entry stays in the journal and is
logged by a later call's entry, by :func:`flush`, or at the next process's first call (each
pending entry carries a call id, so a run is never created twice). The queue is flushed at
interpreter exit (for at most 2 s: what is left is in the journal). The thread runs at the lowest
CPU priority (Linux ``nice`` 19): on a busy CPU it logs in idle time instead of slowing the
computation of the next call. Code that reads a run right after the call must call
:func:`mlflow_energy.flush` first: until then the run may not exist yet.

Example:
    >>> import mlflow_energy
    >>> mlflow_energy.flush()
    True
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow_energy import schema

STATE_DIR_ENV = "MLFLOW_ENERGY_STATE_DIR"
JOURNAL_NAME = "autolog-journal.jsonl"
#: Longest side of the logged image.
IMAGE_MAX_SIDE = 256

_QUEUE: queue.Queue[dict[str, Any] | None] = queue.Queue()
_THREAD: threading.Thread | None = None
_START_LOCK = threading.Lock()
_JOURNAL_LOCK = threading.Lock()
_SEND_LOCK = threading.RLock()  # one sender at a time: the logger thread, or a flush() replaying the journal
_STATE = {"pending": 0, "warned": False, "replayed": False}
_QUEUED: set[str] = set()  # ids submitted in this process and not yet handled: never replayed
_WARN: list[Callable[[str], None]] = []


def journal_path() -> Path:
    """The autolog journal (``$MLFLOW_ENERGY_STATE_DIR/autolog-journal.jsonl``)."""
    env = os.environ.get(STATE_DIR_ENV)
    base = Path(env) if env else Path.home() / ".local" / "state" / "mlflow-energy"
    return base / JOURNAL_NAME


def _append(path: Path, line: str, *, sync: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        data = memoryview((line + "\n").encode("utf-8"))
        while data:  # a short write (a nearly full disk) is continued, never silently cut
            data = data[os.write(fd, data):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []


def pending_entries(uri: str | None = None) -> list[dict[str, Any]]:
    """Journal entries not yet logged (for tracking URI ``uri`` when given), oldest first."""
    path = journal_path()
    done = set(_read_lines(path.with_name(path.name + ".done")))
    out = []
    for line in _read_lines(path):
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a crash
            continue
        if isinstance(entry, dict) and entry.get("id") not in done and (uri is None or entry.get("uri") == uri):
            out.append(entry)
    return out


def submit(entry: dict[str, Any], *, warn: Callable[[str], None] | None = None) -> None:
    """Journal one call's entry (in the OS's buffers: a killed process keeps it) and queue it."""
    global _THREAD
    if warn is not None and not _WARN:
        _WARN.append(warn)
    image = entry.pop("_image", None)
    path = journal_path()
    try:
        with _JOURNAL_LOCK:
            _append(path, json.dumps(entry, sort_keys=True, allow_nan=False, default=str), sync=False)
    except (OSError, ValueError) as exc:
        _say(f"the autolog journal {path} is not writable ({exc}); logging without it")
    entry["_image"] = image
    with _START_LOCK:
        _QUEUED.add(entry["id"])
        _STATE["pending"] += 1
        if _THREAD is None or not _THREAD.is_alive():
            _THREAD = threading.Thread(target=_worker, name="mlflow-energy-autolog", daemon=True)
            _THREAD.start()
    _QUEUE.put(entry)


def flush(timeout: float | None = 60.0) -> bool:
    """Wait until every queued call is logged (or kept in the journal); ``True`` when all reached MLflow.

    Also retries the journal's pending entries for the current tracking URI.

    Example:
        >>> import mlflow_energy
        >>> mlflow_energy.flush(timeout=1.0)
        True
    """
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while _STATE["pending"] > 0:
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    try:
        with _SEND_LOCK:
            return _replay()
    except Exception:
        return False


#: The logger thread's CPU priority (Linux ``nice``): lowest, so that on a busy CPU its run
#: creation and logging take idle time, not time from the computation you are measuring.
NICE = 19


def _lower_priority() -> None:
    """Run this thread at :data:`NICE` (Linux only: there a thread id is a ``setpriority`` target)."""
    import sys

    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except OSError:  # not permitted here: the thread runs at the process's priority
            pass


def _worker() -> None:
    _lower_priority()
    while True:
        entry = _QUEUE.get()
        try:
            if entry is not None:
                with _SEND_LOCK:
                    _handle(entry)
        finally:
            with _START_LOCK:
                _STATE["pending"] -= 1
                if entry is not None:
                    _QUEUED.discard(entry["id"])
            _QUEUE.task_done()


def _handle(entry: dict[str, Any]) -> None:
    image = entry.pop("_image", None)
    path = journal_path()
    _fsync(path)  # on disk before anything is sent
    try:
        if not _STATE["replayed"]:
            _STATE["replayed"] = True
            _replay(skip=entry["id"])
        _send(entry, image=image)
    except Exception as exc:
        from mlflow_energy.tracking.retry import TrackingUnavailable, is_unavailable

        if isinstance(exc, TrackingUnavailable) or is_unavailable(exc):
            if not _STATE["warned"]:
                _STATE["warned"] = True
                _say(f"the tracking server is away: calls are kept in {path} and logged when it is back "
                     "(the next call, mlflow_energy.flush(), or the next process)")
            _STATE["replayed"] = False
        else:
            _say(f"could not log this call ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            _mark_done(entry["id"])  # a bad entry would fail again: do not replay it forever


def _say(message: str) -> None:
    for warn in _WARN:
        try:
            warn(message)
        except Exception:
            pass


def _mark_done(call_id: str) -> None:
    path = journal_path()
    try:
        with _JOURNAL_LOCK:
            _append(path.with_name(path.name + ".done"), call_id)
    except OSError:
        pass


def _replay(skip: str | None = None) -> bool:
    """Log the journal's pending entries for this tracking URI; ``True`` when none is left."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    for entry in pending_entries(uri):
        with _START_LOCK:
            queued = entry["id"] in _QUEUED
        if entry["id"] == skip or queued:  # the worker logs what is still in its queue
            continue
        _send(entry, replay=True)
    with _START_LOCK:
        queued = set(_QUEUED)
    return not [e for e in pending_entries(uri) if e["id"] != skip and e["id"] not in queued]


def _existing_run(client: Any, entry: dict[str, Any]) -> str | None:
    runs = client.search_runs([entry["experiment_id"]], filter_string=f"tags.`{schema.T_CALL_ID}` = '{entry['id']}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def _experiment_id(client: Any, entry: dict[str, Any]) -> str:
    if entry.get("experiment_id"):
        return str(entry["experiment_id"])
    name = entry.get("experiment_name")
    if name:
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else client.create_experiment(name)
    from mlflow.tracking.fluent import _get_experiment_id

    return str(_get_experiment_id() or "0")


def _send(entry: dict[str, Any], *, image: Any = None, replay: bool = False) -> None:
    """Log one entry: into the caller's run, or a run created for it; then mark it done."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mlflow_energy.tracking.retry import configure_client_retries, retrying

    configure_client_retries()
    client = MlflowClient(entry["uri"])
    run_id = entry.get("run_id")
    ours = run_id is None
    if ours:
        entry["experiment_id"] = retrying(lambda: _experiment_id(client, entry), what="finding the experiment")
        existing = retrying(lambda: _existing_run(client, entry), what="looking for the call's run") if replay else None
        if existing is not None:  # logged before the journal could say so
            _mark_done(entry["id"])
            return
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags({**entry["run_tags"], schema.T_CALL_ID: entry["id"]})
        if entry.get("parent_run_id"):
            tags[schema.T_PARENT_RUN_ID] = entry["parent_run_id"]
        run = retrying(lambda: client.create_run(entry["experiment_id"], run_name=entry["run_name"], tags=tags,
                                                 start_time=entry["start_ms"]),
                       what="creating the call's run")
        run_id = run.info.run_id
    metrics = [Metric(k, float(v), entry["time_ms"], int(step)) for k, v, step in entry["metrics"]]
    params = [Param(k, str(v)) for k, v in entry["params"].items()]
    tags = [RunTag(k, str(v)) for k, v in entry["tags"].items()]
    try:
        for start in range(0, max(1, len(metrics)), 1000):  # log_batch takes at most 1000 metrics
            chunk = metrics[start:start + 1000]
            first = start == 0
            retrying(lambda chunk=chunk, first=first: client.log_batch(
                run_id, metrics=chunk, params=params if first else [], tags=tags if first else []),
                what="logging the call")
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        from mlflow_energy.tracking.retry import is_unavailable

        if ours or not isinstance(exc, MlflowException) or is_unavailable(exc):
            raise
        # your run already has one of these params with another value: log the rest
        _say(f"params not logged ({str(exc).splitlines()[0][:200]})")
        for start in range(0, max(1, len(metrics)), 1000):
            retrying(lambda start=start: client.log_batch(run_id, metrics=metrics[start:start + 1000], tags=tags),
                     what="logging the call")
    for key in entry.get("delete_tags", []):
        try:
            client.delete_tag(run_id, key)
        except Exception:
            pass
    if image is not None:
        try:
            from mlflow_energy.autologging.identify import first_image

            picture = first_image(image)  # the call's output: its first image, at most 256 px
            if picture is not None:
                picture = picture.copy()
                picture.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
                client.log_image(run_id, picture, artifact_file=schema.A_IMAGE_PNG)
        except Exception as exc:  # the artifact store is not the tracking server: say so, keep the run
            _say(f"image not logged ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    if ours:
        retrying(lambda: client.set_terminated(run_id, entry["status"], end_time=entry["end_ms"]),
                 what="ending the call's run")
    _mark_done(entry["id"])


def _flush_at_exit() -> None:
    # A server that is away must not hold the interpreter: what is not logged by then stays in
    # the journal, written when each call returned, and is logged by a later process.
    flush(timeout=2.0)


atexit.register(_flush_at_exit)
