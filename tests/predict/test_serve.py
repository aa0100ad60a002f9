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


# ----------------------------------------------------------------------------- mlflow-energy serve
CSV_HEADER = "model,height,width,steps,guidance_scale,precision,batch_size,hardware"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


class _Body:
    """``mb`` megabytes of spaces, streamed 1 MB at a time without a length (chunked)."""

    def __init__(self, mb: int) -> None:
        self.mb = mb

    def __iter__(self):
        chunk = b" " * (1 << 20)
        for _ in range(self.mb):
            yield chunk


class _SizedBody(_Body):
    """The same with a length: requests sends it as Content-Length."""

    def __len__(self) -> int:
        return self.mb << 20


def _one_line_413(r: requests.Response) -> None:
    assert r.status_code == 413, r.text[:300]
    message = r.json()["message"]
    assert "\n" not in message and "at most 1000000" in message, message


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_huge_bodies_are_refused_before_they_are_read_and_memory_stays_flat(serve_front):
    base, pid = serve_front
    url, json_type = f"{base}/invocations", {"Content-Type": "application/json"}
    assert requests.post(url, json={"dataframe_records": [row()]}, timeout=60).status_code == 200  # warm
    before = _rss_mb(pid)
    # 300 MB streamed without a length (chunked): counted while it streams in
    r = requests.post(url, data=_Body(300), headers=json_type, timeout=120)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    _one_line_413(r)
    # 4 x 200 MB with a declared length: refused before a byte is read
    for _ in range(4):
        r = requests.post(url, data=_SizedBody(200), headers=json_type, timeout=120)
        assert r.request.headers.get("Content-Length") == str(200 << 20)
        _one_line_413(r)
    grown = _rss_mb(pid) - before
    assert grown < 64, f"the server's RSS grew by {grown:.0f} MB over 1.1 GB of refused bodies"
    r = requests.post(url, json={"dataframe_records": [row()]}, timeout=60)
    assert r.status_code == 200, r.text  # and it still serves


def _csv(*rows: dict, header: str = CSV_HEADER) -> str:
    cols = header.split(",")
    lines = [header] + [",".join("" if r.get(c) is None else str(r[c]) for c in cols) for r in rows]
    return "\n".join(lines) + "\n"


def test_csv_requests_predict_like_json_on_our_front(serve_front):
    base, _ = serve_front
    rows = [row(), row(model="tiny-sdxl", steps=8, guidance_scale=None, hardware="H100")]
    r = requests.post(f"{base}/invocations", data=_csv(*rows), headers={"Content-Type": "text/csv"}, timeout=60)
    assert r.status_code == 200, r.text
    as_json = requests.post(f"{base}/invocations", json={"dataframe_records": rows}, timeout=60)
    assert r.json() == as_json.json()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (_csv(row(), header=CSV_HEADER.replace(",steps", "")), "steps"),
        (_csv(row(steps=4.5)), "steps=4.5"),
        (_csv(row(steps="four")), "steps='four'"),
        (_csv(row(batch_size="true")), "batch_size"),
    ],
    ids=["missing-column", "fractional", "text-number", "text-boolean"],
)
def test_bad_csv_gets_one_line_naming_the_field_first(serve_front, body, needle):
    base, _ = serve_front
    r = requests.post(f"{base}/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=60)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert needle in message[:80] and "\n" not in message and len(message) < 400, message


def test_mlflow_models_serve_cannot_read_csv_with_this_signature(server):
    """Why CSV needs `mlflow-energy serve`: MLflow's CSV reader (scoring_server.parse_csv_input) asks the
    signature for a pandas type per input, and the numeric inputs are AnyType; a typed column would
    refuse int64 frames (double) or float64 frames (long) in `model.predict`."""
    r = requests.post(f"{server}/invocations", data=_csv(row()), headers={"Content-Type": "text/csv"}, timeout=60)
    assert r.status_code == 400 and "pandas types" in r.json()["message"], r.text


def test_a_typed_signature_would_refuse_integer_frames():
    """The reason the numeric inputs stay AnyType (and CSV on `mlflow models serve` a 400)."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.models.utils import _enforce_mlflow_datatype
    from mlflow.types import DataType

    with pytest.raises(MlflowException, match="int64 to float64"):
        _enforce_mlflow_datatype("steps", pd.Series([4, 8]), DataType.double)
    with pytest.raises(MlflowException, match="float64 to int64"):
        _enforce_mlflow_datatype("steps", pd.Series([4.0, 8.0]), DataType.long)
