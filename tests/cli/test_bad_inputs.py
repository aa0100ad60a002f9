"""Bad input anywhere, one table: CLI flags, sweep YAML, JSONL ingest, REST payloads.

Each row gives the input and what must come back: the CLI exits 2 with one line naming the
field; the server answers a 4xx whose JSON ``message`` is one line naming the field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlflow_energy.cli import main

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "predict"))

MEASURE = ["measure", "--model", "tiny-sd2", "--height", "32", "--width", "32", "--steps", "1", "--repeats", "1",
           "--warmup", "0"]
FIT = ["fit", "--experiment", "e", "--registered-model", "m"]
SEARCH = ["search", "--model", "tiny-sd2", "--model-uri", "models:/m@champion"]

CLI_CASES = [
    (MEASURE + ["--guidance-scale", "inf"], "guidance_scale"),
    (MEASURE + ["--guidance-scale", "nan"], "guidance_scale"),
    (MEASURE + ["--guidance-scale", "1e9"], "guidance_scale"),
    (MEASURE + ["--height", "100000"], "height"),
    (MEASURE + ["--width", "-8"], "width"),
    (MEASURE + ["--steps", "30.9"], "steps"),
    (MEASURE + ["--steps", "5000"], "steps"),
    (MEASURE + ["--batch-size", "100000"], "batch_size"),
    (MEASURE + ["--batch-size", "true"], "batch_size"),
    (MEASURE + ["--repeats", "0"], "repeats"),
    (MEASURE + ["--precision", "fp8"], "precision"),
    (MEASURE + ["--output", "/etc/passwd/x.jsonl"], "output"),
    (MEASURE + ["--output", "/tmp"], "output"),
    (MEASURE + ["--journal", "/etc/passwd/j.jsonl"], "journal"),
    (FIT + ["--max-folds", "0"], "max_folds"),
    (FIT + ["--bootstrap", "-5"], "bootstrap"),
    (FIT + ["--n-estimators", "0"], "n_estimators"),
    (SEARCH + ["--trials", "0"], "trials"),
    (SEARCH + ["--seed", "-1"], "seed"),
    (SEARCH + ["--avg-power-w", "inf"], "avg_power_w"),
    (SEARCH + ["--max-latency-s", "0"], "max_latency_s"),
    (["flops", "--model", "sd2", "--height", "100000"], "height"),
    (["sweep", "nope.yaml"], "spec"),
    (["sweep", "{spec}", "--shard", "3/2"], "shard"),
    (["sweep", "{spec}", "--output", "/etc/passwd/y.jsonl"], "output"),
    (["serve", "--port", "70000"], "port"),
    (["serve", "-m", "models:/nope@x"], "model_uri"),
    (["serve", "-m", "runs:/0123456789abcdef0123456789abcdef/model"], "model_uri"),
    (MEASURE + ["--repeats", "1000000000"], "repeats"),
    (MEASURE + ["--warmup", "1000000000"], "warmup"),
    (MEASURE + ["--experiment", "e" * 300], "experiment"),
    (FIT[:1] + ["--experiment", "", "--registered-model", "m"], "experiment"),
    (["sweep", "{spec}", "--experiment", "e" * 257], "experiment"),
    (["sweep", "{spec}", "--max-configs", "0"], "max_configs"),
    (["sweep", "{big}"], "grid"),
    (["sweep", "{big}", "--max-configs", "20"], "grid"),
]

YAML_CASES = [
    ({"grid": {"model": ["tiny-sd2"], "guidance_scale": [".inf"]}}, "grid.guidance_scale"),
    ({"grid": {"model": ["tiny-sd2"], "guidance_scale": [".nan"]}}, "grid.guidance_scale"),
    ({"grid": {"model": ["tiny-sd2"], "steps": [1.5]}}, "grid.steps"),
    ({"grid": {"model": ["tiny-sd2"], "steps": [True]}}, "grid.steps"),
    ({"grid": {"model": ["tiny-sd2"], "steps": [5000]}}, "grid.steps"),
    ({"grid": {"model": ["tiny-sd2"], "batch_size": [100000]}}, "grid.batch_size"),
    ({"grid": {"model": ["tiny-sd2"], "resolution": [100000]}}, "grid.resolution"),
    ({"grid": {"model": ["tiny-sd2"], "resolution": ["64x"]}}, "grid.resolution"),
    ({"grid": {"model": ["tiny-sd2"]}, "warmup": -1}, "warmup"),
    ({"grid": {"model": ["tiny-sd2"]}, "device": ""}, "device"),
    ({"grid": {"model": ["tiny-sd2"]}, "repeats": 1_000_000_000}, "repeats"),
    ({"grid": {"model": ["tiny-sd2"]}, "warmup": 1_000_000_000}, "warmup"),
    ({"grid": {"model": ["tiny-sd2"]}, "protocol": {"max_seconds": ".inf"}}, "protocol.max_seconds"),
    ({"grid": {"model": ["tiny-sd2"]}, "protocol": {"max_repeats": 1_000_000_000}}, "protocol.max_repeats"),
    ({"grid": {"model": ["tiny-sd2"]}, "idle_seconds": ".inf"}, "idle_seconds"),
    ({"grid": {"model": ["tiny-sd2"]}, "name": "n" * 300}, "name"),
    ({"grid": {"model": ["tiny-sd2"]}, "experiment": "e" * 300}, "experiment"),
    ({"grid": {"model": ["tiny-sd2"], "steps": list(range(1, 1001)), "resolution": list(range(8, 808, 8))}},
     "grid"),
]

# Spec files that are not YAML a person writes: raw bytes, each refused naming `spec`.
RAW_YAML_CASES = [
    ("deep-flow", ("grid: " + "[" * 5000 + "]" * 5000 + "\n").encode()),
    ("deep-block", ("grid:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))).encode()),
    ("latin-1", "name: caf\u00e9\ngrid: {model: [tiny-sd2]}\n".encode("latin-1")),
    ("utf-16-no-bom", "grid: {model: [tiny-sd2]}\n".encode("utf-16-le")),
    ("megabytes", b"description: '" + b"x" * 2_000_000 + b"'\ngrid: {model: [tiny-sd2]}\n"),
]

JSONL_CASES = [
    ("not json\n", "line 1"),
    ('{"format": "other"}\n', "line 1"),
    ("[1, 2]\n", "line 1"),
    ('{"format": "mlflow-energy/measurement", "params": [], "metrics": {}, "tags": {}}\n', "params"),
    ("{rec_nan}\n", "metrics.energy/total_j"),
    ("{rec_missing}\n", "energy/total_j"),
]


def _one_line(result, field: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert f"{field}=" in lines[0] or field in lines[0], lines[0]


@pytest.mark.parametrize(("args", "field"), CLI_CASES, ids=[f"cli-{i}" for i in range(len(CLI_CASES))])
def test_cli_flag(args, field, tracking_uri, tmp_path, no_rapl):
    spec = tmp_path / "ok.yaml"
    spec.write_text("grid: {model: [tiny-sd2], resolution: [32], steps: [1]}\nrepeats: 1\nwarmup: 0\n")
    big = tmp_path / "big.yaml"  # 100 x 101 = 10,100 configs: over the default cap of 10,000
    steps, guidance = list(range(1, 101)), [g / 10 for g in range(101)]
    big.write_text(f"grid: {{model: [tiny-sd2], resolution: [32], steps: {steps}, guidance_scale: {guidance}}}\n")
    args = [a.format(spec=spec, big=big) for a in args]
    result = CliRunner().invoke(main, args)
    _one_line(result, field)


@pytest.mark.parametrize(("data", "field"), YAML_CASES, ids=[f"yaml-{i}" for i in range(len(YAML_CASES))])
def test_sweep_yaml(data, field, tmp_path, tracking_uri):
    import yaml

    text = yaml.safe_dump(data).replace("'.inf'", ".inf").replace("'.nan'", ".nan")
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    _one_line(CliRunner().invoke(main, ["sweep", str(spec)]), field)


@pytest.mark.parametrize("raw", [c[1] for c in RAW_YAML_CASES], ids=[c[0] for c in RAW_YAML_CASES])
def test_sweep_yaml_file(raw, tmp_path, tracking_uri):
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(raw)
    _one_line(CliRunner().invoke(main, ["sweep", str(spec)]), "spec")


@pytest.fixture(scope="module")
def good_record() -> dict:
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import measure
    from mlflow_energy.tracking.jsonl import to_record

    return to_record(measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1, repeats=1, warmup=0)))


@pytest.mark.parametrize(("text", "field"), JSONL_CASES, ids=[f"jsonl-{i}" for i in range(len(JSONL_CASES))])
def test_jsonl_ingest(text, field, tmp_path, tracking_uri, good_record):
    nan = json.loads(json.dumps(good_record))
    nan["metrics"]["energy/total_j"] = "NaN"
    missing = json.loads(json.dumps(good_record))
    del missing["metrics"]["energy/total_j"]
    path = tmp_path / "bad.jsonl"
    path.write_text(text.replace("{rec_nan}", json.dumps(nan)).replace("{rec_missing}", json.dumps(missing)))
    _one_line(CliRunner().invoke(main, ["ingest", str(path)]), field)


# ----------------------------------------------------------------------------- REST
def _row(**changes):
    from test_predictor import row

    return row(**changes)


REST_CASES = [
    ({"dataframe_records": [{"steps": 30.9}]}, 400, "steps=30.9"),
    ({"dataframe_records": [{"height": 1024.7}]}, 400, "height=1024.7"),
    ({"dataframe_records": [{"steps": True}]}, 400, "steps=True"),
    ({"dataframe_records": [{"batch_size": False}]}, 400, "batch_size=False"),
    ({"dataframe_records": [{"width": "64"}]}, 400, "width='64'"),
    ({"dataframe_records": [{"guidance_scale": True}]}, 400, "guidance_scale=True"),
    ({"dataframe_records": [{"steps": 5000}]}, 400, "steps=5000"),
    ({"dataframe_records": [{"height": 100000}]}, 400, "height=100000"),
    ({"dataframe_records": [{"model": 3}]}, 400, "model=3"),
    ({"dataframe_split": {"columns": ["steps"], "data": [[1, 2]]}}, 400, "data="),
    ({"rows": []}, 400, "payload="),
    ([1, 2, 3], 400, "payload="),
    ("deep", 400, "nested"),
    ("notjson", 400, "JSON"),
    ("no-content-type", 415, "Content-Type"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("payload", "status", "needle"), REST_CASES, ids=[f"rest-{i}" for i in range(len(REST_CASES))])
def test_rest_payload(serve_front, payload, status, needle):
    import requests

    url = f"{serve_front[0]}/invocations"
    if payload == "deep":
        r = requests.post(url, data="[" * 100_000 + "]" * 100_000, headers={"Content-Type": "application/json"})
    elif payload == "notjson":
        r = requests.post(url, data="{'a':", headers={"Content-Type": "application/json"})
    elif payload == "no-content-type":
        r = requests.post(url, data=json.dumps({"dataframe_records": [_row()]}))
    else:
        if isinstance(payload, dict) and "dataframe_records" in payload:
            payload = {"dataframe_records": [_row(**payload["dataframe_records"][0])]}
        r = requests.post(url, json=payload)
    assert r.status_code == status, r.text
    message = r.json()["message"]
    assert needle in message and "\n" not in message and "Traceback" not in r.text, message


@pytest.mark.slow
def test_rest_good_payload_still_predicts(serve_front):
    import requests

    r = requests.post(f"{serve_front[0]}/invocations", json={"dataframe_records": [_row(), _row(steps=8.0)]})
    assert r.status_code in (200, 400), r.text  # integral floats: the friendly-dtype rule decides
    r = requests.post(f"{serve_front[0]}/invocations", json={"dataframe_records": [_row()]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


@pytest.mark.parametrize(("url", "needle"), [("foo://bar", "storage='foo://bar'"),
                                             ("postgresql://u:secret@127.0.0.1:1/db", "u:***@")])
def test_search_storage_is_one_line_without_the_password(url, needle):
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.search.study import _storage

    with pytest.raises(ConfigError) as info:
        _storage(url)
    assert needle in str(info.value) and "secret" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_rest_names_a_missing_column_first_without_echoing_the_data(serve_front):
    import requests

    record = {k: v for k, v in _row().items() if k != "steps"}
    r = requests.post(f"{serve_front[0]}/invocations", json={"dataframe_records": [record] * 20})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "steps" in message[:120] and len(message) < 400, message
