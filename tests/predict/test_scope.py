"""A model knows what it has seen, predicts time and dynamic energy, and calibrates from either energy scope."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parents[1] / "fit"))
from test_fit import FAMILIES, HARDWARE, HW_WATTS, synthetic_runs  # noqa: E402

CPU = "cpu: Intel(R) Xeon(R) CPU @ 2.20GHz"
H100 = HARDWARE[0]


def _fit(runs: pd.DataFrame):
    from mlflow_energy.fit import fit_energy_model, normalise_runs

    return fit_energy_model(normalise_runs(runs), n_boot=0, max_folds=6)


@pytest.fixture(scope="module")
def cpu_store(tmp_path_factory):
    """A model fitted on fp32 runs of this CPU only (as the demo's), registered in a SQLite store."""
    from mlflow_energy.fit import log_fit
    from mlflow_energy.predict import log_and_register

    tmp = tmp_path_factory.mktemp("cpu-model")
    old = os.getcwd()
    os.chdir(tmp)
    uri = f"sqlite:///{tmp}/mlflow.db"
    try:
        mlflow.set_tracking_uri(uri)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        runs = synthetic_runs(hardware=(CPU,), source="estimate:cpu-tdp", sizes=(32, 64), steps=(2, 4, 8)).assign(
            **{schema.P_PRECISION: "fp32"})
        result = _fit(runs)
        mlflow.set_experiment("fit")
        with mlflow.start_run():
            log_fit(result, experiment="fit", allow_mixed=False, plots=False)
            log_and_register(result, "cpu-energy")
        yield tmp, result.model
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.chdir(old)
        mlflow.set_tracking_uri("")


def row(**changes):
    base = {"model": "tiny-sd2", "height": 48, "width": 48, "steps": 4, "guidance_scale": 7.5, "precision": "fp32",
            "batch_size": 1, "hardware": CPU}
    base.update(changes)
    return base


def test_a_cpu_model_refuses_a_gpu_another_precision_family_or_range_naming_what_it_has_seen(cpu_store):
    from mlflow_energy.predict import predict_frame

    _, model = cpu_store
    assert model.seen["hardware_kinds"] == ["cpu"] and model.seen["precisions"] == ["fp32"]
    assert model.seen["steps"] == [2, 8] and model.seen["height"] == [32, 64]
    ok = predict_frame(model, pd.DataFrame([row()]))
    assert ok["interval_level"][0] == "unseen_setup" and ok["note"][0] == ""
    for changes, field in (({"hardware": "NVIDIA H100 80GB HBM3", "precision": "fp16"}, "precision='fp16'"),
                           ({"hardware": "NVIDIA H100 80GB HBM3"}, "hardware='NVIDIA H100 80GB HBM3'"),
                           ({"precision": "bf16"}, "precision='bf16'"),
                           ({"model": "tiny-sd3.5-medium"}, "model='tiny-sd3.5-medium'"),
                           ({"steps": 30}, "steps=30"), ({"height": 96}, "height=96"), ({"batch_size": 8}, "batch_size=8")):
        with pytest.raises(ConfigError) as info:
            predict_frame(model, pd.DataFrame([row(), row(**changes)]))
        msg = str(info.value)
        assert msg.startswith(f"row 1: {field} is not allowed") and "what the model has seen" in msg, msg
        assert "allow_extrapolation" in msg and "\n" not in msg
    h100 = predict_frame(model, pd.DataFrame([row(hardware="NVIDIA H100 80GB HBM3")]), allow_extrapolation=True)
    assert h100["interval_level"][0] == "extrapolated"
    assert h100["note"][0].startswith("extrapolated: hardware=H100 SXM5 80GB outside CPU hardware, namely cpu: Intel")
    half = math.log(h100["energy_total_j_high"][0] / h100["energy_total_j"][0])
    assert half >= max(model.interval.values()) - 1e-12


def test_the_model_version_and_the_cli_say_what_it_has_seen(cpu_store):
    from mlflow_energy.cli import main

    _, model = cpu_store
    mv = mlflow.MlflowClient().get_model_version_by_alias("cpu-energy", "champion")
    assert mv.tags[schema.T_SEEN_PREFIX + "hardware_kinds"] == "cpu"
    assert mv.tags[schema.T_SEEN_PREFIX + "precisions"] == "fp32"
    assert mv.tags[schema.T_SEEN_PREFIX + "steps"] == "2,8"
    info = mlflow.models.get_model_info("models:/cpu-energy@champion")
    assert info.metadata["seen"]["families"] == sorted(FAMILIES)
    args = ["predict", "--model-uri", "models:/cpu-energy@champion", "--model", "tiny-sd2", "--height", "48",
            "--width", "48", "--steps", "4", "--precision", "fp16", "--hardware", "NVIDIA H100 80GB HBM3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "precision='fp16'" in res.output and "precisions fp32" in res.output
    res = CliRunner().invoke(main, [*args, "--allow-extrapolation", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output.strip().splitlines()[-1])
    assert got["interval_level"] == "extrapolated" and got["seen"]["hardware_kinds"] == ["cpu"]
    # served: the param answers over the pyfunc too
    served = mlflow.pyfunc.load_model("models:/cpu-energy@champion")
    with pytest.raises(mlflow.exceptions.MlflowException, match="what the model has seen"):
        served.predict(pd.DataFrame([row(steps=30)]))
    out = served.predict(pd.DataFrame([row(steps=30)]), params={"allow_extrapolation": True})
    assert out["interval_level"][0] == "extrapolated"


def test_time_law_and_dynamic_energy_follow_the_runs():
    from mlflow_energy.fit.scope import IDLE_FRACTION_OF_TDP
    from mlflow_energy.predict import predict_frame

    result = _fit(synthetic_runs(families=FAMILIES[:2]))
    model = result.model
    assert model.time is not None and set(model.time_interval) >= {"known", "unseen_setup"}
    cv = result.time_cv_summary.set_index("scheme")["mape_law"]
    assert cv["loco"] < 0.1, cv  # 3% noise on energy and on time; held-out families and GPUs differ in level
    rows = pd.DataFrame([row(hardware=hw, precision="fp16", setup=model.sources[0]) for hw in HARDWARE])
    out = predict_frame(model, rows)
    # time = energy / average power in these runs
    np.testing.assert_allclose(out["time_total_s"], out["energy_total_j"] / [HW_WATTS[h] for h in HARDWARE], rtol=0.1)
    assert ((out["time_total_s_low"] < out["time_total_s"]) & (out["time_total_s"] < out["time_total_s_high"])).all()
    # no measured idle power: 12% of the spec table's TDP (H100 SXM 700 W, A100 SXM 400 W)
    idle = np.array([700.0, 400.0]) * IDLE_FRACTION_OF_TDP
    np.testing.assert_allclose(out["energy_dynamic_j"], out["energy_total_j"] - idle * out["time_total_s"],
                               rtol=1e-9)
    share = out["energy_dynamic_j"] / out["energy_total_j"]
    np.testing.assert_allclose(out["energy_dynamic_j_low"] / out["energy_total_j_low"], share, rtol=1e-9)
    # measured idle power wins over the TDP rule
    measured = _fit(synthetic_runs(families=FAMILIES[:2], idle_w=50.0)).model
    assert set(measured.idle_w.values()) == {50.0}
    assert all(v.startswith("measured") for v in measured.idle_source.values())
    m = predict_frame(measured, rows)
    np.testing.assert_allclose(m["energy_dynamic_j"], m["energy_total_j"] - 50.0 * m["time_total_s"], rtol=1e-9)
    # runs without times: no time law, time and dynamic energy are missing, never made up
    none = _fit(synthetic_runs(families=FAMILIES[:2], times=False)).model
    n = predict_frame(none, rows)
    assert none.time is None and n["time_total_s"].isna().all() and n["energy_dynamic_j"].isna().all()


def test_calibration_takes_dynamic_energy_measurements():
    from mlflow_energy.predict import fit_calibration, predict_frame

    model = _fit(synthetic_runs(families=FAMILIES[:2])).model
    grid = pd.DataFrame([row(height=h, width=h, precision="fp16", hardware=H100) for h in (32, 64)])
    prior = predict_frame(model, grid)
    measured_dyn = prior["energy_dynamic_j"].to_numpy() * 1.3
    cal = fit_calibration(model, grid.assign(energy_dynamic_j=measured_dyn), name="lab")
    assert cal.measured_scope == "dynamic"
    out = predict_frame(model, grid, calibrations={"lab": cal})
    np.testing.assert_allclose(out["energy_dynamic_j"], measured_dyn, rtol=0.03)
    # the idle part is the prior's: the total moved by the dynamic difference, not by 1.3x
    np.testing.assert_allclose(out["energy_total_j"] - prior["energy_total_j"], measured_dyn - prior[
        "energy_dynamic_j"], rtol=0.1)
    with pytest.raises(ConfigError, match="one measured-energy column, not both"):
        fit_calibration(model, grid.assign(energy_dynamic_j=1.0, energy_total_j=2.0), name="lab")
    with pytest.raises(ConfigError, match=r"^column 'energy_total_j' is missing: expected the predictor's input "
                                          r"columns .* plus energy_total_j .* or energy_dynamic_j"):
        fit_calibration(model, grid, name="lab")
    with pytest.raises(ConfigError, match=r"^columns 'steps', 'batch_size' are missing: expected the predictor's"):
        fit_calibration(model, grid.drop(columns=["steps", "batch_size"]).assign(energy_total_j=1.0), name="lab")
