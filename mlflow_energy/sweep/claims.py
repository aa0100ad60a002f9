"""What keeps a sweep's measurements safe: the journal, bounded retries, stale recovery, claims.

:class:`SweepGuard` wraps the MLflow side of :func:`mlflow_energy.sweep.run.run_sweep`:

- **Journal first.** Each measurement is appended to the local journal (fsync) before it is
  logged. If the server does not answer within the bounded retries, the sweep prints one line
  and goes on measuring into the journal; before each config it checks the server again and
  replays the pending records as soon as it is back (and once more at the end).
- **Stale runs.** At start, RUNNING runs of the same spec and hardware whose heartbeat is old
  (a killed worker) are ended KILLED with the reason, and their children without metrics are
  removed (:func:`mlflow_energy.tracking.stale.recover_stale`); the sweep's own run beats.
- **Claims.** N workers on one spec (no ``--shard`` needed) measure each config once: before
  measuring, a worker logs the param ``claim/<hash>/<hw>/<attempt>`` = its sweep run id on the
  spec's *claims ledger* run. MLflow params are immutable (a primary key in the database), so
  exactly one worker's value is stored; the others see a different owner and skip the config.
  A claim whose owner is no longer RUNNING (killed) is taken over with the next attempt number.

Example:
    >>> from mlflow_energy.sweep.claims import ClaimLedger
    >>> ClaimLedger.__name__
    'ClaimLedger'
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from mlflow_energy import schema

#: Seconds a new claims ledger waits before checking for a twin made by a worker started together.
LEDGER_SETTLE_S = 1.0


def _is_param_conflict(exc: BaseException) -> bool:
    return "Changing param values is not allowed" in str(exc) or "already logged" in str(exc)


class ClaimLedger:
    """The run of a spec whose immutable params say which worker measures which config."""

    def __init__(self, exp_id: str, spec_name: str) -> None:
        self.exp_id = exp_id
        self.spec_name = spec_name
        self.run_id = self._find_or_create()

    def _ledgers(self) -> list[Any]:
        from mlflow_energy.tracking.read import _search

        filt = (f"tags.`{schema.T_KIND}` = '{schema.KIND_CLAIMS}' and "
                f"tags.`{schema.T_SWEEP_SPEC}` = '{self.spec_name.replace(chr(39), '')}'")
        return sorted(_search([self.exp_id], filt), key=lambda r: (r.info.start_time, r.info.run_id))

    def _find_or_create(self) -> str:
        from mlflow_energy.tracking.runs import client

        found = self._ledgers()
        if found:
            if found[0].info.status == "RUNNING":  # its creator was killed before ending it
                client().set_terminated(found[0].info.run_id, "FINISHED")
            return found[0].info.run_id
        c = client()
        own = c.create_run(self.exp_id, run_name=f"claims-{self.spec_name}", tags={
            schema.T_KIND: schema.KIND_CLAIMS, schema.T_SWEEP_SPEC: self.spec_name}).info.run_id
        c.set_terminated(own, "FINISHED")  # a ledger is never RUNNING; params can still be logged
        time.sleep(LEDGER_SETTLE_S)
        first = self._ledgers()[0].info.run_id
        if first != own:
            c.delete_run(own)  # a worker started together made one first: use it
        return first

    def claim(self, config_hash: str, hardware: str, owner: str, alive: Callable[[str], bool]) -> bool:
        """True when ``owner`` holds the claim on this config (now or from before)."""
        from mlflow_energy.tracking.runs import client

        c = client()
        params = c.get_run(self.run_id).data.params
        attempt = 0
        while True:
            key = schema.claim_param(config_hash, hardware, attempt)
            holder = params.get(key)
            if holder is None:
                try:
                    c.log_param(self.run_id, key, owner)
                    return True
                except Exception as exc:
                    if not _is_param_conflict(exc):
                        raise
                    holder = c.get_run(self.run_id).data.params.get(key)
            if holder == owner:
                return True
            if holder is not None and alive(holder):
                return False
            attempt += 1  # the holder died: take over with the next attempt


class SweepGuard:
    """The journal, retries, heartbeat, stale recovery and claims of one sweep (module doc)."""

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
        if tracker is not None:  # on the sweep run from its creation: a kill -9 right after is recognised
            from mlflow_energy.tracking.stale import worker_id

            tracker.extra_tags = {schema.T_WORKER: worker_id(), schema.T_HARDWARE: hardware}

    # ------------------------------------------------------------------ start / finish
    def start(self, parent_run_id: str) -> None:
        from mlflow_energy.tracking.runs import client
        from mlflow_energy.tracking.stale import Heartbeat, recover_stale

        self.parent = parent_run_id
        exp_id = self.tracker.exp_id
        c = client()
        self.tracker.exp_name = c.get_experiment(exp_id).name
        ended = recover_stale(exp_id, spec_name=self.tracker.spec.name, hardware=self.hardware, by=parent_run_id)
        if ended:
            self.echo(f"ended {len(ended)} stale RUNNING run(s) of a stopped worker (reason in tag {schema.T_FAILURE})")
        self.heartbeat = Heartbeat(parent_run_id).start()
        if self.claims:
            # the ledger lives in a sibling experiment, so it is never a row among the results
            from mlflow_energy.tracking.runs import experiment_id

            ledger_exp = experiment_id(self.tracker.exp_name + schema.CLAIMS_EXPERIMENT_SUFFIX)
            self.ledger = ClaimLedger(ledger_exp, self.tracker.spec.name)
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
            self._probe()
        self._replay()
        if self.online:
            from mlflow_energy.tracking.stale import end_orphans

            self.safely("ending cut-short runs", lambda: end_orphans(self.tracker.exp_id, self.parent))
        if not self.online:
            n = len(self.journal.pending(this_server=True))
            self.echo(f"{n} measurement(s) wait in the journal {self.journal.path}: "
                      f"run `mlflow-energy ingest {self.journal.path}` when the tracking server is back")

    # ------------------------------------------------------------------ per config
    def _alive(self, run_id: str) -> bool:
        from mlflow_energy.tracking.runs import client
        from mlflow_energy.tracking.stale import is_stale

        try:
            run = client().get_run(run_id)
        except Exception:
            return False
        if run.info.status != "RUNNING":
            return False
        return not is_stale(run.data.tags, start_time_ms=run.info.start_time)

    def claim(self, cfg: Any) -> bool:
        """True when this worker should measure ``cfg`` (it holds the claim, or works offline)."""
        from mlflow_energy.tracking.retry import TrackingUnavailable, retrying

        if not self.online:
            self._probe()
        if self.ledger is None or not self.online:
            return True
        h = cfg.config_hash()
        try:
            if self._finished(h):
                return False
            return retrying(lambda: self.ledger.claim(h, self.hardware, self.parent, self._alive),
                            what="claiming a config")
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return True

    def _finished(self, config_hash: str) -> bool:
        from mlflow_energy.tracking.read import _search

        filt = (f"tags.`{schema.T_CONFIG_HASH}` = '{config_hash}' and attributes.status = 'FINISHED' and "
                f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}'")
        return any(r.data.tags.get(schema.T_HARDWARE) == self.hardware for r in _search([self.tracker.exp_id], filt))

    def record(self, m: Any) -> str | None:
        """Journal ``m`` (fsync), then log it; on a dead server keep it in the journal and return None."""
        from mlflow_energy.tracking.jsonl import record_key
        from mlflow_energy.tracking.retry import TrackingUnavailable, retrying

        exp_name = self.tracker.exp_name
        record = self.journal.append(m, experiment=exp_name, parent_run_id=self.parent)
        if not self.online:
            return None
        try:
            run_id = retrying(lambda: self.tracker.log(m), what="logging a measurement")
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return None
        self.journal.mark_logged([record_key(record)])
        return run_id

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

    def _replay(self) -> None:
        from mlflow_energy.tracking.retry import TrackingUnavailable, retrying

        if not self.online or not self.journal.pending(this_server=True):
            return
        try:
            ids, _ = retrying(lambda: self.journal.replay(this_server=True), what="replaying the journal")
        except TrackingUnavailable as exc:
            self._go_offline(exc)
            return
        self.replayed += len(ids)
        if ids:
            self.echo(f"replayed {len(ids)} measurement(s) from the journal {self.journal.path}")
