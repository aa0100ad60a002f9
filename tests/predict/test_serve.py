"""`mlflow models serve` of the registered predictor: a real server on a loopback port."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fit"))
sys.path.insert(0, str(Path(__file__).parents[1]))
from services import free_port, model_serve_argv, serving  # noqa: E402
from test_predictor import NAME, registered_store, row  # noqa: E402

requests = pytest.importorskip("requests")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    uri = registered_store(tmp)
    port = free_port()
    with serving(model_serve_argv(f"models:/{NAME}@champion", port), port=port, cwd=tmp,
                 env={**os.environ, "MLFLOW_TRACKING_URI": uri}) as base:
        yield base


def post(base: str, records: list[dict]) -> requests.Response:
    return requests.post(f"{base}/invocations", json={"dataframe_records": records}, timeout=60)


def test_prediction_over_rest(server):
    r = post(server, [row(), row(model="tiny-sdxl", hardware="H100", carbon_intensity_g_per_kwh=100.0)])
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 2
    assert preds[0]["energy_total_j_low"] < preds[0]["energy_total_j"] < preds[0]["energy_total_j_high"]
    assert preds[1]["co2e_g"] == pytest.approx(preds[1]["energy_total_j"] / 3.6e6 * 100.0)


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        ({k: v for k, v in row().items() if k != "steps"}, "steps"),
        (row(model="kandinsky-3"), "kandinsky-3"),
        (row(steps=-3), "steps=-3"),
    ],
    ids=["missing-column", "unknown-family", "negative-steps"],
)
def test_bad_payloads_get_a_4xx_naming_the_problem(server, record, needle):
    r = post(server, [record])
    assert 400 <= r.status_code < 500, r.text
    assert needle in r.json()["message"]


def test_rest_accepts_any_number_where_it_fits_and_says_the_level(server):
    ints = post(server, [row(guidance_scale=7)])  # an integer guidance scale
    floats = post(server, [row(steps=4.0, height=48.0, width=48.0, batch_size=1.0)])  # integral floats
    assert ints.status_code == 200 and floats.status_code == 200, (ints.text, floats.text)
    a, b = ints.json()["predictions"][0], floats.json()["predictions"][0]
    assert a["energy_total_j"] == pytest.approx(b["energy_total_j"])
    # no setup column: an unseen setup, the widest interval
    assert a["interval_level"] == "unseen_setup" and a["energy_total_j_law"] > 0 and a["energy_scope"]


@pytest.mark.parametrize(("record", "needle"), [(row(steps=4.5), "steps=4.5"), (row(batch_size=True), "batch_size")],
                         ids=["fractional-steps", "boolean-batch"])
def test_rest_refuses_non_integral_or_boolean_numbers_naming_the_column(server, record, needle):
    r = post(server, [record])
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]


def test_rest_interval_level_param(server):
    r = requests.post(f"{server}/invocations", json={"dataframe_records": [row()],
                                                     "params": {"interval_level": "unseen_hardware"}}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["interval_level"] == "unseen_hardware"
