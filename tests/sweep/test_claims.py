"""Claims in a database with transactions (SQLite here, PostgreSQL when the CI provides one).

One holder per config; an expired lease (on the database's clock) taken with the next fencing
token; the loser's result settles as superseded; an unreachable database is "unknown", not "dead".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.sweep.coordination import CLAIMS_TABLE, CoordinationUnavailable, Coordinator, coordination_url

sys.path.insert(0, str(Path(__file__).parents[1]))
from services import fresh_postgres_db  # noqa: E402


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/claims.db"
    url = fresh_postgres_db()
    if url is None:
        pytest.skip("needs PostgreSQL ($MLFLOW_ENERGY_TEST_POSTGRES; .ci/run starts one)")
    return url


def _expire(coord: Coordinator, lease_s: float) -> None:
    """Wait until a lease of ``lease_s`` taken now has run out on the database's clock."""
    end = coord.now() + lease_s
    while coord.now() <= end:
        time.sleep(0.1)


def test_one_holder_per_config_and_an_expired_claim_goes_to_the_next_token(db_url):
    a = Coordinator(db_url, "1/spec", "gpu", "run-a", lease_s=0.5)
    b = Coordinator(db_url, "1/spec", "gpu", "run-b", lease_s=0.5)
    assert a.claim("h1").state == "mine" and a.claim("h1").token == 1  # idempotent for its holder
    assert b.claim("h1").state == "held"
    assert b.claim("h1", take_expired=False).state == "held"
    assert b.claim("h1").state == "held"  # a's lease still runs
    assert Coordinator(db_url, "1/spec", "other-gpu", "run-b").claim("h1").state == "mine"  # other hardware
    assert Coordinator(db_url, "2/spec", "gpu", "run-b").claim("h1").state == "mine"  # other spec
    _expire(a, 0.5)
    assert b.claim("h1", take_expired=False).state == "held"  # b is not steady yet: it judges nobody
    taken = b.claim("h1")
    assert (taken.state, taken.token) == ("mine", 2)  # the next fencing token
    assert a.finish("h1", 1) is False  # a's token is stale: its result is superseded
    assert b.finish("h1", 2) is True
    assert a.claim("h1").state == "done"


def test_renewed_claims_are_never_taken_and_a_dead_workers_claims_are_freed(db_url):
    a = Coordinator(db_url, "1/spec", "gpu", "run-a", lease_s=0.6)
    b = Coordinator(db_url, "1/spec", "gpu", "run-b", lease_s=0.6)
    a.join()
    assert a.claim("h1").state == "mine"
    for _ in range(4):  # well past one lease, renewed
        time.sleep(0.3)
        a.renew()
        assert b.claim("h1").state == "held"
    now, leases = b.workers()
    assert leases["run-a"] > now
    b.release_worker("run-a")  # found dead: its claims are free, its lease row gone
    assert b.claim("h1").state == "mine" and b.claim("h1").token == 2
    a.renew()
    assert a.dropped  # a learns it was ended
    a.close()
    b.close()


def test_the_lease_is_measured_on_the_database_clock(db_url, monkeypatch):
    """A worker whose clock runs 300 s ahead neither expires others' leases nor gets its own expired."""
    a = Coordinator(db_url, "1/spec", "gpu", "run-a", lease_s=30)
    assert a.claim("h1").state == "mine"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 300)
    ahead = Coordinator(db_url, "1/spec", "gpu", "run-ahead", lease_s=30)
    assert ahead.claim("h1").state == "held"
    assert ahead.claim("h2").state == "mine"
    monkeypatch.setattr(time, "time", lambda: real() - 300)
    assert a.claim("h2").state == "held"


def test_an_unreachable_database_is_unknown_never_dead(tmp_path, tracking_uri):
    """The claims database away: the claim is passed (checked again later), never handed over."""
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.sweep.claims import SweepGuard

    url = f"sqlite:///{tmp_path}/claims.db"
    holder = Coordinator(url, "1/spec", "cpu", "run-a", lease_s=60)
    cfg = InferenceConfig(model="tiny-sd2", steps=1)
    assert holder.claim(cfg.config_hash()).state == "mine"
    guard = SweepGuard(None, journal=tmp_path / "j.jsonl", hardware="cpu")
    guard.parent = "run-b"
    guard.coord = Coordinator(url, "1/spec", "cpu", "run-b", lease_s=60)
    guard.coord.ok_since, guard.coord.last_ok = -1e9, time.monotonic()  # steady: it may judge others
    (tmp_path / "claims.db").rename(tmp_path / "away.db")
    (tmp_path / "claims.db").mkdir()  # the file is now a directory: every statement fails
    guard.coord.engine.dispose()
    with pytest.raises(CoordinationUnavailable, match="claims database unavailable"):
        guard.coord.claim(cfg.config_hash())
    guard.peers = (1, 2)
    mine = int(cfg.config_hash(), 16) % 2 == 1
    assert guard.claim(cfg) is mine  # its share of the live workers, as when the server is away
    assert guard.settle(cfg) == "wait"  # unknown: wait, never "measure" (no take-over)
    (tmp_path / "claims.db").rmdir()
    (tmp_path / "away.db").rename(tmp_path / "claims.db")
    guard.coord.engine.dispose()
    assert guard.settle(cfg) == "wait"  # back: run-a's lease still runs, it keeps the config


