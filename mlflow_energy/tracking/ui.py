"""How the MLflow UI opens our experiments: on the runs table, with the energy columns.

MLflow 3.17's UI opens an experiment by its *workflow type*, not by the experiment: the
``workflowType`` query parameter of the address if there is one, else the browser's local storage
(``mlflow.workflowType_v1``), else ``genai``. A browser that never switched to "Model training"
therefore opens ``#/experiments/<id>`` on the GenAI "Overview" (traces), whatever the experiment's
tags say. The address that lands on the runs table for everyone is
``#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=energy``:
:func:`energy_view_url` builds it, and every address mlflow-energy prints or documents is one.

Two experiment tags, set when mlflow-energy creates an experiment (:func:`experiment_tags`):

``mlflow.experimentKind = custom_model_development``
    the experiment's kind (the UI's ``ExperimentKind`` enum), read where the UI's workflow switch
    is off; with the switch (MLflow 3.17's default) the ``workflowType`` above decides.
``mlflow.sharedViewState.energy``
    a saved runs-table view (the UI's "share view" format: selected columns as JSON): energy and
    time per image, the search's best energy and saving, the sweep summaries, the config params. Runs stay in the default
    order (newest first, children folded under their sweep or search parent), so the parent
    row with its summary metrics is what one sees first.
    Open it with :func:`energy_view_url`.

Example:
    >>> energy_view_url("http://127.0.0.1:5000", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=energy'
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


#: The UI's workflow type for classic ML (its ``WorkflowType.MACHINE_LEARNING``): runs, models, registry.
WORKFLOW_ML = "machine_learning"


def energy_view_path(experiment_id: str) -> str:
    """The UI route (after the host) of ``experiment_id``'s runs table in the energy view, ML workflow."""
    return f"/#/experiments/{experiment_id}/runs?workflowType={WORKFLOW_ML}&viewStateShareKey={schema.SHARED_VIEW_ENERGY}"


def energy_view_url(ui_url: str, experiment_id: str) -> str:
    """The UI address that opens ``experiment_id``'s runs in the energy view, in a fresh browser too."""
    return ui_url.rstrip("/") + energy_view_path(experiment_id)
