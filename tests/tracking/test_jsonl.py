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


# ----------------------------------------------------------------------------- crafted records
@pytest.fixture(scope="module")
def good_record() -> dict:
    from mlflow_energy.config import InferenceConfig

    return to_record(measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1, repeats=1, warmup=0)))


def _changed(record: dict, change) -> dict:
    out = json.loads(json.dumps(record))
    change(out)
    return out


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# (name, how the line is made from the good record, the field the one line must name). Every
# row is refused as a whole file: exit 2, one line naming the line number, nothing logged.
CRAFTED = [
    ("deep-json", lambda r: '{"format": "mlflow-energy/measurement", "x": ' + _deep(100_000) + "}", "line 2"),
    ("deep-config", lambda r: json.dumps(_changed(r, lambda o: o.__setitem__("config", [[[[1]]]]))), "config"),
    ("int-10e400", lambda r: json.dumps(r).replace('"energy/total_j": ', '"energy/total_j": 1' + "0" * 400 + ", \"x\": "),
     "metrics.energy/total_j"),
    ("metric-name-300", lambda r: json.dumps(_changed(r, lambda o: o["metrics"].__setitem__("m" * 300, 1.0))),
     "metrics key"),
    ("metric-name-dotdot", lambda r: json.dumps(_changed(r, lambda o: o["metrics"].__setitem__("a/../b", 1.0))),
     "metrics key"),
    ("param-2mb", lambda r: json.dumps(_changed(r, lambda o: o["params"].__setitem__("model", "x" * 2_000_000))),
     "line 2"),
    ("param-7000", lambda r: json.dumps(_changed(r, lambda o: o["params"].__setitem__("model", "x" * 7000))),
     "params.model"),
    ("tag-9000", lambda r: json.dumps(_changed(r, lambda o: o["tags"].__setitem__(schema.T_HARDWARE, "h" * 9000))),
     "tags.mlflow_energy.hardware"),
    ("param-number", lambda r: json.dumps(_changed(r, lambda o: o["params"].__setitem__("steps", 1))), "params.steps"),
    ("energy-negative", lambda r: json.dumps(_changed(r, lambda o: o["metrics"].__setitem__("energy/total_j", -5.0))),
     "metrics.energy/total_j"),
    ("energy-1e308", lambda r: json.dumps(_changed(r, lambda o: o["metrics"].__setitem__("energy/denoise_j", 1e308))),
     "metrics.energy/denoise_j"),
    ("time-negative", lambda r: json.dumps(_changed(r, lambda o: o["metrics"].__setitem__("time/total_s", -1.0))),
     "metrics.time/total_s"),
    ("metric-bool", lambda r: json.dumps(_changed(r, lambda o: o["metrics"].__setitem__("power/avg_w", True))),
     "metrics.power/avg_w"),
    ("forged-parent", lambda r: json.dumps(_changed(r, lambda o: o["tags"].__setitem__("mlflow.parentRunId", "f" * 32))),
     "tags key"),
    ("forged-user", lambda r: json.dumps(_changed(r, lambda o: o["tags"].__setitem__("mlflow.user", "root"))),
     "tags key"),
    ("forged-kind", lambda r: json.dumps(_changed(r, lambda o: o["tags"].__setitem__(schema.T_KIND, "sweep"))),
     "tags.mlflow_energy.kind"),
    ("too-many-tags", lambda r: json.dumps(_changed(r, lambda o: o["tags"].update(
        {f"mlflow_energy.t{i}": "x" for i in range(100)}))), "100 params and tags"),
    ("bad-parent-id", lambda r: json.dumps(_changed(r, lambda o: o.__setitem__("parent_run_id", "x' OR '1"))),
     "parent_run_id"),
    ("long-experiment", lambda r: json.dumps(_changed(r, lambda o: o.__setitem__("experiment", "e" * 300))),
     "experiment"),
    ("version-2", lambda r: json.dumps(_changed(r, lambda o: o.__setitem__("version", 2))), "version"),
]


def _ingest_file(path) -> object:
    from click.testing import CliRunner

    from mlflow_energy.cli import main

    return CliRunner().invoke(main, ["ingest", str(path), "--experiment", "crafted"])


@pytest.mark.parametrize(("make", "field"), [c[1:] for c in CRAFTED], ids=[c[0] for c in CRAFTED])
def test_crafted_record_refuses_the_file_with_one_line_and_logs_nothing(make, field, good_record, tmp_path,
                                                                         tracking_uri):
    path = tmp_path / "crafted.jsonl"
    path.write_text(json.dumps(good_record) + "\n" + make(good_record) + "\n")  # a good line first
    result = _ingest_file(path)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output[:2000]
    assert lines[0].startswith("Error: ") and "line 2" in lines[0] and field in lines[0], lines[0]
    assert len(lines[0]) < 600, lines[0]  # no 2 MB echo
    assert MlflowClient().get_experiment_by_name("crafted") is None  # the file was refused before logging


@pytest.mark.parametrize(("encoding", "needle"), [("utf-16", "UTF-8"), ("latin-1", "byte 0xe9")])
def test_a_file_not_in_utf8_is_refused_naming_the_line(encoding, needle, good_record, tmp_path, tracking_uri):
    path = tmp_path / "enc.jsonl"
    record = _changed(good_record, lambda o: o["tags"].__setitem__(schema.T_HARDWARE, "caf\u00e9"))
    path.write_bytes((json.dumps(record, ensure_ascii=False) + "\n").encode(encoding))
    result = _ingest_file(path)
    assert result.exit_code == 2 and "line 1" in result.output and needle in result.output, result.output


def test_valid_records_pass_the_checks_bom_and_dynamic_energies_included(good_record, tmp_path):
    record = _changed(good_record, lambda o: o["metrics"].update({"energy/total_dynamic_j": -0.5}))
    journal_like = {**record, "experiment": "e", "parent_run_id": "0123456789abcdef0123456789abcdef", "tracking": "d"}
    path = tmp_path / "ok.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(record) + "\n" + json.dumps(journal_like) + "\n").encode())
    assert len(read_jsonl(path)) == 2


def test_limits_match_mlflow():
    from mlflow.utils import validation

    from mlflow_energy.tracking import filters

    assert filters.MAX_KEY == validation.MAX_ENTITY_KEY_LENGTH
    assert filters.MAX_PARAM_VALUE == validation.MAX_PARAM_VAL_LENGTH
    assert filters.MAX_TAG_VALUE == validation.MAX_TAG_VAL_LENGTH
    from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun

    assert filters.MAX_EXPERIMENT_NAME == SqlExperiment.__table__.c.name.type.length
    assert filters.MAX_RUN_NAME == SqlRun.__table__.c.name.type.length
