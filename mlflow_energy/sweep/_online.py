"""Whether the tracking server answers a sweep: bounded retries, going offline, probing, waiting.

:class:`ServerState` is the part of :class:`~mlflow_energy.sweep.claims.SweepGuard` that knows
whether MLflow answers: a call that fails past its bounded retries puts the sweep offline (it
measures on into the journal, one line said); a probe brings it back and replays the journal
(:meth:`_replay`, the guard's); a one-off warning is said once.

Example:
    >>> from mlflow_energy.sweep.claims import SweepGuard
    >>> guard = SweepGuard(None, journal=None, hardware="cpu", echo=lambda line: None)
    >>> guard.safely("nothing", lambda: 42), guard.online
    (42, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["ServerState"]


class ServerState:
    """Online or offline, as the last call to the tracking server found it (the module doc).

    The guard sets ``online``, ``echo``, ``journal``, ``parent`` and ``_warned``, and gives ``_replay``.
    """

    online: bool
    echo: Callable[[str], None]
    journal: Any
    parent: str
    _warned: set[str]

    def _replay(self) -> None:  # pragma: no cover - the guard's
        raise NotImplementedError

    def wait_online(self) -> bool:
        """Probe the server until it answers or :func:`finish_wait_s` passes; True when online."""
        from mlflow_energy.tracking.stale import finish_wait_s

        deadline = time.monotonic() + finish_wait_s()
        while not self.online and time.monotonic() < deadline:
            self._probe()
            if not self.online:
                time.sleep(1.0)
        return self.online

    def _warn(self, what: str, line: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            self.echo(line)

    def safely(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` with retries; on a dead server, note it and return None (the sweep goes on)."""
        from mlflow_energy.tracking.retry import TrackingUnavailable, retrying

        if not self.online:
            return None
        try:
            return retrying(fn, what=what)
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return None

    def _go_offline(self, exc: BaseException) -> None:
        self.online = False
        self.echo(f"{exc}; measuring on into the journal {self.journal.path} (replayed when the server is back)")

    def _probe(self) -> None:
        from mlflow_energy.tracking.retry import retrying
        from mlflow_energy.tracking.runs import client

        try:
            retrying(lambda: client().get_run(self.parent), what="checking the server", backoff=())
        except Exception:
            return
        self.online = True
        self.echo("tracking server is back: replaying the journal")
        self._replay()

    def _mark(self, record: dict[str, Any]) -> None:
        from mlflow_energy.tracking.journal import JournalUnwritable

        try:
            self.journal.mark_logged([record])
        except JournalUnwritable as exc:  # the run is in MLflow; a later replay finds it FINISHED
            self._warn("ledger", f"{exc}; the runs are logged, the sweep goes on")
