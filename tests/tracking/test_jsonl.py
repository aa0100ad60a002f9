"""JSONL export (no MLflow needed) and ingest into MLflow (idempotent)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import ZeusMeter
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking import ingest, load_runs
from mlflow_energy.tracking.jsonl import JsonlSink, read_jsonl, to_record


def test_export_module_does_not_import_mlflow():
    code = "import sys, mlflow_energy.tracking.jsonl, mlflow_energy.measure.runner; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def gpu_measurement(fake_gpu, small_config):
    meter = ZeusMeter("cuda")
    try:
        return measure(small_config(steps=2), meter=meter)
    finally:
        meter.close()


def test_record_has_schema_keys_and_gpu_fields(gpu_measurement):
    rec = to_record(gpu_measurement)
    assert set(schema.RUN_PARAMS) <= set(rec["params"])
    assert set(schema.RUN_METRICS) <= set(rec["metrics"])
    assert set(schema.RUN_TAGS) <= set(rec["tags"])
    assert rec["gpu_name"] == "NVIDIA Fake GPU 80GB"
    assert rec["power_limit_w"] == 300.0
    assert "driver_version" in rec
    assert rec["tags"][schema.T_ENERGY_SOURCE] == "zeus:nvml"
    assert rec["config"]["model"] == "tiny-sd2"
    json.dumps(rec, allow_nan=False)


def test_export_ingest_round_trip_is_idempotent(tmp_path, tracking_uri, gpu_measurement, small_config, no_rapl):
    path = tmp_path / "out" / "m.jsonl"
    sink = JsonlSink(path)
    sink.write(gpu_measurement)
    cpu = measure(small_config(steps=1))
    sink.write(cpu)
    sink.write(cpu)  # the same measurement twice in the file: logged once
    assert len(read_jsonl(path)) == 3
    new, skipped = ingest(path, experiment="ingested")
    assert len(new) == 2 and skipped == 1
    new2, skipped2 = ingest(path, experiment="ingested")
    assert new2 == [] and skipped2 == 3
    df = load_runs("ingested")
    assert len(df) == 2
    gpu_row = df[df["energy_source"] == "zeus:nvml"].iloc[0]
    assert gpu_row["hardware"] == "NVIDIA Fake GPU 80GB"
    assert gpu_row["power_limit_w"] == "300"
    assert gpu_row["energy/total_j"] == pytest.approx(gpu_measurement.energy_j["total"])
    assert gpu_row["steps"] == 2 and gpu_row["guidance_scale"] == pytest.approx(7.5)
    client = MlflowClient()
    run = client.get_run(gpu_row["run_id"])
    assert set(schema.RUN_PARAMS) <= set(run.data.params)
    assert set(schema.RUN_METRICS) <= set(run.data.metrics)
    assert set(schema.RUN_TAGS) <= set(run.data.tags)
    assert schema.A_CONFIG_JSON in {f.path for f in client.list_artifacts(run.info.run_id)}


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"format": "mlflow-energy/measurement", "params": {}, "metrics": {}, "tags": {}}\n')
    with pytest.raises(ConfigError, match="line 1"):
        read_jsonl(path)
    path.write_text("\nnot json\n")
    with pytest.raises(ConfigError, match="line 2"):
        read_jsonl(path)
    with pytest.raises(ConfigError, match="existing JSONL"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="output"):
        JsonlSink(tmp_path)



def test_records_written_before_cfg_passes_existed_still_read(gpu_measurement, tmp_path) -> None:
    """A record without the cfg_passes param (files written before it existed) is still valid."""
    record = to_record(gpu_measurement)
    assert schema.P_CFG_PASSES in record["params"]
    record["params"].pop(schema.P_CFG_PASSES)
    older = tmp_path / "older.jsonl"
    older.write_text(json.dumps(record) + "\n")
    assert len(read_jsonl(older)) == 1
    record["params"].pop(schema.P_SEED)  # but a key that was always there is still required
    older.write_text(json.dumps(record) + "\n")
    with pytest.raises(ConfigError, match="seed"):
        read_jsonl(older)
