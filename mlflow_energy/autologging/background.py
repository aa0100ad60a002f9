"""The background logger: autologged calls reach MLflow off the caller's thread and process, journal first.

A pipeline call returns as soon as its meter windows are read. What it logs (params, metrics,
the step history, tags, the image) becomes one *entry*: the caller's thread appends it to the
autolog journal (:mod:`.journal`) and queues it. One daemon thread takes the queue, makes the
image's PNG, and hands each entry to the **logger process** (:mod:`.logger_process`), a child
Python process at the lowest CPU priority (``nice`` 19) that creates the run (or uses the run that
was active on the caller's thread), logs it with the project's short, bounded retries and marks
it done (:mod:`.send`).

Why a process: creating and logging an MLflow run costs tens of milliseconds of Python per call
(SQLAlchemy, HTTP). On a thread that work holds the interpreter lock the pipeline's own thread
needs between kernels, which no CPU priority can lower, and its CPU time is the process's, which
the CPU energy estimate counts as the next call's. In a process of its own it does neither. Where
the process cannot start (or ends), the thread logs the entries itself;
``MLFLOW_ENERGY_AUTOLOG_LOGGER=thread`` chooses that from the start (for a tracking store
registered in your process only).

A tracking server that is away costs the caller nothing: the entry stays in the journal and is
logged by a later call's entry, by :func:`flush`, or at the next process's first call (each
pending entry carries a call id, so a run is never created twice). The queue is flushed at
interpreter exit (for at most 2 s: what is left is in the journal). Code that reads a run right
after the call must call :func:`mlflow_energy.flush` first: until then the run may not exist yet.

Example:
    >>> import mlflow_energy
    >>> mlflow_energy.flush()
    True
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from mlflow_energy.autologging import send
from mlflow_energy.autologging.journal import append, journal_path

#: The environment variable that chooses where runs are logged from: ``process`` (default) or ``thread``.
LOGGER_ENV = "MLFLOW_ENERGY_AUTOLOG_LOGGER"
#: The logger's CPU priority (``nice``): lowest, so that on a busy CPU its run creation and logging
#: take idle time, not time from the computation you are measuring.
NICE = 19

_QUEUE: queue.Queue[dict[str, Any] | None] = queue.Queue()
_THREAD: threading.Thread | None = None
_START_LOCK = threading.Lock()
_SEND_LOCK = threading.RLock()  # one sender at a time: the logger thread, or a flush() replaying the journal
_STATE = {"pending": 0}
_QUEUED: set[str] = set()  # ids submitted in this process and not yet handled: never replayed
_BY_RUN: dict[str, set[str]] = {}  # your run's id -> its queued entries (logged into it, or its child runs)
_PROC: dict[str, Any] = {"proc": None, "failed": False, "env": None}
_PROC_LOCK = threading.Lock()


def submit(entry: dict[str, Any], *, warn: Callable[[str], None] | None = None) -> None:
    """Journal one call's entry (in the OS's buffers: a killed process keeps it) and queue it."""
    global _THREAD
    if warn is not None:
        send.set_say(warn, replace=False)
    image = entry.pop("_image", None)
    finish = entry.pop("_finish", None)  # traced FLOPs, counted on the logger thread
    path = journal_path()
    try:
        append(path, json.dumps(entry, sort_keys=True, allow_nan=False, default=str), sync=False)
    except (OSError, ValueError) as exc:
        send.say(f"the autolog journal {path} is not writable ({exc}); logging without it")
    entry["_image"] = image
    if finish is not None:
        entry["_finish"] = finish
    owner = entry.get("run_id") or entry.get("parent_run_id")
    with _START_LOCK:
        _QUEUED.add(entry["id"])
        if owner:
            _BY_RUN.setdefault(owner, set()).add(entry["id"])
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
        import mlflow

        with _SEND_LOCK:
            return send.replay(mlflow.get_tracking_uri(), skip=_queued)
    except Exception:
        return False


def wait_for_run(run_id: str, timeout: float) -> int:
    """Wait (at most ``timeout`` s) until the calls queued for your run ``run_id`` are handled.

    Those logged into it and its child runs, one per call. Returns how many are still queued
    (``0``: all handled; they are in the journal either way).
    """
    import time

    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        with _START_LOCK:
            left = len(_BY_RUN.get(run_id, ()))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def _forget(entry: dict[str, Any]) -> None:
    owner = entry.get("run_id") or entry.get("parent_run_id")
    ids = _BY_RUN.get(owner) if owner else None
    if ids is not None:
        ids.discard(entry["id"])
        if not ids:
            del _BY_RUN[owner]


def _queued(call_id: str) -> bool:
    with _START_LOCK:
        return call_id in _QUEUED


def logger_pid() -> int | None:
    """The logger process's id while it runs (``None``: not started, or logging on the thread)."""
    proc = _PROC["proc"]
    return proc.pid if proc is not None and proc.poll() is None else None


