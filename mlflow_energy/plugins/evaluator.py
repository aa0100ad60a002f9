"""An MLflow model evaluator named ``energy``: the energy and time of a model's predictions.

``mlflow.models.evaluate(model, data, evaluators=["default", "energy"], ...)`` (or
``evaluators="energy"`` alone) runs ``model.predict`` on the evaluation data inside one meter
window and logs to the evaluation run, besides what the other evaluators log:

``energy/predict_j``, ``energy/predict_per_row_j``, ``time/predict_s``, ``power/avg_w``, and the
``energy_source`` and ``hardware`` tags. ``evaluator_config={"device": "cuda"}`` measures a GPU
(default: ``cpu``). With precomputed predictions (no model) there is nothing to measure and the
evaluator declines.

Example:
    >>> import mlflow
    >>> result = mlflow.models.evaluate(model_uri, data, targets="y", model_type="regressor",
    ...                                 evaluators=["default", "energy"])  # doctest: +SKIP
    >>> result.metrics["energy/predict_per_row_j"]  # doctest: +SKIP
    0.0021
"""

from __future__ import annotations

from typing import Any

from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from mlflow_energy import schema

#: Metric keys this evaluator logs.
M_PREDICT_J = "energy/predict_j"
M_PREDICT_PER_ROW_J = "energy/predict_per_row_j"
M_PREDICT_S = "time/predict_s"


class EnergyEvaluator(ModelEvaluator):
    """Measures ``model.predict`` over the evaluation data with the project's meters."""

    @classmethod
    def can_evaluate(cls, *, model_type: Any, evaluator_config: Any, **kwargs: Any) -> bool:
        return True

    def evaluate(
        self,
        *,
        model_type: Any,
        dataset: Any,
        run_id: str,
        evaluator_config: dict | None,
        model: Any = None,
        extra_metrics: Any = None,
        custom_artifacts: Any = None,
        predictions: Any = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, RunTag

        from mlflow_energy.measure.meters import auto_meter

        if model is None:
            return EvaluationResult(metrics={}, artifacts={}, run_id=run_id)
        config = dict(evaluator_config or {})
        meter = config.get("meter") or auto_meter(str(config.get("device", "cpu")))
        features = dataset.features_data
        rows = max(1, len(features))
        try:
            meter.begin_window("evaluate-predict")
            model.predict(features)
            energy, seconds = meter.end_window("evaluate-predict")
        finally:
            if "meter" not in config:
                meter.close()
        metrics = {M_PREDICT_J: energy, M_PREDICT_PER_ROW_J: energy / rows, M_PREDICT_S: seconds}
        if seconds > 0:
            metrics[schema.M_POWER_AVG] = energy / seconds
        MlflowClient().log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()],
            tags=[RunTag(schema.T_ENERGY_SOURCE, meter.source), RunTag(schema.T_HARDWARE, meter.hardware)],
        )
        return EvaluationResult(metrics=metrics, artifacts={}, run_id=run_id)
