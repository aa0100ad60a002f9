"""Claims and stale runs on a real SQLite store: one owner per config, dead owners taken over."""

from __future__ import annotations

import time

from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.sweep.ledger import ClaimLedger
from mlflow_energy.tracking.stale import recover_stale


def test_one_owner_per_config_and_a_dead_owner_is_taken_over(tracking_uri):
    c = MlflowClient()
    exp = c.create_experiment("claims")
    a, b = ClaimLedger(exp, "spec"), ClaimLedger(exp, "spec")
    assert a.run_id == b.run_id  # one ledger per spec
    assert c.get_run(a.run_id).info.status == "FINISHED"
    alive = {"A", "B"}
    assert a.claim("h1", "gpu", "A", alive.__contains__) is True
    assert b.claim("h1", "gpu", "B", alive.__contains__) is False  # A holds it
    assert a.claim("h1", "gpu", "A", alive.__contains__) is True  # idempotent for its owner
    assert b.claim("h1", "other-gpu", "B", alive.__contains__) is True  # other hardware, other config
    alive.discard("A")
    assert b.claim("h1", "gpu", "B", alive.__contains__) is True  # A died: attempt 1 goes to B
    params = c.get_run(a.run_id).data.params
    assert params[schema.claim_param("h1", "gpu", 0)] == "A" and params[schema.claim_param("h1", "gpu", 1)] == "B"


def test_stale_sweep_of_another_host_is_ended_with_the_reason(tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENERGY_HEARTBEAT_S", "1")
    c = MlflowClient()
    exp = c.create_experiment("stale")
    tags = {schema.T_KIND: schema.KIND_SWEEP, schema.T_SWEEP_SPEC: "s", schema.T_HARDWARE: "gpu",
            schema.T_WORKER: "another-host:4242"}
    old = c.create_run(exp, tags={**tags, schema.T_HEARTBEAT: f"{time.time() - 60:.0f}"}).info.run_id
    fresh = c.create_run(exp, tags={**tags, schema.T_HEARTBEAT: f"{time.time() + 60:.0f}"}).info.run_id
    other_hw = c.create_run(exp, tags={**tags, schema.T_HARDWARE: "cpu",
                                       schema.T_HEARTBEAT: f"{time.time() - 60:.0f}"}).info.run_id
    orphan = c.create_run(exp, tags={schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_PARENT_RUN_ID: old}).info.run_id
    logged = c.create_run(exp, tags={schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_PARENT_RUN_ID: old}).info.run_id
    c.log_metric(logged, "energy/total_j", 1.0)
    ended = recover_stale(exp, spec_name="s", hardware="gpu")
    assert set(ended) == {old, orphan, logged}
    assert c.get_run(old).info.status == "KILLED" and "no heartbeat" in c.get_run(old).data.tags[schema.T_FAILURE]
    assert c.get_run(fresh).info.status == "RUNNING" and c.get_run(other_hw).info.status == "RUNNING"
    assert c.get_run(orphan).info.lifecycle_stage == "deleted"  # no metrics: removed
    assert c.get_run(logged).info.status == "FAILED" and c.get_run(logged).info.lifecycle_stage == "active"


def test_right_after_an_outage_no_worker_is_judged_stale(tracking_uri, monkeypatch):
    """Every heartbeat is old when the server comes back: a worker whose own beats have not yet
    reached the server for 3 periods counts a stale-looking holder as live, and fences it after."""
    from mlflow_energy.sweep.claims import SweepGuard
    from mlflow_energy.tracking.stale import Heartbeat

    monkeypatch.setenv("MLFLOW_ENERGY_HEARTBEAT_S", "0.2")
    c = MlflowClient()
    exp = c.create_experiment("outage")
    tags = {schema.T_KIND: schema.KIND_SWEEP, schema.T_WORKER: "another-host:1"}
    holder = c.create_run(exp, tags={**tags, schema.T_HEARTBEAT: f"{time.time() - 60:.0f}"}).info.run_id
    me = c.create_run(exp, tags=tags).info.run_id
    guard = SweepGuard(None, journal=None, hardware="cpu")
    guard.parent, guard.heartbeat = me, Heartbeat(me)
    guard.heartbeat.beat()  # the first beat after the outage
    assert not guard.heartbeat.steady()
    assert guard._alive(holder) is True  # cannot tell yet
    assert c.get_run(holder).info.status == "RUNNING"
    time.sleep(0.7)
    guard.heartbeat.beat()
    assert guard.heartbeat.steady()
    assert guard._alive(holder) is False  # 3 periods of own beats: the holder is stale, fenced
    assert c.get_run(holder).info.status == "KILLED"


def test_a_beat_that_fails_makes_the_worker_unsteady(tracking_uri, monkeypatch):
    from mlflow_energy.tracking import runs
    from mlflow_energy.tracking.stale import Heartbeat

    monkeypatch.setenv("MLFLOW_ENERGY_HEARTBEAT_S", "0.1")
    me = MlflowClient().create_run(MlflowClient().create_experiment("beats")).info.run_id
    beat = Heartbeat(me)
    beat.beat()
    time.sleep(0.35)
    beat.beat()
    assert beat.steady()

    class Away:
        def set_tag(self, *a, **k):
            raise ConnectionError("server away")

    monkeypatch.setattr(runs, "client", lambda: Away())
    beat.beat()
    assert not beat.steady() and beat.ok_since is None


def test_a_spec_name_with_quotes_finds_its_one_ledger(tracking_uri):
    """MLflow filters cannot escape quotes: a spec named it's (or with both quote kinds) still
    finds the ledger it made, not a new one per worker."""
    exp = MlflowClient().create_experiment("quoted")
    for name in ("it's", "say \"it's\"", "a_b"):
        first = ClaimLedger(exp, name).run_id
        assert ClaimLedger(exp, name).run_id == first, name
    assert ClaimLedger(exp, "a%b").run_id != ClaimLedger(exp, "a_b").run_id  # a LIKE wildcard is not a match
