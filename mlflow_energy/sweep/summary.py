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

import math
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


#: Superscript digits, for the powers of ten on the plot's x axis.
_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")

#: Inches: a config's row, the axes' width, the blank edge around the figure's content.
ROW_IN, AXES_IN, EDGE_IN = 0.19, 5.8, 0.08


def energy_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars: energy per image of each config, cheapest at the top, coloured by family.

    Laid out once from the measured extents of its own texts (the widest config name sets the left
    margin, the legend the right one, each value's width the room right of its bar) and saved in one
    draw, which finds those extents cached: no ``bbox_inches="tight"`` pass (it draws the figure
    twice, then lays every text out again at the new size). Per config it makes two texts, a
    polygon of its family's bars and a marker point, not a y tick (two lines, two labels each)."""
    import matplotlib

    matplotlib.use("Agg")
    # unhinted glyphs: laid out in two thirds of the time of hinted ones (text is most of the plot's cost)
    with matplotlib.rc_context({"text.hinting": "none"}):
        return _energy_plot(rows, path)


def _energy_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullLocator
    from matplotlib.transforms import ScaledTranslation, blended_transform_factory

    from mlflow_energy._plotstyle import family_style, laid_out, legend_outside, log_axes, save
    from mlflow_energy.tracking.runs import sig3

    ordered = sorted(rows, key=lambda r: r["energy_total_j"])
    n, energy = len(ordered), [float(r["energy_total_j"]) for r in ordered]
    names = [str(r["run_name"]) for r in ordered]
    families: dict[str, list[int]] = {}
    for i, row in enumerate(ordered):
        families.setdefault(str(row["model"]), []).append(i)
    # first guess of the width (about 0.6 em a character): the measured texts place the axes in it
    guess = 0.6 * 7 / 72 * (max(map(len, names), default=0) + max(map(len, families), default=0)) + 0.7
    fig = Figure(figsize=(2 * EDGE_IN + AXES_IN + guess, 2 * EDGE_IN + 1.0 + ROW_IN * (n + 0.6)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.2, 0.1, 0.6, 0.8))
    handles = []
    for model, at in families.items():  # one polygon collection and one marker line per family
        colour, marker = family_style(model)
        bars = ax.add_collection(PolyCollection(
            [((0, i - 0.35), (energy[i], i - 0.35), (energy[i], i + 0.35), (0, i + 0.35)) for i in at],
            facecolors=[colour], edgecolors="none"), autolim=False)
        dots, = ax.plot([energy[i] for i in at], at, marker=marker, color="black", markersize=4, linestyle="none")
        handles.append((bars, dots))
    beside = ax.transData + ScaledTranslation(6 / 72, 0, fig.dpi_scale_trans)  # 6 points right of the bar's end
    values = [ax.text(e, i, sig3(e), transform=beside, va="center", fontsize=6)  # rounded as the run's
              for i, e in enumerate(energy)]                                     # description rounds it
    left_of_axes = blended_transform_factory(ax.transAxes, ax.transData) + ScaledTranslation(
        -4 / 72, 0, fig.dpi_scale_trans)
    labels = [fig.text(0, i, name, transform=left_of_axes, ha="right", va="center", fontsize=7)
              for i, name in enumerate(names)]
    ax.set_yticks([])
    ax.set_ylim(n - 0.2, -0.8)  # cheapest at the top
    log_axes(ax, y=False)
    # decades as plain text (10⁻²: no mathtext parsed per figure); minor marks as one line (_minor_marks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "10" + str(round(math.log10(x))).translate(_SUPERSCRIPT)))
    ax.xaxis.set_minor_locator(NullLocator())
    positive = [e for e in energy if e > 0] or [1.0]
    low, high = math.log10(min(positive)), math.log10(max(positive))
    pad = 0.15 * (high - low)  # and at least the powers of ten around the values, so that some are labelled
    ax.set_xlim(10 ** min(low - pad, math.floor(low)), 10 ** max(high + pad, math.ceil(high)))
    estimated = all(str(r.get("energy_source", "")).startswith(schema.SOURCE_ESTIMATE_PREFIX) for r in ordered)
    ax.set_xlabel("energy per image (J" + (", an estimate: no energy counter)" if estimated else ")"))
    ax.set_title("energy per config", fontsize=9, y=1.0)  # placed here: its place is not searched for
    legend_outside(ax, title="family", handles=handles, labels=list(families))
    _lay_out(fig, ax, labels, values)
    laid_out(fig, pil_kwargs={"compress_level": 3})  # smaller and faster to write than the default 6
    return save(fig, path)


def _lay_out(fig: Any, ax: Any, labels: list[Any], values: list[Any]) -> None:
    """Place the axes from the measured extents of the texts around them, inside the figure; widen the
    log x range so that each value's text stays in the axes. Measured on the renderer the save will draw
    with (same size and dpi), so the draw finds every text's extent cached."""
    import matplotlib as mpl
    from matplotlib.transforms import ScaledTranslation

    dpi = fig.dpi
    px, edge = dpi / 72, EDGE_IN * dpi  # pixels per point, the edge in pixels
    renderer = fig.canvas.get_renderer()
    left = max((t.get_window_extent(renderer).width for t in labels), default=0) + 4 * px
    legend = ax.get_legend().get_window_extent(renderer)
    xlabel = ax.xaxis.label.get_window_extent(renderer).height
    above = ax.title.get_window_extent(renderer).height + mpl.rcParams["axes.titlepad"] * px
    ticks = (mpl.rcParams["xtick.major.size"] + mpl.rcParams["xtick.major.pad"]) * px
    tick_labels = max((t.get_window_extent(renderer).height for t in ax.xaxis.get_majorticklabels()), default=0)
    below = ticks + tick_labels + ax.xaxis.labelpad * px + xlabel
    width, height = fig.bbox.width, fig.bbox.height
    axes_w = (width - 2 * edge - left - legend.width) / 1.02  # the legend's anchor: 1.02 axes widths
    need_h = 2 * edge + above + below + max(legend.height, ROW_IN * dpi * 2)
    if not 0.85 * AXES_IN * dpi <= axes_w <= 1.2 * AXES_IN * dpi or need_h > height:
        axes_w = AXES_IN * dpi  # the first guess missed: the figure's size from the measured texts
        width, height = 2 * edge + left + legend.width + 1.02 * axes_w, max(height, need_h)
        fig.set_size_inches(width / dpi, height / dpi)
        renderer = fig.canvas.get_renderer()
    ax.set_position(((edge + left) / width, (edge + below) / height, axes_w / width,
                     1 - (2 * edge + below + above) / height))
    ax.xaxis.set_label_coords(0.5, 0, transform=ax.transAxes + ScaledTranslation(
        0, -(below - xlabel) / dpi, fig.dpi_scale_trans))
    ax.yaxis.set_label_coords(0, 0.5)  # no y label: its place is not searched for either
    lo, hi = ax.get_xlim()
    low, top = math.log10(lo), math.log10(hi)
    for text in values:  # x of its bar's end + 6 points + its width within the axes' width
        room = axes_w - 6 * px - text.get_window_extent(renderer).width - 2 * px
        x = text.get_position()[0]
        if room > 0 and x > 0:
            top = max(top, low + (math.log10(x) - low) * axes_w / room)
    ax.set_xlim(lo, 10 ** top)
    _minor_marks(ax)


def _minor_marks(ax: Any) -> None:
    """The log x axis's minor ticks (2 to 9 times each power of ten) as one line of tick marks, not a
    tick (two lines, two labels) each."""
    import matplotlib as mpl
    from matplotlib.markers import TICKDOWN
    from matplotlib.transforms import blended_transform_factory

    lo, hi = ax.get_xlim()
    marks = [k * 10.0 ** d for d in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for k in range(2, 10) if lo <= k * 10.0 ** d <= hi]
    ax.plot(marks, [0.0] * len(marks), transform=blended_transform_factory(ax.transData, ax.transAxes),
            marker=TICKDOWN, linestyle="none", color=mpl.rcParams["xtick.color"], clip_on=False,
            markersize=mpl.rcParams["xtick.minor.size"], markeredgewidth=mpl.rcParams["xtick.minor.width"],
            scalex=False, scaley=False)


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
