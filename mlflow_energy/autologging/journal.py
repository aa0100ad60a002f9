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


def _after_fork_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # a thread of the parent may have held it at the fork


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


def pending_entries(uri: str | None = None) -> list[dict[str, Any]]:
    """Journal entries not yet logged (for tracking URI ``uri`` when given), oldest first."""
    path = journal_path()
    done = set(_read_lines(done_path(path)))
    out = []
    for line in _read_lines(path):
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut by a crash
            continue
        if isinstance(entry, dict) and entry.get("id") not in done and (uri is None or entry.get("uri") == uri):
            out.append(entry)
    return out


def mark_done(call_id: str) -> None:
    """Record that a call reached MLflow (a full disk only means it may be checked again later)."""
    try:
        append(done_path(), call_id)
    except OSError:
        pass
