"""A sweep parent that tells the story without being expanded: summary metrics, a table, a plot.

The parent run of a sweep gets, over the configs measured in this invocation and those an earlier,
interrupted invocation measured for it (a rerun after Ctrl-C summarises the whole sweep, and the
interrupted parent points to it: :func:`earlier_rows`, :func:`mark_resumed`):
``sweep/energy_min_j``, ``sweep/energy_median_j``, ``sweep/energy_max_j`` (J per image),
``sweep/summary.csv`` (one row per config, cheapest first) and ``sweep/energy_by_config.png``
(energy per image per config, one colour and marker per family, log scale). For the runs table,
whose column headers are metric keys: short display metrics rounded to three significant digits
(``configs``, ``min J/img``, ``median J/img`` on the parent, ``J/img`` and ``s/img`` on each config's
child run), a description listing the configs cheapest first, and the experiment's energy view
(:mod:`mlflow_energy.tracking.ui`). A run of this worker whose claim was taken over meanwhile
(tagged superseded: another worker's run of the config counts) is left out of all of them;
``sweep/configs_superseded`` says how many were.

Example:
    >>> from mlflow_energy.sweep.summary import summary_metrics
    >>> summary_metrics([{"energy_total_j": 1.0}, {"energy_total_j": 3.0}, {"energy_total_j": 2.0}])
    {'sweep/energy_min_j': 1.0, 'sweep/energy_median_j': 2.0, 'sweep/energy_max_j': 3.0}
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from mlflow_energy import schema

COLUMNS = ("run_name", "model", "height", "width", "steps", "precision", "batch_size",
           "energy_total_j", "time_total_s", "flops_total", "energy_source")


def summary_row(m: Any, run_name: str) -> dict[str, Any]:
    """One table row of a measurement."""
    cfg = m.config
    return {
        "run_name": run_name, "model": cfg.model, "height": cfg.height, "width": cfg.width, "steps": cfg.steps,
        "precision": cfg.precision, "batch_size": cfg.batch_size,
        "energy_total_j": m.energy_j[schema.PHASE_TOTAL], "time_total_s": m.time_s[schema.PHASE_TOTAL],
        "flops_total": m.flops.get(schema.PHASE_TOTAL), "energy_source": getattr(m, "energy_source", ""),
    }


def summary_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Min, median and max energy per image over the rows (empty without rows)."""
    energy = [float(r["energy_total_j"]) for r in rows]
    if not energy:
        return {}
    return {
        schema.M_SWEEP_ENERGY_MIN: min(energy),
        schema.M_SWEEP_ENERGY_MEDIAN: float(statistics.median(energy)),
        schema.M_SWEEP_ENERGY_MAX: max(energy),
    }


def energy_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars: energy per image of each config, cheapest at the top, coloured by family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlflow_energy._plotstyle import family_style, legend_outside, log_axes, save
    from mlflow_energy.tracking.runs import sig3

    ordered = sorted(rows, key=lambda r: r["energy_total_j"])
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.22 * len(ordered)))
    families: dict[str, list[int]] = {}
    for i, row in enumerate(ordered):
        families.setdefault(row["model"], []).append(i)
    for model, at in families.items():  # one bar container and one marker line per family, not per config
        colour, marker = family_style(model)
        energy = [ordered[i]["energy_total_j"] for i in at]
        ax.barh(at, energy, color=colour, height=0.7, label=model)
        ax.plot(energy, at, marker=marker, color="black", markersize=4, linestyle="none")
    for i, row in enumerate(ordered):  # the value, rounded as the run's description rounds it (three significant digits)
        ax.annotate(sig3(row["energy_total_j"]), (row["energy_total_j"], i), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=6)
    ax.set_yticks(range(len(ordered)), [r["run_name"] for r in ordered], fontsize=7)
    ax.invert_yaxis()
    log_axes(ax, y=False)
    ax.margins(x=0.15)
    estimated = all(str(r.get("energy_source", "")).startswith(schema.SOURCE_ESTIMATE_PREFIX) for r in ordered)
    ax.set_xlabel("energy per image (J" + (", an estimate: no energy counter)" if estimated else ")"))
    ax.set_title("energy per config", fontsize=9)
    legend_outside(ax, title="family")
    return save(fig, path)  # framed by bbox_inches="tight" (a tight_layout pass first doubled the drawing)


