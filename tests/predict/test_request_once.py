"""What one request computes once, on the model fitted on the public data (saturating laws and a
time law): the call's op shares and intensity, for the energy law and the time law together, and
answered as each law computing them alone; the strict front's answer, MLflow's byte for byte, from
one decode of the body."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def public_model(registry):
    import mlflow

    uri, _ = registry
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/mlenergy-energy@champion")
    finally:
        mlflow.set_tracking_uri("")
    inner = model.unwrap_python_model()._model
    # what the test is about: without a saturating law and a time law there is nothing to share
    assert any(pm.saturating is not None for pm in inner.phases.values())
    assert inner.time is not None and any(pm.saturating is not None for pm in inner.time.phases.values())
    return model


def _configs(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "model": rng.choice(["sd2", "sdxl", "sd3-medium"], n), "height": rng.choice([512, 768, 1024], n),
        "width": rng.choice([512, 768, 1024], n), "steps": rng.integers(20, 51, n),
        "guidance_scale": rng.choice([1.0, 5.0, 7.5], n), "precision": "fp16",
        "batch_size": rng.choice([1, 2, 4], n), "hardware": rng.choice(["H100-SXM5-80GB", "A100-SXM4-40GB"], n),
    })


def test_a_request_computes_the_call_shapes_once_for_both_laws(public_model, monkeypatch):
    from mlflow_energy.fit import frame as fit_frame
    from mlflow_energy.fit.saturation import SHAPE_COLUMNS

    size_passes = []  # a pass over the distinct (family, height, width) of the rows
    real = fit_frame.distinct_rows

    def counting(*columns):
        if len(columns) == 3 and np.asarray(columns[1]).dtype.kind == "i":
            size_passes.append(len(columns[0]))
        return real(*columns)

    monkeypatch.setattr(fit_frame, "distinct_rows", counting)
    df = _configs(300)
    out = public_model.predict(df)
    assert size_passes == [300]  # once, for the energy law's phases and the time law alike

    # reading the request's columns answers what each law computes alone from the rows
    from mlflow_energy.predict import frame as predict_frame_module

    captured = {}
    real_time = predict_frame_module.predict_time

    def keep_rows(model, rows, levels):
        captured["rows"], captured["model"] = rows, model
        return real_time(model, rows, levels)

    monkeypatch.setattr(predict_frame_module, "predict_time", keep_rows)
    public_model.predict(df)
    rows, model = captured["rows"], captured["model"]
    assert set(SHAPE_COLUMNS) <= set(rows.columns)
    alone = rows.drop(columns=list(SHAPE_COLUMNS))
    with_cols, _ = model.log_predict_both(rows)
    without, _ = model.log_predict_both(alone)
    for phase, values in with_cols.items():
        np.testing.assert_allclose(values, without[phase], rtol=1e-12)
    np.testing.assert_allclose(model.log_predict_time(rows), model.log_predict_time(alone), rtol=1e-12)
    assert np.isfinite(out["time_total_s"]).all()


@pytest.mark.parametrize("form", ["dataframe_records", "dataframe_split", "inputs"])
def test_the_fronts_answer_is_mlflows_byte_for_byte(public_model, form):
    from mlflow.pyfunc import scoring_server

    from mlflow_energy.predict.serve import score

    df = _configs(40, seed=1)
    data = {"dataframe_records": json.loads(df.to_json(orient="records")),
            "dataframe_split": json.loads(df.to_json(orient="split", index=False)),
            "inputs": {c: json.loads(df[c].to_json(orient="values")) for c in df.columns}}[form]
    payload = {form: data, "params": {"interval_level": "unseen_family"}}
    body = json.dumps(payload)
    schema = public_model.metadata.get_input_schema()
    theirs = scoring_server.invocations(body, "application/json", public_model, schema)
    assert theirs.status == 200, theirs.response[:300]
    ours = score(public_model, schema, json.loads(body))
    assert ours == theirs.response
    assert {p["interval_level"] for p in json.loads(ours)["predictions"]} == {"unseen_family"}


def test_the_front_decodes_a_json_body_once_and_leaves_other_charsets_to_mlflow(registry, monkeypatch):
    import mlflow
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    from mlflow_energy.predict.serve import create_app

    uri, _ = registry
    mlflow.set_tracking_uri(uri)
    try:
        client = TestClient(create_app("models:/mlenergy-energy@champion"))
    finally:
        mlflow.set_tracking_uri("")
    decoded = []
    real_decode = scoring_server._decode_json_input

    def counting_decode(json_input):
        decoded.append(type(json_input).__name__)
        return real_decode(json_input)

    monkeypatch.setattr(scoring_server, "_decode_json_input", counting_decode)  # MLflow's decode of a body
    scored = []
    real_invocations = scoring_server.invocations

    def counting_invocations(*args):
        scored.append(args[1])
        return real_invocations(*args)

    monkeypatch.setattr(scoring_server, "invocations", counting_invocations)
    body = json.dumps({"dataframe_records": json.loads(_configs(5).to_json(orient="records"))})
    r = client.post("/invocations", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 5
    assert decoded == []  # the front decoded it (once) and MLflow did not decode it again
    r = client.post("/invocations", content=body, headers={"Content-Type": "application/json; charset=latin-1"})
    assert r.status_code == 415 and "UTF-8" in r.json()["message"]
    assert scored == ["application/json; charset=latin-1"]  # that one went through MLflow's own scoring
