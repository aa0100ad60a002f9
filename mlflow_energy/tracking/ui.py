"""How the MLflow UI opens our experiments: on the runs table, in a view that reads at a glance.

MLflow 3.17's UI opens an experiment by its *workflow type*, not by the experiment: the
``workflowType`` query parameter of the address if there is one, else the browser's local storage
(``mlflow.workflowType_v1``), else ``genai``. A browser that never switched to "Model training"
therefore opens ``#/experiments/<id>`` on the GenAI "Overview" (traces), whatever the experiment's
tags say. The address that lands on the runs table for everyone is
``#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=energy``:
:func:`energy_view_url` builds it, and every address mlflow-energy prints or documents is one.

Two experiment tags, set when mlflow-energy creates an experiment (:func:`experiment_tags`; a
sweep sets the view again when it ends, :func:`ensure_energy_view`, so older experiments get it):

``mlflow.experimentKind = custom_model_development``
    the experiment's kind (the UI's ``ExperimentKind`` enum), read where the UI's workflow switch
    is off; with the switch (MLflow 3.17's default) the ``workflowType`` above decides.
``mlflow.sharedViewState.energy``
    a saved runs-table view (the UI's "share view" format, JSON; :func:`energy_view_state`):

    - the columns (``selectedColumns``, ``columnOrder``): the short display metrics first
      (``J/img``, ``s/img`` of each config and of a measurement of its own; ``configs``, ``min J/img``,
      ``median J/img`` of a sweep; ``best J/img``, ``saved pct`` of a search; three significant
      digits, see ``schema.M_VIEW_*``), then the full-precision ``energy/total_j``
      (measurements outside a sweep, search trials) and the search's ``search/energy_saved_frac``,
      then the config params ``model``, ``height``, ``steps``;
    - widths (``columnWidths``) that fit each header, since the header is the metric key;
    - sorted by ``energy/total_j``, cheapest first (``orderByKey``): MLflow folds child runs under
      their parent only in its default order (newest first), so this sort lists a sweep's configs
      as rows of their own, comparable without expanding anything; runs without that metric
      (sweep, search and fit parents) come after them. A shared view cannot expand rows itself:
      MLflow 3.17 drops ``runsExpanded`` from it;
    - filtered (``searchFilter``) to leave out search trials: in predict mode they are predictions,
      not measurements, and the search run's ``search/trials.csv`` lists them (clear the filter to
      see them); and superseded runs (``schema.T_SUPERSEDED``: a worker's late run of a config whose
      claim another worker took over), so each config is one row, as fit counts it;
    - every listed run in the chart view (``runsHiddenMode``), whose first chart is then a bar per
      config of ``J/img``: :func:`energy_chart_path`.

    Open it with :func:`energy_view_url`.

Example:
    >>> energy_view_url("http://127.0.0.1:5000", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=energy'
    >>> rounded(22.443359375), rounded(0.0607266), rounded(1234.5)
    (22.4, 0.0607, 1230.0)
"""

from __future__ import annotations

import json
from typing import Any

from mlflow_energy import schema

#: Metric columns of the energy view, in order: display metrics (short keys, rounded), then full precision.
VIEW_METRICS: tuple[str, ...] = (
    schema.M_VIEW_ENERGY, schema.M_VIEW_TIME, schema.M_VIEW_CONFIGS, schema.M_VIEW_ENERGY_MIN,
    schema.M_VIEW_ENERGY_MEDIAN, schema.M_VIEW_BEST_ENERGY, schema.M_VIEW_SAVED_PCT, schema.M_ENERGY_TOTAL,
    schema.M_SEARCH_SAVED_FRAC,
)
#: Param columns of the energy view.
VIEW_PARAMS: tuple[str, ...] = (schema.P_MODEL, schema.P_HEIGHT, schema.P_STEPS)
#: The view's sort: energy per image, ascending (a flat list of configs, see the module doc).
VIEW_ORDER_BY = schema.M_ENERGY_TOTAL
#: The view's filter: no search trials (predicted configs in predict mode; the search run lists them), no
#: superseded runs (a worker's late run of a config another worker took over: the taker's run counts).
#: ``IS NULL`` keeps the runs without the tag (``!= 'true'`` would drop them: a tag filter joins on the tag).
VIEW_FILTER = f"tags.`{schema.T_KIND}` != '{schema.KIND_TRIAL}' AND tags.`{schema.T_SUPERSEDED}` IS NULL"
#: MLflow's own column ids before ours (run name, created, duration), kept in its order.
_FIXED_COLUMNS = ("attributes.`Run Name`", "runDateAndNestInfo", "duration")
#: Pixels: run names such as ``sd3.5-medium-1024x1024-28st-g4.5-fp16-b1`` are long.
RUN_NAME_WIDTH = 280
#: Pixels for a param whose values are longer than its name (``tiny-flux.1-schnell``).
_VALUE_WIDTHS = {schema.P_MODEL: 150}