def log_summary(run_id: str, rows: list[dict[str, Any]], *, experiment_id: str | None = None,
                children_shown: bool = False) -> None:
    """Log the summary metrics, table and plot of ``rows`` to the sweep's parent run.

    ``experiment_id``: the parent's (else looked up); ``children_shown``: every child run carries its
    ``J/img`` and ``s/img`` already (a sweep's own: :func:`~mlflow_energy.tracking.log_measurement`
    and the journal's replay log them with the run), so the children are not searched for them.
    """
    if not rows:
        return
    import pandas as pd
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = experiment_id or client.get_run(run_id).info.experiment_id
    log_display(client, run_id, rows, experiment_id=experiment_id, children_shown=children_shown)
    table = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("energy_total_j")
    client.log_text(run_id, table.to_csv(index=False), schema.A_SWEEP_SUMMARY_CSV)
    with tempfile.TemporaryDirectory() as tmp:
        path = energy_plot(rows, Path(tmp) / Path(schema.A_SWEEP_SUMMARY_PNG).name)
        client.log_artifact(run_id, str(path), str(Path(schema.A_SWEEP_SUMMARY_PNG).parent))


#: Configs listed in the sweep parent's description (all of them are in ``sweep/summary.csv``).
NOTE_ROWS = 20


def display_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The sweep parent's display metrics: configs, min and median J per image to three significant digits."""
    from mlflow_energy.tracking.ui import rounded

    full = summary_metrics(rows)
    if not full:
        return {}
    return {schema.M_VIEW_CONFIGS: float(len(rows)), schema.M_VIEW_ENERGY_MIN: rounded(full[schema.M_SWEEP_ENERGY_MIN]),
            schema.M_VIEW_ENERGY_MEDIAN: rounded(full[schema.M_SWEEP_ENERGY_MEDIAN])}


def summary_note(rows: list[dict[str, Any]]) -> str:
    """The sweep parent's description (markdown): its configs' energy and time per image, cheapest first."""
    from mlflow_energy.tracking.runs import sig3

    ordered = sorted(rows, key=lambda r: r["energy_total_j"])
    lines = [f"**{len(rows)} configs**, cheapest first (three significant digits; full precision in "
             f"`{schema.A_SWEEP_SUMMARY_CSV}`, a plot in `{schema.A_SWEEP_SUMMARY_PNG}`):", "",
             f"| config | {schema.M_VIEW_ENERGY} | {schema.M_VIEW_TIME} |", "| --- | ---: | ---: |"]
    lines += [f"| {r['run_name']} | {sig3(r['energy_total_j'])} | {sig3(r['time_total_s'])} |"
              for r in ordered[:NOTE_ROWS]]
    if len(ordered) > NOTE_ROWS:
        lines += ["", f"and {len(ordered) - NOTE_ROWS} more."]
    return "\n".join(lines)


def log_display(client: Any, run_id: str, rows: list[dict[str, Any]], *, experiment_id: str | None = None,
                children_shown: bool = False) -> None:
    """What the runs table shows of a sweep: the parent's summary and display metrics and its description
    (one ``log_batch``), ``J/img`` and ``s/img`` on each of its configs (child runs; searched for unless
    ``children_shown``), and the experiment's energy view."""
    import time

    from mlflow.entities import Metric, RunTag

    from mlflow_energy.tracking.runs import display_of
    from mlflow_energy.tracking.ui import ensure_energy_view

    now = int(time.time() * 1000)
    metrics = {**summary_metrics(rows), **display_metrics(rows)}
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag(schema.T_NOTE, summary_note(rows))])
    experiment_id = experiment_id or client.get_run(run_id).info.experiment_id
    token = None
    while not children_shown:
        page = client.search_runs([experiment_id], f"tags.`{schema.T_PARENT_RUN_ID}` = '{run_id}'",
                                  max_results=1000, page_token=token)
        for child in page:
            shown = {k: v for k, v in display_of(child.data.metrics).items()
                     if k not in child.data.metrics}  # a run logged before they came with it
            if shown:
                client.log_batch(child.info.run_id, metrics=[Metric(k, v, now, 0) for k, v in shown.items()])
        token = page.token
        if not token:
            break
    ensure_energy_view(client, experiment_id)