def start_logger() -> None:
    """Start the logger process now (``autolog()`` does), so its imports overlap your pipeline's loading."""
    _process()


def _lower_priority() -> None:
    """Run this thread at :data:`NICE` (Linux only: there a thread id is a ``setpriority`` target)."""
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
                    _forget(entry)
            _QUEUE.task_done()


def _handle(entry: dict[str, Any]) -> None:
    output = entry.pop("_image", None)
    finish = entry.pop("_finish", None)
    if finish is not None:
        try:
            finish(entry)
        except Exception as exc:
            send.say(f"FLOPs not traced ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    try:
        png = send.picture_png(output)
    except Exception as exc:
        png = None
        send.say(f"image not logged ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    if not entry.get("experiment_id") and not entry.get("experiment_name"):
        from mlflow.tracking.fluent import _get_experiment_id  # this process's default experiment

        entry["experiment_id"] = str(_get_experiment_id() or "0")
    with _START_LOCK:
        skip = sorted(_QUEUED - {entry["id"]})
    outcome = _relay(entry, png, skip)
    if outcome != "done":  # no logger process: log here; after one that ended mid-entry, look first
        send.handle(entry, png=png, skip=skip, look_first=outcome == "ended")


def _relay(entry: dict[str, Any], png: bytes | None, skip: list[str]) -> str:
    """Have the logger process log ``entry``: ``done``, ``none`` (no process) or ``ended`` (it died)."""
    proc = _process()
    if proc is None:
        return "none"
    message: dict[str, Any] = {"entry": entry, "skip": skip, "cwd": os.getcwd(),
                               "png": base64.b64encode(png).decode("ascii") if png else None}
    env = dict(os.environ)
    if env != _PROC["env"]:  # the process takes your environment as it is at each call (tokens set later)
        message["env"] = _PROC["env"] = env
    try:
        proc.stdin.write(json.dumps(message, default=str) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if "say" in reply:
                send.say(reply["say"])
            elif reply.get("done") == entry["id"]:
                return "done"
    except (OSError, ValueError):
        pass
    _logger_ended(proc.poll())
    return "ended"


def _logger_ended(code: int | None) -> None:
    _PROC["failed"] = True
    send.say(f"the autolog logger process ended (exit {code}); logging from this process from now on")


def _process() -> subprocess.Popen | None:
    """The logger process, started on first use; ``None`` where it cannot run or was not chosen."""
    with _PROC_LOCK:
        return _start_process()


def _start_process() -> subprocess.Popen | None:
    proc = _PROC["proc"]
    if proc is not None and proc.poll() is None:
        return proc
    if proc is not None and not _PROC["failed"]:  # it ended between calls
        _logger_ended(proc.returncode)
    if _PROC["failed"] or os.environ.get(LOGGER_ENV, "process").strip().lower() == "thread":
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # finds mlflow_energy as this process does
    try:
        _PROC["proc"] = subprocess.Popen(
            [sys.executable, "-m", "mlflow_energy.autologging.logger_process"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
            start_new_session=True,  # your Ctrl-C does not stop it mid-run: it ends when this process does
        )
    except OSError as exc:
        _PROC["failed"] = True
        send.say(f"the autolog logger process could not start ({exc}); logging from this process")
        return None
    _PROC["env"] = None
    return _PROC["proc"]


def _flush_at_exit() -> None:
    # A server that is away must not hold the interpreter: what is not logged by then stays in
    # the journal, written when each call returned, and is logged by a later process.
    flush(timeout=2.0)


atexit.register(_flush_at_exit)


def _after_fork_in_child() -> None:
    # A process forked after autolog() (multiprocessing workers, one per GPU) has no logger thread
    # and must not share its parent's logger process pipe: it starts its own. What was queued in
    # the parent is the parent's to log.
    global _QUEUE, _THREAD, _START_LOCK, _SEND_LOCK, _PROC_LOCK
    _QUEUE = queue.Queue()
    _THREAD = None
    _START_LOCK, _SEND_LOCK, _PROC_LOCK = threading.Lock(), threading.RLock(), threading.Lock()
    _STATE["pending"] = 0
    _QUEUED.clear()
    _BY_RUN.clear()
    _PROC.update(proc=None, failed=False, env=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