def column_id(kind: str, key: str) -> str:
    """The UI's id of a ``metrics`` or ``params`` column (its canonical sort key): ``metrics.`J/img```."""
    return f"{kind}.`{key}`"


def column_width(header: str) -> int:
    """Pixels a column needs for its whole header (about 8 px a character in the UI's header font,
    plus padding and the sort arrow); at least enough for a three-digit value."""
    return max(80, 8 * len(header) + 44)


def view_columns() -> list[str]:
    """The ids of the view's metric and param columns, in order."""
    return [column_id("metrics", m) for m in VIEW_METRICS] + [column_id("params", p) for p in VIEW_PARAMS]


def energy_view_state() -> str:
    """The saved view as the UI reads it (JSON)."""
    columns = view_columns()
    widths = {column_id("metrics", m): column_width(m) for m in VIEW_METRICS}
    widths.update({column_id("params", p): max(column_width(p), _VALUE_WIDTHS.get(p, 0)) for p in VIEW_PARAMS})
    widths[_FIXED_COLUMNS[0]] = RUN_NAME_WIDTH
    state = {
        "selectedColumns": columns, "columnOrder": [*_FIXED_COLUMNS, *columns], "columnWidths": widths,
        "orderByKey": column_id("metrics", VIEW_ORDER_BY), "orderByAsc": True, "searchFilter": VIEW_FILTER,
        "runsHiddenMode": "SHOW_ALL",  # the chart view plots every listed run, not the first 10
    }
    return json.dumps(state, separators=(",", ":"))


def rounded(value: float) -> float:
    """``value`` to three significant digits, as the display metrics and run descriptions show it."""
    return float(f"{float(value):.3g}")


def experiment_tags() -> dict[str, str]:
    """Tags for a new experiment: classic ML kind and the energy view."""
    return {
        schema.T_EXPERIMENT_KIND: schema.EXPERIMENT_KIND_ML,
        schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY: energy_view_state(),
    }


def ensure_energy_view(client: Any, experiment_id: str) -> None:
    """Set the experiment's energy view (and kind) where it is missing or from an older version."""
    tags = client.get_experiment(experiment_id).tags
    for key, value in experiment_tags().items():
        if tags.get(key) != value:
            client.set_experiment_tag(experiment_id, key, value)


#: The UI's workflow type for classic ML (its ``WorkflowType.MACHINE_LEARNING``): runs, models, registry.
WORKFLOW_ML = "machine_learning"


def energy_view_path(experiment_id: str) -> str:
    """The UI route (after the host) of ``experiment_id``'s runs table in the energy view, ML workflow."""
    return f"/#/experiments/{experiment_id}/runs?workflowType={WORKFLOW_ML}&viewStateShareKey={schema.SHARED_VIEW_ENERGY}"


def energy_chart_path(experiment_id: str) -> str:
    """The same view as charts (MLflow's chart view: a bar chart per metric, one bar per run)."""
    return energy_view_path(experiment_id) + "&compareRunsMode=CHART"


def energy_view_url(ui_url: str, experiment_id: str) -> str:
    """The UI address that opens ``experiment_id``'s runs in the energy view, in a fresh browser too."""
    return ui_url.rstrip("/") + energy_view_path(experiment_id)
