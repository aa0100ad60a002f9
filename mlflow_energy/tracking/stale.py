"""No run left RUNNING: a heartbeat on live runs, and recovery of the runs of dead processes.

A sweep killed with ``kill -9`` (or a host that lost power) cannot end its runs. So a live
sweep refreshes a heartbeat tag (:data:`~mlflow_energy.schema.T_HEARTBEAT`, epoch seconds) on
its run every :func:`heartbeat_s` seconds (``$MLFLOW_ENERGY_HEARTBEAT_S``, default 30), and
the next sweep of the same spec on the same hardware calls :func:`recover_stale` first: a
RUNNING sweep run whose heartbeat is older than :data:`STALE_AFTER` heartbeats is ended KILLED
with the reason in :data:`~mlflow_energy.schema.T_FAILURE`; its RUNNING children are ended
FAILED, and those that hold no metrics (killed before logging) are deleted, so no orphan
survives a resume. A RUNNING measurement run of no live parent, older than the same limit,
is treated the same way, and so is one whose own process (an ``ingest`` or a replay, named by its
:data:`~mlflow_energy.schema.T_WORKER` tag) is gone, whatever its parent.

Example:
    >>> from mlflow_energy.tracking.stale import is_stale
    >>> is_stale({"mlflow_energy.heartbeat": "100"}, start_time_ms=0, now=100 + 10)
    False
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from mlflow_energy import schema

HEARTBEAT_ENV = "MLFLOW_ENERGY_HEARTBEAT_S"
FINISH_WAIT_ENV = "MLFLOW_ENERGY_FINISH_WAIT_S"
#: A run is stale after this many heartbeat periods without a beat.
STALE_AFTER = 3


def finish_wait_s() -> float:
    """Seconds a sweep waits for a server that is away before it ends (``$MLFLOW_ENERGY_FINISH_WAIT_S``, 60)."""
    try:
        value = float(os.environ.get(FINISH_WAIT_ENV, "60"))
    except ValueError:
        value = 60.0
    return max(value, 0.0)


def heartbeat_s() -> float:
    """Seconds between heartbeats: ``$MLFLOW_ENERGY_HEARTBEAT_S``, default 30."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, "30"))
    except ValueError:
        value = 30.0
    return value if value > 0 else 30.0


