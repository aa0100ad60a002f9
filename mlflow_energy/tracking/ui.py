"""How the MLflow UI opens our experiments: on the runs table, with the energy columns.

Two experiment tags, set when mlflow-energy creates an experiment:

``mlflow.experimentKind = custom_model_development``
    MLflow 3.17 opens an experiment without this tag on the GenAI overview (traces); with it,
    on the runs table (the values are the UI's ``ExperimentKind`` enum).
``mlflow.sharedViewState.energy``
    a saved runs-table view (the UI's "share view" format: selected columns as JSON): energy and
    time per image, the search's best energy and saving, the sweep summaries, the config params. Runs stay in the default
    order (newest first, children folded under their sweep or search parent), so the parent
    row with its summary metrics is what one sees first.
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
    schema.best_metric(schema.M_ENERGY_TOTAL), schema.M_ENERGY_TOTAL, schema.M_SEARCH_SAVED_FRAC,
    schema.M_SWEEP_DONE, schema.M_SWEEP_ENERGY_MEDIAN, schema.M_SWEEP_ENERGY_MIN, schema.M_TIME_TOTAL,
)
#: Param columns of the energy view.
VIEW_PARAMS: tuple[str, ...] = (schema.P_MODEL, schema.P_HEIGHT, schema.P_STEPS)


def energy_view_state() -> str:
    """The saved view as the UI reads it (JSON)."""
    columns = [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"params.`{p}`" for p in VIEW_PARAMS]
    return json.dumps({"selectedColumns": columns}, separators=(",", ":"))


def experiment_tags() -> dict[str, str]:
    """Tags for a new experiment: classic ML kind and the energy view."""
    return {
        schema.T_EXPERIMENT_KIND: schema.EXPERIMENT_KIND_ML,
        schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY: energy_view_state(),
    }


def energy_view_url(ui_url: str, experiment_id: str) -> str:
    """The UI address that opens ``experiment_id``'s runs in the energy view."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={schema.SHARED_VIEW_ENERGY}"
