"""The MLflow UI in a real browser, as a first-time user opens it: the address we print lands on the runs table.

Starts ``mlflow server`` (loopback, free port, one worker, job execution off) over a small
SQLite store, loads the address ``mlflow-energy sweep`` prints in headless Chromium with a new,
empty profile (nothing set in local storage), and reads the rendered page: the runs table with our
run names and the energy columns, not MLflow's GenAI overview; headers that fit their columns,
rounded values, a sweep's configs as rows of their own. The browser tests are skipped where
Chromium is not installed (``.ci/run`` installs it); the view's data is also checked without one.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mlflow_energy import schema

ROOT = Path(__file__).resolve().parents[1]


def _screenshots():
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shots = _screenshots()
browser = pytest.mark.skipif(shots.chromium() is None, reason="Chromium is not installed (apt-get install -y chromium)")
SWEEP = {
    "name": "ui-sweep", "device": "cpu", "repeats": 1, "warmup": 0, "protocol": {"target": 0}, "idle_seconds": 0.1,
    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1, 2], "guidance_scale": [1.0]},
}


def _sweep(experiment: str):
    """Run the two-config sweep; its parent and children as MLflow returns them."""
    from mlflow import MlflowClient

    from mlflow_energy.sweep import SweepSpec, run_sweep

    result = run_sweep(SweepSpec.from_dict(SWEEP), experiment=experiment, progress=False)
    client = MlflowClient()
    children = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  f"tags.`{schema.T_PARENT_RUN_ID}` = '{result.parent_run_id}'")
    return client.get_run(result.parent_run_id), children


def _sig_digits(text: str) -> int:
    return len(text.replace("-", "").replace(".", "").lstrip("0").split("e")[0])


def test_sweep_summary_logs_rounded_short_display_metrics_and_a_flat_sorted_view(tracking_uri: str) -> None:
    from mlflow import MlflowClient

    from mlflow_energy.sweep.summary import log_summary
    from mlflow_energy.tracking.runs import experiment_id
    from mlflow_energy.tracking.ui import column_width, rounded

    client = MlflowClient()
    exp = experiment_id("ui-data")  # created as mlflow-energy creates experiments
    client.set_experiment_tag(exp, schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY, "{}")  # an older view
    parent = client.create_run(exp, run_name="sweep").info.run_id
    rows = []
    for name, energy, seconds in (("b-config", 22.443359375, 0.0607266), ("a-config", 1234.5678, 3.14159)):
        child = client.create_run(exp, run_name=name, tags={schema.T_PARENT_RUN_ID: parent}).info.run_id
        client.log_metric(child, schema.M_ENERGY_TOTAL, energy)
        client.log_metric(child, schema.M_TIME_TOTAL, seconds)
        rows.append({"run_name": name, "model": "tiny-sd2", "height": 32, "width": 32, "steps": 1, "precision": "fp32",
                     "batch_size": 1, "energy_total_j": energy, "time_total_s": seconds, "flops_total": 1e9,
                     "energy_source": "estimate:cpu-tdp"})
    log_summary(parent, rows)
    shown = {c.info.run_name: c.data.metrics for c in client.search_runs([exp]) if c.info.run_id != parent}
    # each config: energy and time per image, three significant digits, next to the full precision
    assert shown["b-config"][schema.M_VIEW_ENERGY] == 22.4 and shown["b-config"][schema.M_VIEW_TIME] == 0.0607
    assert shown["a-config"][schema.M_VIEW_ENERGY] == 1230 and shown["a-config"][schema.M_ENERGY_TOTAL] == 1234.5678
    run = client.get_run(parent)
    m = run.data.metrics
    assert m[schema.M_VIEW_CONFIGS] == 2 and m[schema.M_VIEW_ENERGY_MIN] == 22.4
    assert m[schema.M_VIEW_ENERGY_MEDIAN] == rounded((22.443359375 + 1234.5678) / 2) == 629
    assert m[schema.M_SWEEP_ENERGY_MIN] == 22.443359375  # the full-precision key stays as it is
    note = run.data.tags[schema.T_NOTE].splitlines()  # the description: a row per config, cheapest first
    assert note[4:6] == ["| b-config | 22.4 | 0.0607 |", "| a-config | 1.23e+03 | 3.14 |"]
    view = json.loads(client.get_experiment(exp).tags[schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY])
    # sorted by a metric, not MLflow's default start time: the UI lists child runs as rows of their own
    assert view["orderByKey"] == f"metrics.`{schema.M_ENERGY_TOTAL}`" and view["orderByAsc"] is True
    assert view["searchFilter"].startswith(f"tags.`{schema.T_KIND}` != '{schema.KIND_TRIAL}'")  # measured configs
    assert view["selectedColumns"][0] == f"metrics.`{schema.M_VIEW_ENERGY}`"
    assert set(view["selectedColumns"]) <= set(view["columnOrder"])
    assert view["runsHiddenMode"] == "SHOW_ALL"  # the chart view compares every config, not the first 10
    for col in view["selectedColumns"]:
        assert view["columnWidths"][col] >= column_width(col.split("`")[1]), col


def test_the_energy_view_lists_one_run_per_config_and_no_superseded_run(tracking_uri: str) -> None:
    """The view's own filter, as the UI sends it to the store: the current run of a config claimed twice,
    runs measured without claims and parents are listed; the superseded run and search trials are not."""
    from mlflow import MlflowClient

    from mlflow_energy.tracking.runs import experiment_id

    client = MlflowClient()
    exp = experiment_id("ui-superseded")
    runs = {
        "current": {schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_CONFIG_HASH: "h1", schema.T_CLAIM_TOKEN: "2"},
        "superseded": {schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_CONFIG_HASH: "h1", schema.T_CLAIM_TOKEN: "1",
                       schema.T_SUPERSEDED: "true"},
        "no-claims": {schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_CONFIG_HASH: "h2"},
        "sweep": {schema.T_KIND: schema.KIND_SWEEP},
        "trial": {schema.T_KIND: schema.KIND_TRIAL},
    }
    for name, tags in runs.items():
        client.create_run(exp, run_name=name, tags=tags)
    view = json.loads(client.get_experiment(exp).tags[schema.T_SHARED_VIEW_PREFIX + schema.SHARED_VIEW_ENERGY])
    listed = {r.info.run_name for r in client.search_runs([exp], filter_string=view["searchFilter"])}
    assert listed == {"current", "no-claims", "sweep"}


#: Waits for the runs table and returns, per header of the view's columns and per row's cell, its text
#: and whether the text is cut (wider than its box), as the user sees it.
TABLE_JS = """(() => {
  const want = %s;
  const rows = document.querySelectorAll('.ag-pinned-left-cols-container .ag-row');
  if (!rows.length) return null;
  window.__firstRows = window.__firstRows || Date.now();
  const heads = {};
  for (const h of document.querySelectorAll('.ag-header-cell[col-id]')) heads[h.getAttribute('col-id')] = h;
  if (!want.every(c => heads[c]) && Date.now() - window.__firstRows < 15000) return null;
  const cut = e => [e, ...e.querySelectorAll('*')].some(k => k.scrollWidth > k.clientWidth);
  const out = {heads: {}, rows: []};
  for (const c of want) {
    const label = heads[c] && heads[c].querySelector('[data-testid^="sort-header-"]');
    out.heads[c] = label ? {text: label.innerText.trim(), cut: cut(label.parentElement)} : null;
  }
  for (const r of rows) {
    const cells = {};
    for (const c of document.querySelectorAll(`.ag-row[row-id="${r.getAttribute('row-id')}"] .ag-cell[col-id]`))
      cells[c.getAttribute('col-id')] = {text: c.innerText.trim(), cut: cut(c)};
    out.rows.push({index: Number(r.getAttribute('row-index')), text: r.innerText, cells});
  }
  out.rows.sort((a, b) => a.index - b.index);
  return out;
})()"""


@pytest.mark.slow
@browser
def test_energy_view_reads_at_a_glance(tracking_uri: str, no_rapl, tmp_path: Path) -> None:
    from mlflow_energy.tracking import energy_view_url
    from mlflow_energy.tracking.ui import rounded, view_columns

    parent, children = _sweep("ui-glance")
    with shots.mlflow_server(Path(tracking_uri.removeprefix("sqlite:///"))) as url:
        page = energy_view_url(url, parent.info.experiment_id)
        # wide enough that the grid renders every column of the view
        seen = shots.evaluate(page, TABLE_JS % json.dumps(view_columns()), window="2800,1000")
    logged = {f"metrics.`{k}`" for r in (parent, *children) for k in r.data.metrics}
    logged |= {f"params.`{k}`" for r in (parent, *children) for k in r.data.params}
    columns = [col for col in view_columns() if col in logged]  # the UI shows no column that no run has
    assert len(columns) == len(view_columns()) - 3  # all but the search's saving, best J/img and saved pct
    for col in columns:  # every header whole: the metric key is the header
        head = seen["heads"][col]
        assert head is not None, f"no column {col} in the energy view"
        assert head["text"] == col.split("`")[1] and not head["cut"], f"header of {col} cut: {head}"
    # the sweep's configs are rows without expanding anything, cheapest first, then the parent
    names = [c.info.run_name for c in sorted(children, key=lambda c: c.data.metrics[schema.M_ENERGY_TOTAL])]
    listed = [next((n for n in (*names, parent.info.run_name) if n in row["text"]), None) for row in seen["rows"]]
    assert listed == [*names, parent.info.run_name], listed
    by_name = {c.info.run_name: c for c in children}
    for row, name in zip(seen["rows"], listed, strict=True):
        cells = {col: row["cells"][col] for col in columns}
        assert not [col for col, cell in cells.items() if cell["cut"]], f"{name}: a value cut: {cells}"
        shown = {col.split("`")[1]: cell["text"] for col, cell in cells.items() if cell["text"] not in ("", "-")}
        if name in by_name:  # a config: J and s per image, three significant digits
            m = by_name[name].data.metrics
            assert float(shown[schema.M_VIEW_ENERGY]) == rounded(m[schema.M_ENERGY_TOTAL])
            assert _sig_digits(shown[schema.M_VIEW_ENERGY]) <= 3 and _sig_digits(shown[schema.M_VIEW_TIME]) <= 3
        else:  # the sweep: its configs, min and median J per image, rounded
            assert shown[schema.M_VIEW_CONFIGS] == "2"
            for key in (schema.M_VIEW_ENERGY_MIN, schema.M_VIEW_ENERGY_MEDIAN):
                assert _sig_digits(shown[key]) <= 3, shown


@pytest.mark.slow
@browser
def test_experiment_page_shows_run_names_and_energy_columns(tracking_uri: str, tmp_path: Path) -> None:
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure import measure
    from mlflow_energy.tracking import energy_view_url, experiment_id, log_measurement

    names = ["ui-check-first", "ui-check-second"]
    for steps, name in zip((1, 2), names, strict=True):
        cfg = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=steps, repeats=1, warmup=0)
        log_measurement(measure(cfg), experiment="ui-check", run_name=name)
    exp = experiment_id("ui-check")
    with shots.mlflow_server(tmp_path / "mlflow.db") as url:
        printed = energy_view_url(url, exp)
        dom = shots.dump_dom(printed)
        plain = shots.dump_dom(f"{url}/#/experiments/{exp}")
    for name in names:
        assert name in dom, f"run {name!r} not on the rendered page of {printed} ({len(dom)} bytes of DOM)"
    assert schema.M_ENERGY_TOTAL in dom  # the saved view's energy column
    assert "Training runs" not in dom and ">Overview<" not in dom  # the ML workflow's sidebar, not GenAI's
    # MLflow 3.17 opens the plain experiment address on the GenAI overview in a fresh browser (the
    # workflow type, not the experiment's tags, decides): if this starts failing, MLflow changed it,
    # and the README's "which link to open" can be simplified.
    assert ">Overview<" in plain and names[0] not in plain
