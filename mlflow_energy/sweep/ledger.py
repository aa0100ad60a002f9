"""The claims ledger: one run per sweep spec whose immutable params say which worker measures what.

Before measuring a config, a worker logs the param ``claim/<hash>/<hw>/<attempt>`` = its sweep
run id on the ledger run (in the sibling experiment ``<experiment>-sweep-claims``, never a result
row). MLflow refuses to change a param's value, so exactly one worker's value is stored; the
others read it and skip the config. A claim whose holder is dead is taken over with the next
attempt number (the caller says who is alive: :class:`~mlflow_energy.sweep.claims.SweepGuard`).

Example (a throw-away SQLite store):
    >>> import tempfile, mlflow
    >>> mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    >>> exp = mlflow.create_experiment("demo-sweep-claims")
    >>> ledger = ClaimLedger(exp, "demo")
    >>> ledger.claim("ab12", "cpu", "run-a", alive=lambda run_id: True)
    True
    >>> ledger.claim("ab12", "cpu", "run-b", alive=lambda run_id: True), ledger.holder("ab12", "cpu")
    (False, 'run-a')
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlflow_energy import schema

__all__ = ["LEDGER_SETTLE_S", "ClaimLedger"]

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
        from mlflow_energy.tracking.filters import exact, tag_equals
        from mlflow_energy.tracking.read import _search

        filt = f"tags.`{schema.T_KIND}` = '{schema.KIND_CLAIMS}' and {tag_equals(schema.T_SWEEP_SPEC, self.spec_name)}"
        found = exact(_search([self.exp_id], filt), schema.T_SWEEP_SPEC, self.spec_name)
        return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))

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

    def holder(self, config_hash: str, hardware: str) -> str | None:
        """The sweep run id holding the latest claim on this config, or None."""
        from mlflow_energy.tracking.runs import client

        params = client().get_run(self.run_id).data.params
        attempt, owner = 0, None
        while schema.claim_param(config_hash, hardware, attempt) in params:
            owner = params[schema.claim_param(config_hash, hardware, attempt)]
            attempt += 1
        return owner
