"""The MLflow plugins, reached through MLflow's own registries (entry points of the installed package)."""

from __future__ import annotations

import pytest

from mlflow_energy import schema


def _require_installed_entry_points() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="mlflow.run_context_provider")}
    if "mlflow-energy" not in names:
        pytest.skip("mlflow-energy's entry points are not installed: pip install -e .")


def test_every_fluent_run_gets_machine_tags(tracking_uri) -> None:
    _require_installed_entry_points()
    import mlflow

    with mlflow.start_run() as run:
        pass
    tags = mlflow.get_run(run.info.run_id).data.tags
    assert tags[schema.T_ENERGY_SOURCE] in ("zeus:nvml", "zeus:rapl", "estimate:cpu-tdp")
    assert tags[schema.T_HARDWARE]


def test_registry_resolves_the_tags_and_the_env_var_opts_out(monkeypatch) -> None:
    _require_installed_entry_points()
    from mlflow.tracking.context.registry import resolve_tags

    assert schema.T_ENERGY_SOURCE in resolve_tags()
    assert resolve_tags({schema.T_HARDWARE: "mine"})[schema.T_HARDWARE] == "mine"  # your tags win
    monkeypatch.setenv("MLFLOW_ENERGY_RUN_CONTEXT", "false")
    assert schema.T_ENERGY_SOURCE not in resolve_tags()


def test_energy_evaluator_through_mlflow_evaluate(tracking_uri) -> None:
    _require_installed_entry_points()
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry

    assert _model_evaluation_registry.is_registered("energy")

    class Square(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.asarray(model_input["x"], dtype=float) ** 2

    data = pd.DataFrame({"x": np.arange(200.0), "y": np.arange(200.0) ** 2})
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="square", python_model=Square())
        result = mlflow.models.evaluate(info.model_uri, data, targets="y", model_type="regressor",
                                        evaluators=["default", "energy"])
    assert result.metrics["energy/predict_j"] >= 0 and result.metrics["time/predict_s"] > 0
    assert result.metrics["energy/predict_per_row_j"] == pytest.approx(result.metrics["energy/predict_j"] / 200)
    assert "mean_squared_error" in result.metrics  # the default evaluator ran too
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.metrics["time/predict_s"] > 0 and logged.tags[schema.T_ENERGY_SOURCE]
