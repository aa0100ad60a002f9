"""How the MLflow UI opens our experiments: on the runs table, with the energy columns.

Two experiment tags, set when mlflow-energy creates an experiment:

``mlflow.experimentKind = custom_model_development``
    MLflow 3.17 opens an experiment without this tag on the GenAI overview (traces); with it,
    on the runs table (the values are the UI's ``ExperimentKind`` enum).
``mlflow.sharedViewState.energy``
    a saved runs-table view (the UI's "share view" format: selected columns and sort order as
    JSON): energy, time and FLOPs columns, sweep summaries, the config params, cheapest first.
    Open it with :func:`energy_view_url`.

Example:
    >>> energy_view_url("http://127.0.0.1:5000", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=energy'
"""

from __future__ import annotations

import json

from mlflow_energy import schema

#: Metric columns of the energy view, in order.
VIEW_METRICS: tuple[str, ...] = (
    schema.M_ENERGY_TOTAL, schema.M_ENERGY_DENOISE, schema.M_TIME_TOTAL, schema.M_FLOPS_TOTAL,
    schema.M_SWEEP_ENERGY_MIN, schema.M_SWEEP_ENERGY_MEDIAN, schema.M_SWEEP_DONE,
)
#: Param columns of the energy view.
VIEW_PARAMS: tuple[str, ...] = (schema.P_MODEL, schema.P_HEIGHT, schema.P_STEPS, schema.P_PRECISION)


def energy_view_state() -> str:
    """The saved view as the UI reads it (JSON)."""
    columns = [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"params.`{p}`" for p in VIEW_PARAMS]
    return json.dumps({
        "selectedColumns": columns,
        "orderByKey": f"metrics.`{schema.M_ENERGY_TOTAL}`",
        "orderByAsc": True,
    }, separators=(",", ":"))


def experiment_tags() -> dict[str, str]:
    """Tags for a new experiment: classic ML kind and the energy view."""
    return {
        schema.T_EXPERIMENT_KIND: schema.EXPERIMENT_KIND_ML,
        schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY: energy_view_state(),
    }


def energy_view_url(ui_url: str, experiment_id: str) -> str:
    """The UI address that opens ``experiment_id``'s runs in the energy view."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={schema.SHARED_VIEW_ENERGY}"