def test_the_tables_live_beside_mlflows_and_never_collide(tracking_uri):
    import sqlalchemy

    assert coordination_url(tracking_uri) == tracking_uri
    assert coordination_url("http://127.0.0.1:5000") is None
    assert coordination_url("http://127.0.0.1:5000", "postgresql://u@h/db") == "postgresql://u@h/db"
    Coordinator(tracking_uri, "1/spec", "cpu", "run-a").claim("h1")
    names = set(sqlalchemy.inspect(sqlalchemy.create_engine(tracking_uri)).get_table_names())
    assert CLAIMS_TABLE in names and "runs" in names and "experiments" in names
    assert MlflowClient().search_experiments()  # MLflow still opens its store


def test_a_coordination_uri_that_is_not_a_database_is_one_line():
    from mlflow_energy.errors import ConfigError

    with pytest.raises(ConfigError, match="coordination_uri"):
        coordination_url("http://127.0.0.1:5000", "http://127.0.0.1:5000")


def test_a_superseded_run_is_tagged_and_left_out_of_the_reader(tracking_uri):
    """Two FINISHED runs of one config: the superseded one (or the older token) is left out, and counted."""
    from mlflow_energy.tracking.read import load_runs

    c = MlflowClient()
    exp = c.create_experiment("fenced")
    base = {schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_CONFIG_HASH: "h1", schema.T_HARDWARE: "cpu"}
    for tags in ({schema.T_CLAIM_TOKEN: "1", schema.T_SUPERSEDED: "true"}, {schema.T_CLAIM_TOKEN: "2"},
                 {schema.T_CLAIM_TOKEN: "1"}, {}):
        run = c.create_run(exp, tags={**base, **tags}).info.run_id
        c.log_metric(run, "energy/total_j", 1.0)
        c.set_terminated(run, "FINISHED")
    other = c.create_run(exp, tags={**base, schema.T_CONFIG_HASH: "h2"}).info.run_id
    c.set_terminated(other, "FINISHED")
    df = load_runs("fenced")
    # h1: the token-2 run counts; the superseded one and the older token are left out; one without a token stays
    assert sorted(df["config_hash"]) == ["h1", "h1", "h2"]
    assert sorted(df["claim_token"].fillna("-")) == ["-", "-", "2"]
    assert df.attrs["superseded"] == 2


def test_a_worker_whose_claim_was_taken_tags_its_run_superseded(tracking_uri):
    """The worker logs after its lease ran out and another took the config: its run carries its token,
    is tagged superseded and leaves the sweep's summary rows; the taker's run is the one that counts."""
    from types import SimpleNamespace

    from mlflow_energy.sweep.claims import SweepGuard
    from mlflow_energy.tracking.read import load_runs

    c = MlflowClient()
    exp = c.create_experiment("taken")
    runs = []
    for _ in range(2):
        run = c.create_run(exp, tags={schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_CONFIG_HASH: "h1",
                                      schema.T_HARDWARE: "cpu"}).info.run_id
        c.set_terminated(run, "FINISHED")
        runs.append(run)
    late, taker = runs
    guard = SweepGuard(None, journal=None, hardware="cpu", echo=lambda line: None)
    guard.tracker = SimpleNamespace(rows=[{"run_id": late}, {"run_id": "other"}])
    guard.coord = Coordinator(tracking_uri, f"{exp}/spec", "cpu", "run-a", lease_s=0.3)
    guard.tokens["h1"] = guard.coord.claim("h1").token
    b = Coordinator(tracking_uri, f"{exp}/spec", "cpu", "run-b", lease_s=0.3)
    _expire(b, 0.3)
    assert b.claim("h1").token == 2
    guard._settle("h1", late)
    b.finish("h1", 2)
    c.set_tag(taker, schema.T_CLAIM_TOKEN, "2")
    tags = c.get_run(late).data.tags
    assert tags[schema.T_CLAIM_TOKEN] == "1" and tags[schema.T_SUPERSEDED] == "true"
    assert guard.superseded == 1 and guard.tracker.rows == [{"run_id": "other"}]
    df = load_runs("taken")
    assert list(df["run_id"]) == [taker] and df.attrs["superseded"] == 1


def test_a_coordination_uri_that_is_not_a_database_stops_the_sweep_before_it_starts(tracking_uri, tmp_path):
    from click.testing import CliRunner

    from mlflow_energy.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nrepeats: 1\nwarmup: 0\ngrid: {model: [tiny-sd2], resolution: [32], steps: [1]}\n")
    out = CliRunner().invoke(main, ["sweep", str(spec), "--coordination-uri", "http://127.0.0.1:5000"])
    assert out.exit_code == 2 and "coordination_uri" in out.output and "Traceback" not in out.output
    exp = MlflowClient().get_experiment_by_name("mlflow-energy")
    assert exp is None or not MlflowClient().search_runs([exp.experiment_id])  # no sweep run left behind


def test_a_worker_ended_by_another_is_fenced_by_its_next_claim_in_the_same_transaction(db_url):
    """The worker that ends another as dead removes its lease row: the ended worker's next claim says
    ``fenced`` (checked in the claim's own transaction, before its next renewal) and takes nothing."""
    a = Coordinator(db_url, "1/spec", "gpu", "run-a", lease_s=30.0)
    b = Coordinator(db_url, "1/spec", "gpu", "run-b", lease_s=30.0)
    a.join()
    assert a.claim("h1").state == "mine" and a.alive()
    b.release_worker("run-a")
    verdict = a.claim("h2")
    assert verdict.state == "fenced" and a.dropped and not a.alive()
    assert b.claim("h2").state == "mine" and b.claim("h1").token == 2  # a took nothing; its h1 was freed
    a.close()
    b.close()
