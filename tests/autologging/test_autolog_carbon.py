"""autolog(carbon_intensity=..., region=...): each autologged call carries its carbon, per step never 0 J."""

from __future__ import annotations

import mlflow
import pytest

import mlflow_energy
from mlflow_energy import schema


@pytest.fixture(scope="module")
def sd_pipe():
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    return build_pipeline(InferenceConfig(model="tiny-sd2").validate())


def test_autolog_logs_carbon_at_the_given_region(tracking_uri, sd_pipe):
    from mlflow_energy.carbon import grid_intensity

    mlflow.set_experiment("autolog-carbon")
    try:
        mlflow_energy.autolog(region="FRA", log_images=False)
        sd_pipe("a red bicycle", num_inference_steps=3, height=32, width=32)
    finally:
        mlflow_energy.autolog(disable=True)
    mlflow_energy.flush()  # autologged calls are logged by a background thread
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    g = grid_intensity("FRA").g_per_kwh
    assert float(run.data.tags[schema.T_CARBON_INTENSITY]) == pytest.approx(g)
    assert run.data.tags[schema.T_CARBON_SOURCE].startswith("FRA: ")
    m = run.data.metrics
    assert m[schema.M_CARBON_CO2E] == pytest.approx(m[schema.M_ENERGY_TOTAL] / 3.6e6 * g, rel=1e-6)
    steps = mlflow.MlflowClient().get_metric_history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)
    assert len(steps) == 3 and all(s.value > 0 for s in steps)
