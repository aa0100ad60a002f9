"""What keeps a sweep's measurements safe: the journal, bounded retries, stale recovery, claims.

:class:`SweepGuard` wraps the MLflow side of :func:`mlflow_energy.sweep.run.run_sweep`:

- **Journal first.** Each measurement is appended to the local journal (fsync) before it is
  logged. If the server does not answer within the bounded retries, the sweep prints one line
  and goes on measuring into the journal; before each config it checks the server again and
  replays the pending records as soon as it is back (and once more at the end).
- **Claims.** N workers on one spec (no ``--shard`` needed) measure each config once: before
  measuring, a worker claims it in the claims database (:mod:`mlflow_energy.sweep.coordination`:
  a transaction, a lease on the database's clock, a fencing token). The measurement run carries
  the token (tag :data:`~mlflow_energy.schema.T_CLAIM_TOKEN`); a worker whose claim was taken over
  meanwhile tags its run superseded (:data:`~mlflow_energy.schema.T_SUPERSEDED`), so fit and the
  summaries count one run per config. An error while asking the database is "unknown": the config
  is passed and checked again in the final pass, never handed over.
- **Stale runs.** At start and in each round of the final pass, a RUNNING sweep run of the spec and
  hardware whose worker lease ran out (database clock) or whose process is gone (same host) is
  ended KILLED, its claims freed and its lease row removed: on resuming that worker finds itself
  *fenced* (its next claim says so, in the claim's own transaction; before logging, one read of its
  lease row) and stops. No
  worker judges another until its own renewals have reached the database for a whole lease.
  Without a claims database (a remote server and no ``--coordination-uri``) the heartbeat tags
  decide (:func:`mlflow_energy.tracking.stale.recover_stale`) and there are no claims.
- **Offline.** With neither the server nor the claims database answering, a worker measures only
  its share of the live workers (by config hash) into the journal; the rest wait for the final
  pass. A replay claims each offline measurement before logging it.
- **Final pass.** Configs another worker held are checked again at the end: a dead holder's
  are taken over, a live one is waited for.

Example:
    >>> from mlflow_energy.sweep.claims import SweepGuard
    >>> SweepGuard(None, journal=None, hardware="cpu").online
    True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from mlflow_energy import schema
from mlflow_energy.sweep._online import ServerState
from mlflow_energy.sweep.coordination import (
    CoordinationUnavailable,
    Coordinator,
    coordination_url,
    end_dead_workers,
    no_database_line,
    reopen_settled,
)


class SweepGuard(ServerState):
    """The journal, retries, heartbeat, stale recovery, claims and fencing of one sweep (module doc)."""

    def __init__(self, tracker: Any, *, journal: str | os.PathLike[str] | None, hardware: str,
                 echo: Callable[[str], None] = print, claims: bool = True, coordination_uri: str | None = None) -> None:
        from mlflow_energy.tracking.journal import Journal

        self.tracker = tracker
        self.journal = Journal(journal)
        self.hardware = hardware
        self.echo = echo
        self.claims = claims
        self.coordination_uri = coordination_uri
        self.online = True
        self.heartbeat: Any = None
        self.coord: Coordinator | None = None
        self.tokens: dict[str, int] = {}  # config hash -> the fencing token of this worker's claim
        self.next_hash: str | None = None  # the config the sweep claims next: claimed as the last one settles
        self._ahead: tuple[str, Any] | None = None  # (config hash, verdict) claimed with the last settle
        self.unsettled: list[tuple[str, int, str]] = []  # (hash, token, run id) the database could not settle yet
        self.superseded = 0  # runs of this worker whose claim was taken over (tagged superseded)
        self.replayed = 0
        self.fence: str | None = None  # why this worker was fenced (its run ended by another)
        self.peers: tuple[int, int] = (0, 1)  # this worker's share of the live workers, for offline work
        self.unjournaled: list[dict[str, Any]] = []  # records the journal could not take (disk full)
        self.store_full = False
        self.missing: list[Any] = []  # configs the final pass could not settle (the server stayed away)
        self._warned: set[str] = set()
        self._recovered = 0.0
        if tracker is not None:  # on the sweep run from its creation: a kill -9 right after is recognised
            from mlflow_energy.tracking.stale import worker_id

            tracker.extra_tags = {schema.T_WORKER: worker_id(), schema.T_HARDWARE: hardware}

    # ------------------------------------------------------------------ start / finish
    def start(self, parent_run_id: str) -> None:
        import mlflow

        from mlflow_energy.tracking.retry import retrying
        from mlflow_energy.tracking.runs import client
        from mlflow_energy.tracking.stale import Heartbeat, recover_stale

        self.parent = parent_run_id
        exp_id = self.tracker.exp_id
        self.tracker.exp_name = retrying(lambda: client().get_experiment(exp_id).name, what="starting the sweep")
        url = coordination_url(mlflow.get_tracking_uri(), self.coordination_uri) if self.claims else None
        if self.claims and url is None:
            self.echo(no_database_line(mlflow.get_tracking_uri()))
        if url is not None:
            self.coord = Coordinator(url, f"{exp_id}/{self.tracker.spec.name}", self.hardware, parent_run_id)
            self.coord.join()
            self.coord.renew()
            self._share()
            ended = self.safely("ending stale runs", self.recover) or []
        else:
            ended = retrying(lambda: recover_stale(exp_id, spec_name=self.tracker.spec.name, hardware=self.hardware,
                                                   by=parent_run_id), what="ending stale runs")
        if ended:
            self.echo(f"ended {len(ended)} stale RUNNING run(s) of a stopped worker (reason in tag {schema.T_FAILURE})")
        self.heartbeat = Heartbeat(parent_run_id).start()
        if self.coord is not None:
            self.safely("reopening the claims of deleted or failed runs", self._reopen)
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
        if self.coord is not None:
            try:
                self._settle_pending()
                if not self.fence:
                    self.coord.leave()
            except Exception:  # the lease runs out by itself
                pass
            self.coord.close()

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

    # ------------------------------------------------------------------ workers (claims database)
    def recover(self) -> list[str]:
        """End the RUNNING sweep runs of this spec whose worker is dead; free their claims (:func:`end_dead_workers`).

        By lease only once this worker is steady; a process gone from this host at any time.
        """
        if self.coord is None:
            return []
        self._recovered = time.monotonic()
        return end_dead_workers(self.coord, self.tracker.exp_id, self.tracker.spec.name,
                                by_lease=self.coord.steady())

    def _reopen(self) -> None:
        reopen_settled(self.coord, lambda: {h for h, hw in self.tracker.finished_keys() if hw == self.hardware})

    def _share(self) -> None:
        live = self.coord.live if self.coord is not None else []
        if self.parent in live:
            self.peers = (live.index(self.parent), len(live))

    def _mine_offline(self, config_hash: str) -> bool:
        index, count = self.peers
        return int(config_hash, 16) % count == index

    def _verdict(self, config_hash: str) -> Any:
        """The claim's verdict, or None when the database did not answer (unknown: not taken, not lost)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == config_hash:
            v = ahead[1]  # claimed a moment ago, in the transaction that settled the config before
        else:
            try:
                v = self.coord.claim(config_hash, take_expired=self.coord.steady())
            except CoordinationUnavailable as exc:
                self._warn("coordination", f"{exc}; configs are passed and checked again later")
                return None
        if v.state == "mine":
            self.tokens[config_hash] = v.token
        elif v.state == "fenced":
            self.fenced(ask=False)
        return v

    # ------------------------------------------------------------------ per config
    def claim(self, cfg: Any) -> bool:
        """True when this worker should measure ``cfg`` now.

        With a claims database: it holds the claim (the database unreachable: the config is in this
        worker's share of the live workers). Without: always (static shards split the work).
        """
        h = cfg.config_hash()
        if not self.online:
            self._probe()
        if self.fenced(ask=self.coord is None):  # with claims, the claim's transaction checks the lease
            return False
        if self.coord is None:
            return True
        self._share()
        v = self._verdict(h)
        if v is None:
            return self._mine_offline(h)
        if v.state == "mine" and v.token > 1 and time.monotonic() - self._recovered > self.coord.lease_s:
            self.round()  # taken over from a worker whose lease ran out: end (fence) its run
        return v.state == "mine"

    def settle(self, cfg: Any) -> str:
        """In the final pass: ``"measure"`` (claimed now), ``"wait"`` (a live holder, or unknown) or ``"done"``."""
        if self.coord is None:
            return "done"
        h = cfg.config_hash()
        v = self._verdict(h)
        if v is None:
            return "wait"
        return {"mine": "measure", "held": "wait"}.get(v.state, "done")

    def round(self) -> None:
        """Between rounds of the final pass: settle what the database missed, end dead workers."""
        if self.coord is not None:
            self._settle_pending()
            ended = self.safely("ending stale runs", self.recover) if self.online else None
            if ended:
                self.echo(f"ended {len(ended)} stale RUNNING run(s) of a stopped worker; its claims are taken over")

    def fenced(self, ask: bool = True) -> bool:
        """True when another worker ended this sweep's run (it was stale): stop measuring.

        With a claims database, this worker's lease row there decides (the worker that ends another removes
        it; one read, or none with ``ask=False``: a claim checks it in its own transaction); without one, or
        while it does not answer, the sweep run's status in MLflow.
        """
        if self.fence is not None:
            return True
        if self.coord is not None and not self.coord.dropped and ask:
            try:
                self.coord.alive()
                ask = False
            except CoordinationUnavailable:
                pass  # unknown: the sweep run's status decides
        if self.coord is not None and self.coord.dropped:
            self.fence = "its lease in the claims database was ended by another worker"
        elif not ask or not self.online:
            return False
        else:
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

    def failed(self, cfg: Any) -> None:
        """A config failed here: its claim is settled ``failed`` (not measured again in this sweep)."""
        h = cfg.config_hash()
        token = self.tokens.pop(h, None)
        if self.coord is not None and token is not None:
            try:
                self.coord.finish(h, token, "failed")
            except CoordinationUnavailable:
                pass  # the lease runs out; another worker tries the config

    def _settle(self, h: str, run_id: str, tagged: bool = False, ahead: str | None = None) -> None:
        """Tag ``run_id`` with its claim's token (unless it was ``tagged`` when logged); tag it superseded
        when the token is no longer current. ``ahead``: the config to claim in the same transaction."""
        token = self.tokens.pop(h, None)
        if self.coord is None or token is None:
            return
        from mlflow_energy.tracking.runs import client

        if not tagged:
            self.safely("tagging the claim's token", lambda: client().set_tag(run_id, schema.T_CLAIM_TOKEN, str(token)))
        try:
            if ahead is not None and ahead != h:
                current, verdict = self.coord.finish_and_claim(h, token, ahead, take_expired=self.coord.steady())
                self._ahead = (ahead, verdict)
            else:
                current = self.coord.finish(h, token)
        except CoordinationUnavailable:
            self.unsettled.append((h, token, run_id))
            return
        if not current:
            self.superseded += 1
            self.safely("tagging a superseded run", lambda: client().set_tag(run_id, schema.T_SUPERSEDED, "true"))
            rows = getattr(self.tracker, "rows", [])
            rows[:] = [r for r in rows if r.get("run_id") != run_id]
            self.echo(f"superseded: config {h} was taken over by another worker meanwhile; run {run_id} tagged "
                      f"{schema.T_SUPERSEDED} (the other's counts)")

    def _settle_pending(self) -> None:
        todo, self.unsettled = list(self.unsettled), []
        for h, token, run_id in todo:
            self.tokens[h] = token
            self._settle(h, run_id)

    def record(self, m: Any) -> str | None:
        """Journal ``m`` (fsync), then log it; on a dead server keep it in the journal and return None.

        A fenced worker logs nothing (its config was taken over). A journal that cannot be written
        (disk full, read-only) is said once; the measurement still goes to MLflow.
        """
        from mlflow_energy.tracking.journal import JournalUnwritable
        from mlflow_energy.tracking.retry import ArtifactStoreError, TrackingUnavailable, retrying

        if self.fenced():
            return None
        h = m.config.config_hash()
        if h in self.tokens:  # the claim's token goes with the run (and its journal record): no tag call after
            m.extra_tags = {**m.extra_tags, schema.T_CLAIM_TOKEN: str(self.tokens[h])}
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
        ahead, self.next_hash = self.next_hash, None
        self._settle(h, run_id, tagged=h in self.tokens, ahead=ahead)
        return run_id

    def _keep(self, record: dict[str, Any]) -> bool | None:
        """True: log the record (its claim is this worker's, taken now, or failed elsewhere); False: measured
        and settled by another worker (not logged); None: wait (a live holder, or the database is away).

        A record another live worker journaled into a shared journal is left to it: it logs it and settles
        its claim (logged here, the claim stayed held by its owner, and the workers waited for each other)."""
        from mlflow_energy.tracking.jsonl import record_key

        h, hw = record_key(record)
        if self.coord is None or hw != self.hardware or record.get("experiment") not in (None, self.tracker.exp_name):
            return True
        v = self._verdict(h)
        if v is None or v.state in ("held", "fenced"):
            return None
        return v.state != "done"

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
        for rid in ids if self.coord is not None else ():
            from mlflow_energy.tracking.runs import client

            tags = self.safely("reading a replayed run", lambda rid=rid: client().get_run(rid).data.tags) or {}
            if tags.get(schema.T_CONFIG_HASH) in self.tokens:
                self._settle(tags[schema.T_CONFIG_HASH], rid)
        if ids:
            self.echo(f"replayed {len(ids)} measurement(s) from the journal {self.journal.path}")