def worker_id() -> str:
    """``host:pid`` of this process (the :data:`~mlflow_energy.schema.T_WORKER` tag)."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(tags: Mapping[str, str]) -> bool:
    """True when the run's worker ran on this host and its process no longer exists."""
    import socket

    host, _, pid = tags.get(schema.T_WORKER, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def is_stale(tags: Mapping[str, str], *, start_time_ms: int | None, now: float | None = None) -> bool:
    """True when the run's process is gone (same host), or its last heartbeat (else its start)
    is older than ``STALE_AFTER`` heartbeats."""
    if process_gone(tags):
        return True
    now = time.time() if now is None else now
    try:
        last = float(tags[schema.T_HEARTBEAT])
    except (KeyError, ValueError):
        last = (start_time_ms or 0) / 1000.0
    return now - last > STALE_AFTER * heartbeat_s()


class Heartbeat:
    """Refreshes the heartbeat tag of ``run_id`` from a daemon thread until :meth:`stop`."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._stop = threading.Event()
        self.ok_since: float | None = None  # monotonic time since when every beat has reached the server
        self.last_ok = 0.0  # monotonic time of the last beat that reached it
        self._thread = threading.Thread(target=self._loop, name="mlflow-energy-heartbeat", daemon=True)

    def beat(self) -> None:
        from mlflow_energy.tracking.runs import client

        try:
            client().set_tag(self.run_id, schema.T_HEARTBEAT, f"{time.time():.0f}")
        except Exception:  # the server may be away; the journal keeps the data
            self.ok_since = None
            return
        self.last_ok = time.monotonic()
        if self.ok_since is None:
            self.ok_since = self.last_ok

    def steady(self) -> bool:
        """True when this worker's own beats have reached the server for ``STALE_AFTER`` heartbeats.

        Only then may it judge another worker stale: right after an outage every heartbeat in the
        store is old, the live workers' as much as the dead ones'.
        """
        now, beat = time.monotonic(), heartbeat_s()
        return (self.ok_since is not None and now - self.ok_since > STALE_AFTER * beat
                and now - self.last_ok < 2 * beat)  # and no beat is hanging on a server gone quiet

    def _loop(self) -> None:
        while not self._stop.wait(heartbeat_s()):
            self.beat()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def _search(exp_id: str, filt: str) -> list[Any]:
    from mlflow_energy.tracking.read import _search as search

    return search([exp_id], filt)


def _end(run: Any, status: str, reason: str, *, delete_empty: bool = False) -> None:
    from mlflow_energy.tracking.runs import client

    c = client()
    c.set_tag(run.info.run_id, schema.T_FAILURE, reason)
    c.set_terminated(run.info.run_id, status=status)
    if delete_empty and not run.data.metrics:
        c.delete_run(run.info.run_id)


def end_stale(run: Any, *, by: str | None) -> None:
    """End a RUNNING sweep run whose heartbeat is stale KILLED (it is fenced: on resuming it stops)."""
    import datetime as dt

    tags = run.data.tags
    last = float(tags.get(schema.T_HEARTBEAT, (run.info.start_time or 0) / 1000.0))
    when = dt.datetime.fromtimestamp(last, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    why = "its process is gone" if process_gone(tags) else f"no heartbeat since {when}"
    _end(run, "KILLED", f"stale: {why}; the worker stopped" + (f" (found by run {by})" if by else ""))


def recover_stale(exp_id: str, *, spec_name: str | None = None, hardware: str | None = None,
                  by: str | None = None) -> list[str]:
    """End the stale RUNNING runs of an experiment (see the module doc); return their ids.

    ``spec_name``/``hardware`` restrict the sweep runs considered to this spec on this hardware
    (another team's sweep on other GPUs is left alone). Children are judged by their parent.
    """
    now = time.time()
    running = _search(exp_id, "attributes.status = 'RUNNING'")
    by_id = {r.info.run_id: r for r in running}
    dead: set[str] = set()
    ended: list[str] = []
    for r in running:
        tags = r.data.tags
        if tags.get(schema.T_KIND) != schema.KIND_SWEEP or r.info.run_id == by:
            continue
        if spec_name is not None and tags.get(schema.T_SWEEP_SPEC) != spec_name:
            continue
        if hardware is not None and tags.get(schema.T_HARDWARE, hardware) != hardware:
            continue
        if not is_stale(tags, start_time_ms=r.info.start_time, now=now):
            continue
        end_stale(r, by=by)
        dead.add(r.info.run_id)
        ended.append(r.info.run_id)
    for r in running:
        tags = r.data.tags
        if tags.get(schema.T_KIND) != schema.KIND_MEASUREMENT or r.info.run_id in ended:
            continue
        parent = tags.get(schema.T_PARENT_RUN_ID)
        # its own process gone (an ingest or replay killed while logging it), whatever its parent
        if parent in dead or process_gone(tags) or (parent not in by_id and parent != by
                                                    and is_stale(tags, start_time_ms=r.info.start_time, now=now)):
            if hardware is not None and tags.get(schema.T_HARDWARE, hardware) != hardware:
                continue
            _end(r, "FAILED", "stale: the process measuring or logging this run stopped", delete_empty=True)
            ended.append(r.info.run_id)
    return ended


def end_orphans(exp_id: str, parent_run_id: str) -> list[str]:
    """End the RUNNING children of a finishing sweep (a log cut short by the server going away).

    They are ended FAILED with the reason; those without metrics are removed (their measurement
    is in the journal and was replayed as its own run).
    """
    ended = []
    filt = f"attributes.status = 'RUNNING' and tags.`{schema.T_PARENT_RUN_ID}` = '{parent_run_id}'"
    for r in _search(exp_id, filt):
        _end(r, "FAILED", "logging was cut short (the tracking server went away); the journal holds the "
             "measurement", delete_empty=True)
        ended.append(r.info.run_id)
    return ended


def recover_dead_processes(exp_id: str, kinds: tuple[str, ...]) -> list[str]:
    """End the RUNNING runs of ``kinds`` (``fit``, ``measurement``) whose process is gone; return their ids.

    ``fit`` and ``ingest`` tag their runs with :data:`~mlflow_energy.schema.T_WORKER` and beat while
    they run; a run killed with them is found here (same host: by PID at once; another host: by a
    heartbeat older than ``STALE_AFTER`` periods) and ended FAILED with the reason. Runs without the
    worker tag (made by other tools) are left alone.
    """
    ended = []
    for r in _search(exp_id, "attributes.status = 'RUNNING'"):
        tags = r.data.tags
        if tags.get(schema.T_KIND) not in kinds or not tags.get(schema.T_WORKER):
            continue
        # A measurement run with the worker tag was made by an ingest or a replay (a sweep's own
        # children carry none): its process is what counts, whatever its parent.
        if not is_stale(tags, start_time_ms=r.info.start_time):
            continue
        _end(r, "FAILED", "stale: the process that ran it stopped (killed); found at the start of the next run",
             delete_empty=tags.get(schema.T_KIND) == schema.KIND_MEASUREMENT)
        ended.append(r.info.run_id)
    return ended
