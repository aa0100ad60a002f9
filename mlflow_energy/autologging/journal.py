"""The autolog journal: every autologged call is on disk before anything is sent to MLflow.

``autolog-journal.jsonl`` in ``$MLFLOW_ENERGY_STATE_DIR`` (default ``~/.local/state/mlflow-energy``)
holds one JSON entry per call, appended by the caller's thread when the call returns;
``autolog-journal.jsonl.done`` holds the call ids that reached MLflow. An entry in the first and not
in the second is *pending*: logged by a later call, :func:`mlflow_energy.flush`, or the next process
that autologs to the same tracking URI (its ``call_id`` tag is checked, so never twice).

Example:
    >>> from mlflow_energy.autologging.journal import journal_path
    >>> journal_path().name
    'autolog-journal.jsonl'
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "MLFLOW_ENERGY_STATE_DIR"
JOURNAL_NAME = "autolog-journal.jsonl"

_LOCK = threading.Lock()


# The replay lock of the state directory: one process at a time replays its pending entries. A
# holder keeps it while it logs what it was given; without progress for HOLD_S (the server is
# away) it lets go. Another process waits up to WAIT_S for it, then leaves the entries to it.
_REPLAY: dict[str, Any] = {"fd": None, "path": None, "owed": set(), "timer": None}
HOLD_S, WAIT_S = 10.0, 60.0


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a thread of the parent may have held it at the fork
    _REPLAY.update(fd=None, owed=set(), timer=None)  # the parent's replay lock stays the parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def journal_path() -> Path:
    """The autolog journal (``$MLFLOW_ENERGY_STATE_DIR/autolog-journal.jsonl``)."""
    env = os.environ.get(STATE_DIR_ENV)
    base = Path(env) if env else Path.home() / ".local" / "state" / "mlflow-energy"
    return base / JOURNAL_NAME


def done_path(path: Path | None = None) -> Path:
    """The file of call ids that reached MLflow, next to the journal."""
    path = path or journal_path()
    return path.with_name(path.name + ".done")


def append(path: Path, line: str, *, sync: bool = True) -> None:
    """Append one line; ``sync=False`` leaves it in the OS's buffers (a killed process keeps it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = memoryview((line + "\n").encode("utf-8"))
            while data:  # a short write (a nearly full disk) is continued, never silently cut
                data = data[os.write(fd, data):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def fsync(path: Path) -> None:
    """Flush a file another thread or process appended to without syncing (absent: nothing to do)."""
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


def _replay_lock(path: Path) -> bool:
    """Hold ``<journal>.replay.lock``, waiting up to ``WAIT_S`` for another process's replay; False if it kept it."""
    import fcntl
    import time

    lock = path.with_name(path.name + ".replay.lock")
    with _LOCK:
        if _REPLAY["fd"] is not None and _REPLAY["path"] == lock:
            return True
        _REPLAY["owed"] = set()  # another state directory's lock (if any) is let go
        _release_if_done()
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return True  # no state directory (nothing journaled), or one that cannot hold the lock file
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                os.close(fd)
                return False
            time.sleep(0.05)
    with _LOCK:
        _REPLAY.update(fd=fd, path=lock)
    return True


def _release_if_done() -> None:
    """Let the replay lock go once nothing given out is left to log; else hold it ``HOLD_S`` more (call under _LOCK)."""
    if _REPLAY["timer"] is not None:
        _REPLAY["timer"].cancel()
        _REPLAY["timer"] = None
    if _REPLAY["fd"] is None:
        return
    if not _REPLAY["owed"]:
        os.close(_REPLAY["fd"])  # releases the flock
        _REPLAY["fd"] = None
        return
    timer = threading.Timer(HOLD_S, _give_up)
    timer.daemon = True
    timer.start()
    _REPLAY["timer"] = timer


def _give_up() -> None:
    with _LOCK:
        _REPLAY["owed"] = set()
        _release_if_done()


def pending_entries(uri: str | None = None) -> list[dict[str, Any]]:
    """Journal entries not yet logged (for tracking URI ``uri`` when given), oldest first.

    One process at a time gets them: it takes the state directory's replay lock and keeps it until
    each entry it was given is marked done (or ``HOLD_S`` pass without one); another process waits
    for it, then reads what is still pending, so no entry is logged by two processes at once.
    """
    path = journal_path()
    if not _replay_lock(path):
        return []
    done = set(_read_lines(done_path(path)))  # read after the lock: what the last holder logged is done
    out = []
    for line in _read_lines(path):
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a crash
            continue
        if isinstance(entry, dict) and entry.get("id") not in done and (uri is None or entry.get("uri") == uri):
            out.append(entry)
    with _LOCK:
        _REPLAY["owed"] = {e.get("id") for e in out}
        _release_if_done()
    return out


def mark_done(call_id: str) -> None:
    """Record that a call reached MLflow (a full disk only means it may be checked again later)."""
    try:
        append(done_path(), call_id)
    except OSError:
        pass
    with _LOCK:
        _REPLAY["owed"].discard(call_id)
        _release_if_done()
