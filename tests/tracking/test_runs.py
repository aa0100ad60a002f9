"""Measurements as MLflow runs (real SQLite tracking store) and back as a DataFrame."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from mlflow_energy import __version__, schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import ZeusMeter
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking import DEFAULT_EXPERIMENT, load_runs, log_measurement


def _artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id)}


def test_logged_run_has_every_schema_key(tracking_uri, small_config, no_rapl):
    m = measure(small_config(guidance_scale=7.5))
    run_id = log_measurement(m, experiment="exp")
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert set(schema.RUN_PARAMS) <= set(run.data.params)
    assert set(schema.RUN_METRICS) <= set(run.data.metrics)
    assert set(schema.RUN_TAGS) <= set(run.data.tags)
    assert {schema.M_PHASE_SUM_GAP, schema.M_ENERGY_WHOLE} <= set(run.data.metrics)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["model"] == "tiny-sd2" and params["height"] == "32" and params["cfg"] == "true"
    assert params["guidance_scale"] == "7.5" and params["precision"] == "fp32" and params["weights"] == "random"
    assert metrics["energy/total_j"] == pytest.approx(m.energy_j["total"])
    assert metrics["flops/denoise_per_step"] == pytest.approx(m.flops["denoise_per_step"])
    assert tags[schema.T_KIND] == "measurement"
    assert tags[schema.T_ENERGY_SOURCE] == "estimate:cpu-tdp"
    assert tags[schema.T_CONFIG_HASH] == m.config.config_hash()
    assert tags[schema.T_VERSION] == __version__
    assert tags[schema.T_ESTIMATE_TDP] == "85"
    assert _artifacts(client, run_id) == {schema.A_CONFIG_JSON, schema.A_IMAGE_PNG}
    local = client.download_artifacts(run_id, schema.A_CONFIG_JSON)
    with open(local) as fh:
        config = json.load(fh)
    assert config["model"] == "tiny-sd2" and config["config_hash"] == m.config.config_hash()
    from PIL import Image

    img = Image.open(client.download_artifacts(run_id, schema.A_IMAGE_PNG))
    assert img.size == (32, 32)


def test_gpu_run_logs_timeline_and_driver_tags(tracking_uri, small_config, fake_gpu):
    meter = ZeusMeter("cuda")
    try:
        m = measure(small_config(), meter=meter)
    finally:
        meter.close()
    run_id = log_measurement(m, experiment="gpu")
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags[schema.T_ENERGY_SOURCE] == "zeus:nvml"
    assert run.data.tags[schema.T_HARDWARE] == "NVIDIA Fake GPU 80GB"
    assert run.data.tags[schema.T_POWER_LIMIT] == "300"
    assert schema.A_POWER_TIMELINE_CSV in _artifacts(client, run_id)
    import pandas as pd

    timeline = pd.read_csv(client.download_artifacts(run_id, schema.A_POWER_TIMELINE_CSV))
    assert len(timeline) >= 1 and set(timeline["power_w"]) == {150.0}


def test_load_runs_types_and_filters(tracking_uri, small_config, no_rapl):
    a = log_measurement(measure(small_config(steps=1)), experiment="e")
    b = log_measurement(measure(small_config(steps=2, guidance_scale=1.0)), experiment="e")
    parent = MlflowClient().create_run(MlflowClient().get_experiment_by_name("e").experiment_id).info.run_id
    c = log_measurement(measure(small_config(steps=1, batch_size=2)), experiment="e", parent_run_id=parent)
    df = load_runs("e")
    assert set(df["run_id"]) == {a, b, c}
    assert df["height"].dtype == "int64" and df["steps"].dtype == "int64"
    assert df["guidance_scale"].dtype == "float64"
    assert df["cfg"].tolist().count(False) == 1
    assert set(df["kind"]) == {"measurement"}
    assert set(df["energy_source"]) == {"estimate:cpu-tdp"}
    assert (df["energy/total_j"] > 0).all()
    assert df.set_index("run_id").loc[c, "parent_run_id"] == parent
    assert df.set_index("run_id").loc[c, "batch_size"] == 2
    assert len(load_runs("e", kinds=("sweep",))) == 0
    with pytest.raises(ConfigError, match="experiment='missing'"):
        load_runs("missing")


def test_default_experiment_and_mlflow_run_environment(tracking_uri, small_config, no_rapl, monkeypatch):
    m = measure(small_config())
    run_id = log_measurement(m)
    client = MlflowClient()
    exp = client.get_experiment(client.get_run(run_id).info.experiment_id)
    assert exp.name == DEFAULT_EXPERIMENT
    # Launched by `mlflow run`: the project's run (same experiment) becomes the parent.
    project_exp = client.create_experiment("project")
    project_run = client.create_run(project_exp).info.run_id
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", project_exp)
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run)
    child = client.get_run(log_measurement(m))
    assert child.info.experiment_id == project_exp
    assert child.data.tags[schema.T_PARENT_RUN_ID] == project_run
    assert client.get_run(project_run).info.status == "RUNNING"  # left to `mlflow run` to end


def test_an_mlflow_run_in_another_experiment_is_linked_both_ways(tracking_uri, monkeypatch):
    """`mlflow run .` without --experiment-name puts its run in Default; the entry point's top-level
    runs (sweep, fit) are elsewhere: the project run's description links each of them, and each names
    the project run. In the same experiment they nest under it instead."""
    from mlflow_energy.tracking import runs

    c = MlflowClient()
    project = c.create_run("0").info.run_id  # Default, RUNNING, as `mlflow run` leaves it
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    exp = runs.experiment_id("demo")
    sweep = runs.start_run(exp, kind=schema.KIND_SWEEP, run_name="cpu-demo")
    fit = runs.start_run(exp, kind=schema.KIND_FIT, run_name="fit-x")
    child = runs.start_run(exp, kind=schema.KIND_MEASUREMENT, parent_run_id=sweep)
    note = c.get_run(project).data.tags[schema.T_NOTE]
    assert note.count("\n- ") == 2
    assert f"[cpu-demo](#/experiments/{exp}/runs/{sweep})" in note and f"[fit-x](#/experiments/{exp}/runs/{fit})" in note
    assert f"in experiment [demo](#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey=energy)" \
        in note
    for run_id in (sweep, fit):
        assert c.get_run(run_id).data.tags[schema.T_PROJECT_RUN_ID] == project
    assert schema.T_PROJECT_RUN_ID not in c.get_run(child).data.tags
    here = c.create_run(exp).info.run_id  # a project run in the same experiment: nesting, no link
    monkeypatch.setenv("MLFLOW_RUN_ID", here)
    nested = runs.start_run(exp, kind=schema.KIND_SWEEP)
    assert c.get_run(nested).data.tags[schema.T_PARENT_RUN_ID] == here
    assert schema.T_NOTE not in c.get_run(here).data.tags
