"""What a measurement run costs the tracking store: its tags with its creation, one ``log_batch``, its
artifacts written into its artifact repository straight from the run's artifact URI (no ``get_run``
to find it), its end; and a sweep's summary built from what the sweep holds, not a search of its
children. Counted on the real SQLite store's methods, the run's content checked alongside."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlflow_energy import schema
from mlflow_energy.measure.runner import measure
from mlflow_energy.sweep import SweepSpec, run_sweep
from mlflow_energy.tracking import log_measurement
from mlflow_energy.tracking.ui import rounded

SPEC = {
    "name": "calls", "device": "cpu", "repeats": 1, "warmup": 0, "protocol": {"target": 0}, "idle_seconds": 0.1,
    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1, 2, 3], "guidance_scale": [1.0]},
}


@pytest.fixture
def store_calls(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The store's run calls by run id (``created``: the tags each run was created with; ``searches``:
    the filters of ``search_runs``), counted around the real methods."""
    seen: dict = {"calls": Counter(), "created": {}, "searches": []}
    create_run, search_runs = SqlAlchemyStore.create_run, SqlAlchemyStore.search_runs

    def counting_create_run(self, experiment_id, user_id, start_time, tags, run_name):
        run = create_run(self, experiment_id, user_id, start_time, tags, run_name)
        seen["calls"]["create_run", run.info.run_id] += 1
        seen["created"][run.info.run_id] = {t.key: t.value for t in tags}
        return run

    def counting_search_runs(self, experiment_ids, filter_string, *args, **kwargs):
        seen["searches"].append(filter_string or "")
        return search_runs(self, experiment_ids, filter_string, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "create_run", counting_create_run)
    monkeypatch.setattr(SqlAlchemyStore, "search_runs", counting_search_runs)
    for name in ("get_run", "log_batch", "set_tag", "update_run_info"):
        method = getattr(SqlAlchemyStore, name)
        monkeypatch.setattr(SqlAlchemyStore, name, lambda self, run_id, *a, _m=method, _n=name, **k: (
            seen["calls"].update([(_n, run_id)]) or _m(self, run_id, *a, **k)))
    return seen


def _per_run(calls: Counter, run_id: str) -> dict[str, int]:
    return {name: calls[name, run_id] for name in ("create_run", "log_batch", "get_run", "set_tag", "update_run_info")}


def _check_content(client: MlflowClient, run_id: str, config_hash: str) -> None:
    """Every key of the run schema, the display metrics, and config.json as ``log_dict`` writes it."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert set(schema.RUN_PARAMS) <= set(run.data.params)
    assert set(schema.RUN_METRICS) <= set(run.data.metrics)
    assert set(schema.RUN_TAGS) <= set(run.data.tags)
    m, tags = run.data.metrics, run.data.tags
    assert m[schema.M_VIEW_ENERGY] == rounded(m[schema.M_ENERGY_TOTAL]) and schema.M_CARBON_CO2E in m
    assert tags[schema.T_CONFIG_HASH] == config_hash and tags[schema.T_NOTE].startswith("| phase |")
    assert schema.A_CONFIG_JSON in {f.path for f in client.list_artifacts(run_id)}
    with open(client.download_artifacts(run_id, schema.A_CONFIG_JSON)) as fh:
        text = fh.read()
    config = json.loads(text)
    assert config["config_hash"] == config_hash and config["model"] == "tiny-sd2"
    assert text == json.dumps(config, indent=2)  # the bytes MLflow's log_dict writes


def test_a_measurement_run_is_four_store_calls_and_its_tags_are_checked_as_log_batch_checks_them(
        tracking_uri, small_config, no_rapl, store_calls):
    m = measure(small_config())
    m.extra_tags = {**m.extra_tags, "mlflow_energy.long": "x" * 9000}  # MLflow cuts a tag value at 8000
    run_id = log_measurement(m, experiment="calls")
    assert _per_run(store_calls["calls"], run_id) == {
        "create_run": 1, "log_batch": 1, "get_run": 0, "set_tag": 0, "update_run_info": 1}, store_calls["calls"]
    created = store_calls["created"][run_id]  # the run's tags came with its creation, cut as log_batch cuts them
    assert created[schema.T_CONFIG_HASH] == m.config.config_hash() and schema.T_NOTE in created
    assert len(created["mlflow_energy.long"]) == 8000
    client = MlflowClient()
    _check_content(client, run_id, m.config.config_hash())
    assert len(client.get_run(run_id).data.tags["mlflow_energy.long"]) == 8000


def test_a_sweep_logs_each_config_in_four_store_calls_and_summarises_without_searching_its_children(
        tracking_uri, no_rapl, store_calls):
    result = run_sweep(SweepSpec.from_dict(SPEC), experiment="calls", progress=False)
    assert result.measured == 3 and not result.failed and len(result.done) == 3
    client = MlflowClient()
    for run_id in result.done:
        assert _per_run(store_calls["calls"], run_id) == {
            "create_run": 1, "log_batch": 1, "get_run": 0, "set_tag": 0, "update_run_info": 1}, run_id
        created = store_calls["created"][run_id]
        assert created[schema.T_PARENT_RUN_ID] == result.parent_run_id and created[schema.T_CLAIM_TOKEN] == "1"
        _check_content(client, run_id, created[schema.T_CONFIG_HASH])
    # the summary comes from the rows the sweep holds: no search for the parent's children at the end (the
    # search for children cut short, still RUNNING, stays)
    children = [f for f in store_calls["searches"] if result.parent_run_id in f]
    assert children and all("RUNNING" in f for f in children), children
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics[schema.M_VIEW_CONFIGS] == 3 and schema.M_SWEEP_ENERGY_MEDIAN in parent.data.metrics
    assert parent.data.tags[schema.T_NOTE].startswith("**3 configs**")
    arts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {schema.A_SWEEP_SUMMARY_CSV, schema.A_SWEEP_SUMMARY_PNG} <= arts
