"""The registered pyfunc predictor: contract columns, intervals, carbon, clear errors, fresh-process load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mlflow_energy import schema

sys.path.insert(0, str(Path(__file__).parents[1] / "fit"))
from test_fit import synthetic_runs  # noqa: E402

NAME = "energy-test"


def register_synthetic(tmp_dir: Path, name: str = NAME) -> str:
    """Fit synthetic runs, register the model in a SQLite store under ``tmp_dir``; returns the URI."""
    from mlflow_energy.fit import fit_energy_model, log_fit, normalise_runs
    from mlflow_energy.predict import log_and_register

    uri = f"sqlite:///{tmp_dir}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("fit")
    result = fit_energy_model(normalise_runs(synthetic_runs(sizes=(32, 64), steps=(1, 2, 4, 8))), n_boot=20,
                              max_folds=6)
    with mlflow.start_run():
        log_fit(result, experiment="fit", allow_mixed=False, plots=False)
        log_and_register(result, name)
    return uri


def registered_store(tmp_dir: Path, name: str = NAME) -> str:
    """:func:`register_synthetic` with ``tmp_dir`` as the working directory (the artifacts land
    there), then the caller's working directory and MLflow's default tracking URI back; for
    fixtures that hand the store to a server process."""
    old = os.getcwd()
    os.chdir(tmp_dir)
    try:
        return register_synthetic(tmp_dir, name)
    finally:
        os.chdir(old)
        mlflow.set_tracking_uri("")


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    old = os.getcwd()
    os.chdir(tmp)
    try:
        uri = register_synthetic(tmp)
        yield uri, mlflow.pyfunc.load_model(f"models:/{NAME}@{schema.REGISTERED_ALIAS_CHAMPION}")
    finally:
        os.chdir(old)
        mlflow.set_tracking_uri("")


def row(**changes):
    base = {"model": "tiny-sd2", "height": 48, "width": 48, "steps": 4, "guidance_scale": 7.5, "precision": "fp16",
            "batch_size": 1, "hardware": "NVIDIA H100 80GB HBM3"}
    base.update(changes)
    return base


def test_outputs_follow_the_contract_and_the_interval_holds_the_point(registered):
    _, model = registered
    out = model.predict(pd.DataFrame([row(), row(model="tiny-sdxl", steps=8, hardware="H100-SXM5-80GB")]))
    assert list(out.columns) == list(schema.PREDICTOR_OUTPUTS)
    assert (out["energy_total_j_low"] < out["energy_total_j"]).all()
    assert (out["energy_total_j"] < out["energy_total_j_high"]).all()
    phases = out[["energy_text_encode_j", "energy_denoise_j", "energy_decode_j"]].sum(axis=1)
    np.testing.assert_allclose(phases, out["energy_total_j"], rtol=1e-9)
    np.testing.assert_allclose(out["energy_total_wh"], out["energy_total_j"] / 3600)
    np.testing.assert_allclose(out["co2e_g"], out["energy_total_j"] / 3.6e6 * 475.0)


def test_more_steps_cost_more_and_hardware_names_are_one_gpu(registered):
    _, model = registered
    out = model.predict(pd.DataFrame([row(steps=2), row(steps=8), row(hardware="H100"), row(hardware="H100-SXM5-80GB")]))
    assert out["energy_denoise_j"][1] > 2 * out["energy_denoise_j"][0]
    assert out["energy_total_j"][2] == pytest.approx(out["energy_total_j"][3])


def test_predictions_are_close_to_the_synthetic_law(registered):
    _, model = registered
    # a size and a step count between the measured ones (the batch size is one that was measured:
    # the corrector's trees give a batch size between measured ones the correction of a neighbour)
    truth = synthetic_runs(families=("tiny-sd2",), hardware=("NVIDIA A100-SXM4-40GB",), sizes=(48,), steps=(3,),
                           batches=(4,), noise=0.0)
    out = model.predict(pd.DataFrame([row(hardware="NVIDIA A100-SXM4-40GB", steps=3, batch_size=4)]))
    assert out["energy_total_j"][0] == pytest.approx(truth[schema.M_ENERGY_TOTAL][0], rel=0.15)
    assert truth[schema.M_ENERGY_TOTAL][0] < out["energy_total_j_high"][0]
    assert truth[schema.M_ENERGY_TOTAL][0] > out["energy_total_j_low"][0]


def test_carbon_intensity_column_is_used(registered):
    _, model = registered
    out = model.predict(pd.DataFrame([row(carbon_intensity_g_per_kwh=50.0), row(carbon_intensity_g_per_kwh=np.nan)]))
    assert out["co2e_g"][0] == pytest.approx(out["energy_total_j"][0] / 3.6e6 * 50.0)
    assert out["co2e_g"][1] == pytest.approx(out["energy_total_j"][1] / 3.6e6 * 475.0)


def test_unseen_hardware_uses_the_spec_table_or_caller_specs_with_a_wider_interval(registered):
    _, model = registered
    known = model.predict(pd.DataFrame([row(setup="zeus:nvml")]))
    l40s = model.predict(pd.DataFrame([row(hardware="NVIDIA L40S", setup="zeus:nvml")]))
    width = lambda o: o["energy_total_j_high"][0] / o["energy_total_j_low"][0]  # noqa: E731
    assert width(l40s) > width(known)
    custom = model.predict(pd.DataFrame([row(hardware="Acme X1", hardware_tdp_w=250.0, hardware_tflops=200.0,
                                             hardware_mem_bw_gb_s=1000.0)]))
    assert custom["energy_total_j"][0] > 0


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"model": "kandinsky-3"}, "model='kandinsky-3'"),
        ({"steps": -2}, "steps=-2"),
        ({"height": 50}, "height=50"),
        ({"precision": "int4"}, "precision='int4'"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"hardware": "Acme X1"}, "hardware_tdp_w"),
        ({"carbon_intensity_g_per_kwh": -1.0}, "carbon_intensity_g_per_kwh=-1.0"),
        ({"carbon_intensity_g_per_kwh": 1e308}, "carbon_intensity_g_per_kwh=1e+308 is not allowed: expected a number "
                                                "from 0 to 3000"),
        ({"hardware": "Acme X1", "hardware_tdp_w": 1e308, "hardware_tflops": 100.0, "hardware_mem_bw_gb_s": 900.0},
         "hardware_tdp_w=1e+308 is not allowed: expected a number > 0 and at most 5000 (W)"),
        ({"hardware": "Acme X1", "hardware_tdp_w": 300.0, "hardware_tflops": -1.0, "hardware_mem_bw_gb_s": 900.0},
         "hardware_tflops=-1.0"),
        ({"height": 8192, "width": 8192, "steps": 1000, "batch_size": 1}, "height=8192"),
    ],
)
def test_bad_input_raises_an_invalid_parameter_error_naming_the_problem(registered, changes, needle):
    _, model = registered
    with pytest.raises(MlflowException) as info:
        model.predict(pd.DataFrame([row(), row(**changes)]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert needle in info.value.message and "row 1" in info.value.message


def test_missing_column_is_refused_by_the_signature(registered):
    _, model = registered
    bad = pd.DataFrame([row()]).drop(columns=["steps"])
    with pytest.raises(MlflowException, match="steps"):
        model.predict(bad)


def test_loads_in_a_fresh_process_outside_the_repository(registered, tmp_path):
    uri, model = registered
    code = (
        "import json, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        f"print(json.dumps(m.predict(pd.DataFrame([{row()!r}])).iloc[0].to_dict()))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    here = model.predict(pd.DataFrame([row()])).iloc[0]
    assert got["energy_total_j"] == pytest.approx(here["energy_total_j"])


def test_registered_model_has_signature_example_and_requirements(registered):
    uri, _ = registered
    client = mlflow.MlflowClient(uri)
    mv = client.get_model_version_by_alias(NAME, schema.REGISTERED_ALIAS_CHAMPION)
    info = mlflow.models.get_model_info(f"models:/{NAME}/{mv.version}")
    inputs = {c.name: c.required for c in info.signature.inputs.inputs}
    assert all(inputs[c] for c in schema.PREDICTOR_INPUTS)
    assert inputs["carbon_intensity_g_per_kwh"] is False
    assert [c.name for c in info.signature.outputs.inputs] == list(schema.PREDICTOR_OUTPUTS)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{mv.version}"))
    reqs = (local / "requirements.txt").read_text()
    assert "mlflow-energy==" in reqs and "lightgbm==" in reqs
    assert (local / "input_example.json").is_file()


def test_any_int_or_float_dtype_is_accepted_where_the_value_fits(registered):
    _, model = registered
    ints = pd.DataFrame([row(guidance_scale=7, steps=4)])  # int64 guidance
    floats = pd.DataFrame([row(guidance_scale=7.0, steps=4.0, height=48.0, width=48.0, batch_size=1.0)])
    small = pd.DataFrame([row()]).astype({"steps": "int32", "height": "int16", "width": "uint16",
                                          "guidance_scale": "float32"})
    ref = model.predict(ints)["energy_total_j"][0]
    assert model.predict(floats)["energy_total_j"][0] == pytest.approx(ref)
    assert model.predict(small)["energy_total_j"][0] == pytest.approx(ref)


@pytest.mark.parametrize(("changes", "needle"), [
    ({"steps": 4.5}, "steps=4.5"),
    ({"batch_size": 1.25}, "batch_size=1.25"),
    ({"steps": True}, "steps=True"),
    ({"guidance_scale": True}, "guidance_scale=True"),
    ({"height": "48"}, "height='48'"),
])
def test_non_integral_boolean_or_text_numbers_are_refused_naming_the_column(registered, changes, needle):
    _, model = registered
    with pytest.raises(MlflowException) as info:
        model.predict(pd.DataFrame([row(**changes)]))
    assert needle in info.value.message and "row 0" in info.value.message


def test_outputs_say_the_interval_level_the_law_only_estimate_and_the_scope(registered):
    _, model = registered
    out = model.predict(pd.DataFrame([row(setup="zeus:nvml"), row(hardware="NVIDIA L40S", setup="zeus:nvml"), row()]))
    # a training source: the level of its family and GPU; no setup: an unseen setup, the widest interval
    assert list(out["interval_level"]) == ["known", "unseen_hardware", "unseen_setup"]
    assert (out["energy_total_j_law"] > 0).all()
    assert set(out["energy_scope"]) == {schema.SCOPE_TOTAL}


def test_predictions_scale_exactly_with_steps_like_the_flops(registered):
    from mlflow_energy.flops import flops_frame

    _, model = registered
    out = model.predict(pd.DataFrame([row(steps=3), row(steps=5)]))
    fl = flops_frame(pd.DataFrame([row(steps=3), row(steps=5)]))
    ratio = out["energy_total_j"][1] / out["energy_total_j"][0]
    assert ratio == pytest.approx(fl["flops_total"][1] / fl["flops_total"][0], rel=1e-9)


def test_loading_and_predicting_imports_neither_torch_diffusers_nor_transformers(registered, tmp_path):
    uri, _ = registered
    code = (
        "import sys, mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        f"m.predict(pd.DataFrame([{row()!r}]))\n"
        "print(sorted(k for k in ('torch', 'diffusers', 'transformers') if k in sys.modules))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_interval_level_param_picks_one_calibration_for_every_row(registered):
    _, model = registered
    auto = model.predict(pd.DataFrame([row(setup="zeus:nvml")]))
    wide = model.predict(pd.DataFrame([row(setup="zeus:nvml")]), params={"interval_level": "unseen_source"})
    assert wide["interval_level"][0] == "unseen_source" and auto["interval_level"][0] == "known"
    assert wide["energy_total_j"][0] == pytest.approx(auto["energy_total_j"][0])
    ratio = lambda o: o["energy_total_j_high"][0] / o["energy_total_j_low"][0]  # noqa: E731
    assert ratio(wide) > ratio(auto)
    with pytest.raises(MlflowException, match="interval_level='sometimes'"):
        model.predict(pd.DataFrame([row()]), params={"interval_level": "sometimes"})


def test_the_pyfunc_answer_carries_no_per_row_attrs(registered):
    """pandas deep-copies ``attrs`` into every frame or column derived from the answer (each column a
    caller reads, the server's JSON): the per-row arrays kept for calibration stay in predict_frame."""
    _, model = registered
    out = model.predict(pd.DataFrame([row(), row(steps=8)]))
    assert out.attrs == {}
    assert out["energy_total_j"].attrs == {}


def test_a_large_request_is_predicted_once_per_distinct_row(registered, monkeypatch):
    from mlflow_energy.fit import EnergyModel
    from mlflow_energy.predict.frame import DISTINCT_MIN_ROWS

    _, model = registered
    distinct = pd.DataFrame([row(), row(steps=8), row(model="tiny-sdxl", hardware="H100"), row(guidance_scale=5.0)])
    alone = model.predict(distinct)
    law_rows = []
    real = EnergyModel.log_predict_both

    def counting(self, frame):
        law_rows.append(len(frame))
        return real(self, frame)

    monkeypatch.setattr(EnergyModel, "log_predict_both", counting)
    pick = np.random.default_rng(0).integers(0, len(distinct), 2 * DISTINCT_MIN_ROWS)
    out = model.predict(distinct.iloc[pick].reset_index(drop=True))
    assert law_rows and set(law_rows) == {len(distinct)}  # the law (energy and time) ran on 4 rows, not 2,000
    pd.testing.assert_frame_equal(out, alone.iloc[pick].reset_index(drop=True), check_exact=True)