def earlier_rows(experiment_id: str, hashes: list[str], hardware: str, run_id: str
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the configs a rerun skipped because an earlier invocation measured them (their FINISHED
    measurement runs on ``hardware``; superseded runs left out; the latest per config), and the
    parent runs (other than ``run_id``) those measurements belong to.

    With these, a sweep resumed after Ctrl-C summarises every config of the spec, not only the half
    it measured itself."""
    if not hashes:
        return [], []
    from mlflow import MlflowClient

    client = MlflowClient()
    latest: dict[str, Any] = {}
    wanted = set(hashes)
    # one scan of the experiment's finished measurements, as the sweep's start does (MLflow's filters
    # have no IN for tags); the configs and hardware are picked here
    flt = f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}' and attributes.status = 'FINISHED'"
    token = None
    while True:
        page = client.search_runs([experiment_id], flt, max_results=1000, page_token=token)
        for r in page:
            tags = r.data.tags
            key = tags.get(schema.T_CONFIG_HASH, "")
            if key not in wanted or tags.get(schema.T_HARDWARE) != hardware or tags.get(schema.T_SUPERSEDED) == "true":
                continue
            if key not in latest or r.info.start_time > latest[key].info.start_time:
                latest[key] = r
        token = page.token
        if not token:
            break
    rows, parents = [], set()
    for r in latest.values():
        p, m = r.data.params, r.data.metrics
        if schema.M_ENERGY_TOTAL not in m:
            continue
        rows.append({
            "run_name": r.info.run_name, "model": p.get(schema.P_MODEL, ""),
            **{k: int(float(p[k])) if p.get(k) else None for k in ("height", "width", "steps", "batch_size")},
            "precision": p.get(schema.P_PRECISION, ""), "energy_total_j": m[schema.M_ENERGY_TOTAL],
            "time_total_s": m.get(schema.M_TIME_TOTAL, float("nan")), "flops_total": m.get(schema.M_FLOPS_TOTAL),
            "energy_source": r.data.tags.get(schema.T_ENERGY_SOURCE, ""),
        })
        parent = r.data.tags.get(schema.T_PARENT_RUN_ID)
        if parent and parent != run_id:
            parents.add(parent)
    return rows, sorted(parents)


def mark_resumed(parents: list[str], run_id: str) -> list[str]:
    """Tag each interrupted (not FINISHED) earlier parent as resumed by ``run_id``, with a description
    that points to it; returns their ids (``run_id`` gets them in :data:`~mlflow_energy.schema.T_SWEEP_RESUMES`)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    marked = []
    for pid in parents:
        try:
            run = client.get_run(pid)
        except Exception:  # noqa: BLE001 - deleted meanwhile: nothing to point from
            continue
        if run.info.status == "FINISHED" or run.data.tags.get(schema.T_KIND) != schema.KIND_SWEEP:
            continue
        client.set_tag(pid, schema.T_SWEEP_RESUMED_BY, run_id)
        client.set_tag(pid, schema.T_NOTE, f"Interrupted ({run.info.status}); resumed by run `{run_id}`, whose "
                       "summary covers every config of the sweep, these included.")
        marked.append(pid)
    if marked:
        client.set_tag(run_id, schema.T_SWEEP_RESUMES, ",".join(marked)[:4900])
    return marked
