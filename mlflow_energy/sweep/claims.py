"""What keeps a sweep's measurements safe: the journal, bounded retries, stale recovery, claims.

:class:`SweepGuard` wraps the MLflow side of :func:`mlflow_energy.sweep.run.run_sweep`:

- **Journal first.** Each measurement is appended to the local journal (fsync) before it is
  logged. If the server does not answer within the bounded retries, the sweep prints one line
  and goes on measuring into the journal; before each config it checks the server again and
  replays the pending records as soon as it is back (and once more at the end).
- **Stale runs.** At start, RUNNING runs of the spec and hardware with an old heartbeat are ended
  KILLED, their children without metrics removed (:func:`mlflow_energy.tracking.stale.recover_stale`).
- **Claims.** N workers on one spec (no ``--shard`` needed) measure each config once: before
  measuring, a worker logs the param ``claim/<hash>/<hw>/<attempt>`` = its sweep run id on the
  spec's *claims ledger* run (in the sibling experiment ``<experiment>-sweep-claims``, never a
  result row). Params are immutable, so one worker's value is stored; the others skip the config.
  A claim whose owner is no longer RUNNING (killed) is taken over with the next attempt number;
  an owner that is RUNNING with a stale heartbeat (paused, partitioned) is ended KILLED first,
  so that on resuming it finds itself *fenced* and stops (:meth:`SweepGuard.fenced`).
- **Offline.** With the server away, a worker measures only its share of the live workers (by
  config hash) into the journal; the rest wait for a final pass. A replay claims each offline
  measurement before logging it; one a live worker claimed meanwhile waits in the journal. Right
  after an outage every heartbeat is old: no worker judges another stale until its own beats have
  reached the server for ``STALE_AFTER`` heartbeats.
- **Final pass.** Configs another worker held are checked again at the end: a dead holder's
  are taken over, a live one is waited for.

Example:
    >>> from mlflow_energy.sweep.claims import SweepGuard
    >>> SweepGuard(None, journal=None, hardware="cpu").online
    True
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from mlflow_energy import schema
from mlflow_energy.sweep.ledger import ClaimLedger


class SweepGuard:
    """The journal, retries, heartbeat, stale recovery, claims and fencing of one sweep (module doc)."""

    def __init__(self, tracker: Any, *, journal: str | os.PathLike[str] | None, hardware: str,
                 echo: Callable[[str], None] = print, claims: bool = True) -> None:
        from mlflow_energy.tracking.journal import Journal

        self.tracker = tracker
        self.journal = Journal(journal)
        self.hardware = hardware
        self.echo = echo
        self.claims = claims
        self.online = True
        self.heartbeat: Any = None
        self.ledger: ClaimLedger | None = None
        self.replayed = 0
        self.fence: str | None = None  # why this worker was fenced (its run ended by another)
        self.peers: tuple[int, int] = (0, 1)  # this worker's share of the live workers, for offline work
        self.unjournaled: list[dict[str, Any]] = []  # records the journal could not take (disk full)
        self.store_full = False
        self.missing: list[Any] = []  # configs the final pass could not settle (the server stayed away)
        self._warned: set[str] = set()
        if tracker is not None:  # on the sweep run from its creation: a kill -9 right after is recognised
            from mlflow_energy.tracking.stale import worker_id

            tracker.extra_tags = {schema.T_WORKER: worker_id(), schema.T_HARDWARE: hardware}

    # ------------------------------------------------------------------ start / finish
    def start(self, parent_run_id: str) -> None:
        from mlflow_energy.tracking.retry import retrying
        from mlflow_energy.tracking.runs import client
        from mlflow_energy.tracking.stale import Heartbeat, recover_stale

        self.parent = parent_run_id
        exp_id = self.tracker.exp_id
        self.tracker.exp_name = retrying(lambda: client().get_experiment(exp_id).name, what="starting the sweep")
        ended = retrying(lambda: recover_stale(exp_id, spec_name=self.tracker.spec.name, hardware=self.hardware,
                                               by=parent_run_id), what="ending stale runs")
        if ended:
            self.echo(f"ended {len(ended)} stale RUNNING run(s) of a stopped worker (reason in tag {schema.T_FAILURE})")
        self.heartbeat = Heartbeat(parent_run_id).start()
        if self.claims:
            from mlflow_energy.tracking.runs import experiment_id
            ledger = self.tracker.exp_name + schema.CLAIMS_EXPERIMENT_SUFFIX
            self.ledger = retrying(lambda: ClaimLedger(experiment_id(ledger), self.tracker.spec.name), what="opening the claims")
            self.safely("listing the live workers", self._count_peers)
        self._replay()

    def finish(self) -> None:
        """Stop the heartbeat, replay what is pending, end cut-short children; never raises."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        try:
            self._finish()
        except Exception as exc:  # the sweep run must still be ended by the caller
            from mlflow_energy.tracking.runs import one_line

            self.echo(f"could not settle the journal: {one_line(exc)}; run `mlflow-energy ingest {self.journal.path}`")

    def _finish(self) -> None:
        if not self.online:
            self.wait_online()
        self._replay()
        if self.online and not self.fence:
            from mlflow_energy.tracking.stale import end_orphans

            self.safely("ending cut-short runs", lambda: end_orphans(self.tracker.exp_id, self.parent))
        if not self.online:
            n = len(self.journal.pending(this_server=True))
            self.echo(f"{n} measurement(s) wait in the journal {self.journal.path}: "
                      f"run `mlflow-energy ingest {self.journal.path}` when the tracking server is back")
        if self.unjournaled:
            self.echo(f"{len(self.unjournaled)} measurement(s) reached neither MLflow nor the journal "
                      f"{self.journal.path} (it cannot be written): they are lost when this process ends")

    def wait_online(self) -> bool:
        """Probe the server until it answers or :func:`finish_wait_s` passes; True when online."""
        from mlflow_energy.tracking.stale import finish_wait_s

        deadline = time.monotonic() + finish_wait_s()
        while not self.online and time.monotonic() < deadline:
            self._probe()
            if not self.online:
                time.sleep(1.0)
        return self.online

    # ------------------------------------------------------------------ per config
    def _alive(self, run_id: str) -> bool:
        """True when the holder's sweep run is RUNNING and beating; a stale one is ended (fenced)."""
        from mlflow_energy.tracking.runs import client
        from mlflow_energy.tracking.stale import end_stale, is_stale

        try:
            run = client().get_run(run_id)
        except Exception:
            return False
        if run.info.status != "RUNNING":
            return False
        if not is_stale(run.data.tags, start_time_ms=run.info.start_time):
            return True
        if self.heartbeat is not None and not self.heartbeat.steady():
            return True  # our own beats were failing too: the server was away for everyone, judge later
        end_stale(run, by=self.parent)  # a paused or cut-off worker: fenced before its claims are taken
        return False

    def _count_peers(self) -> None:
        from mlflow_energy.tracking.filters import exact, tag_equals
        from mlflow_energy.tracking.read import _search
        from mlflow_energy.tracking.stale import is_stale

        name = self.tracker.spec.name
        filt = (f"attributes.status = 'RUNNING' and tags.`{schema.T_KIND}` = '{schema.KIND_SWEEP}' and "
                f"{tag_equals(schema.T_SWEEP_SPEC, name)}")
        live = sorted(r.info.run_id for r in exact(_search([self.tracker.exp_id], filt), schema.T_SWEEP_SPEC, name)
                      if r.data.tags.get(schema.T_HARDWARE) == self.hardware
                      and (r.info.run_id == self.parent or not is_stale(r.data.tags, start_time_ms=r.info.start_time)))
        if self.parent in live:
            self.peers = (live.index(self.parent), len(live))

    def _mine_offline(self, config_hash: str) -> bool:
        index, count = self.peers
        return int(config_hash, 16) % count == index

    def claim(self, cfg: Any) -> bool:
        """True when this worker should measure ``cfg`` now.

        Online: it holds the claim. Offline: the config is in this worker's share of the live
        workers (the others are left to the final pass, :meth:`passed`).
        """
        from mlflow_energy.tracking.retry import TrackingUnavailable, retrying

        h = cfg.config_hash()
        if not self.online:
            self._probe()
        if self.fenced():
            return False
        if self.ledger is None:
            return True
        if not self.online:
            return self._mine_offline(h)
        try:
            if retrying(lambda: self._finished(h), what="checking the finished configs"):
                return False
            with contextlib.suppress(Exception):  # only needed once the server is away; the last count stands
                self._count_peers()
            return retrying(lambda: self.ledger.claim(h, self.hardware, self.parent, self._alive),
                            what="claiming a config")
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return self._mine_offline(h)

    def settle(self, cfg: Any) -> str:
        """In the final pass: ``"measure"`` (claimed now), ``"wait"`` (a live holder) or ``"done"``."""
        from mlflow_energy.tracking.retry import retrying

        h = cfg.config_hash()
        if self.ledger is None or retrying(lambda: self._finished(h), what="checking the finished configs"):
            return "done"
        holder = retrying(lambda: self.ledger.holder(h, self.hardware), what="reading the claims")
        if holder is not None and holder != self.parent:
            from mlflow_energy.tracking.runs import client

            status = retrying(lambda: client().get_run(holder).info.status, what="reading a claim's holder")
            if status == "FINISHED":
                return "done"  # its worker ended normally: the config failed there, or waits in its journal
        if retrying(lambda: self.ledger.claim(h, self.hardware, self.parent, self._alive), what="claiming a config"):
            return "measure"
        return "wait"

    def _finished(self, config_hash: str) -> bool:
        from mlflow_energy.tracking.read import _search

        filt = (f"tags.`{schema.T_CONFIG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED' and "
                f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}'")
        return any(r.data.tags.get(schema.T_HARDWARE) == self.hardware for r in _search([self.tracker.exp_id], filt))

    def fenced(self) -> bool:
        """True when another worker ended this sweep's run (it was stale): stop measuring."""
        if self.fence is not None:
            return True
        if not self.online:
            return False
        from mlflow_energy.tracking.runs import client

        try:
            run = client().get_run(self.parent)
        except Exception:
            return False
        if run.info.status == "RUNNING":
            return False
        self.fence = run.data.tags.get(schema.T_FAILURE, f"the sweep run was ended {run.info.status}")
        self.echo(f"fenced: this worker's sweep run {self.parent} was ended by another worker ({self.fence}); "
                  "its claims are taken over, so it stops without logging more")
        return True

    def record(self, m: Any) -> str | None:
        """Journal ``m`` (fsync), then log it; on a dead server keep it in the journal and return None.

        A fenced worker logs nothing (its config was taken over). A journal that cannot be written
        (disk full, read-only) is said once; the measurement still goes to MLflow.
        """
        from mlflow_energy.tracking.journal import JournalUnwritable
        from mlflow_energy.tracking.retry import ArtifactStoreError, TrackingUnavailable, retrying

        if self.fenced():
            return None
        exp_name = self.tracker.exp_name
        try:
            record = self.journal.append(m, experiment=exp_name, parent_run_id=self.parent)
        except JournalUnwritable as exc:
            from mlflow_energy.tracking.journal import tracking_digest
            from mlflow_energy.tracking.jsonl import to_record

            self._warn("journal", f"{exc}; logging straight to MLflow (kept in memory until logged)")
            record = {**to_record(m), "experiment": exp_name, "parent_run_id": self.parent,
                      "tracking": tracking_digest()}
            self.unjournaled.append(record)
        if not self.online:
            return None
        try:
            run_id = retrying(lambda: self.tracker.log(m), what="logging a measurement")
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return None
        except ArtifactStoreError:
            self.store_full = True  # nothing more is replayed into it; the sweep stops
            raise
        if record in self.unjournaled:
            self.unjournaled.remove(record)
        else:
            self._mark(record)
        return run_id

    def _mark(self, record: dict[str, Any]) -> None:
        from mlflow_energy.tracking.journal import JournalUnwritable

        try:
            self.journal.mark_logged([record])
        except JournalUnwritable as exc:  # the run is in MLflow; a later replay finds it FINISHED
            self._warn("ledger", f"{exc}; the runs are logged, the sweep goes on")

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

    # ------------------------------------------------------------------ offline
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

    def _keep(self, record: dict[str, Any]) -> bool | None:
        """True when this worker holds (or takes) the record's claim; None (wait) while a live one does."""
        if self.ledger is None or record.get("parent_run_id") != self.parent:
            return True
        from mlflow_energy.tracking.jsonl import record_key

        h, hw = record_key(record)
        return True if self.ledger.claim(h, hw, self.parent, self._alive) else None

    def _replay(self) -> None:
        from mlflow_energy.tracking.replay import log_records
        from mlflow_energy.tracking.retry import TrackingUnavailable, retrying

        if not self.online or self.fence or self.store_full:
            return
        try:
            ids: list[str] = []
            if self.journal.pending(this_server=True):
                ids, _ = retrying(lambda: self.journal.replay(this_server=True, keep=self._keep),
                                  what="replaying the journal")
            if self.unjournaled:
                new, _ = retrying(lambda: log_records(list(self.unjournaled), experiment=self.tracker.exp_name),
                                  what="logging the measurements the journal could not take")
                ids += new
                self.unjournaled.clear()
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return
        if self.journal.ledger_error:
            self._warn("ledger", f"{self.journal.ledger_error}; the runs are logged, the sweep goes on")
        self.replayed += len(ids)
        if ids:
            self.echo(f"replayed {len(ids)} measurement(s) from the journal {self.journal.path}")
