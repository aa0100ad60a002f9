"""MLflow side of a search: a parent run (kind=search) and one child run per trial (kind=trial).

:class:`TrialLogger` is a small Optuna callback of our own: it logs each finished trial as a
child run in the parent's experiment (optuna-integration's MLflowCallback is deprecated and
puts children in another experiment by default). The parent gets the best config, the saving
against the default config, the energy-vs-quality Pareto front (CSV and plot) and Optuna's
matplotlib plots.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from mlflow_energy import schema, tracking
from mlflow_energy._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    import optuna

# user_attrs a trial carries (JSON values, so they travel through any Optuna storage)
UA_CONFIG = "config"  # run params of the config
UA_METRICS = "metrics"  # schema metric keys -> values
UA_CONSTRAINTS = "constraints"  # constraint name -> relative violation (<= 0 holds)
UA_RUN_ID = "run_id"  # measure mode: the measurement run the trial completes
UA_SOURCE = "energy_source"
UA_HARDWARE = "hardware"
UA_REFUSED = "refused"  # predict mode: the predictor's one-line refusal (the trial is pruned)


def redact(url: str | None) -> str:
    """A storage URL without its password (``postgresql://user:***@host/db``)."""
    if not url:
        return "in-memory"
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def experiment_id(name: str | None) -> str:
    """:func:`mlflow_energy.tracking.experiment_id`, tolerant of another worker creating it first."""
    from mlflow.exceptions import MlflowException

    for attempt in range(3):
        try:
            return tracking.experiment_id(name)
        except MlflowException:
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _log(run_id: str, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, Any]) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    tracking.client().log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and math.isfinite(float(v))],
        params=[Param(k, str(v)) for k, v in params.items() if v is not None],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )


def violations(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    return dict(trial.user_attrs.get(UA_CONSTRAINTS, {}))


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in violations(trial).values())


class TrialLogger:
    """Optuna callback: each finished trial becomes a child run of ``parent_run_id``.

    Example:
        >>> study.optimize(objective, n_trials=10, callbacks=[TrialLogger(exp_id, parent_id)])  # doctest: +SKIP
    """

    def __init__(self, exp_id: str, parent_run_id: str, study_name: str) -> None:
        self.exp_id = exp_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        attrs = trial.user_attrs
        cons = violations(trial)
        tags: dict[str, Any] = {
            schema.T_KIND: schema.KIND_TRIAL,
            schema.T_PARENT_RUN_ID: self.parent_run_id,
            schema.T_STUDY_NAME: self.study_name,
            schema.T_TRIAL_NUMBER: trial.number,
            schema.T_VERSION: __version__,
        }
        if attrs.get(UA_SOURCE):
            tags[schema.T_ENERGY_SOURCE] = attrs[UA_SOURCE]
        if attrs.get(UA_HARDWARE):
            tags[schema.T_HARDWARE] = attrs[UA_HARDWARE]
        if attrs.get("config_hash"):
            tags[schema.T_CONFIG_HASH] = attrs["config_hash"]
        metrics = dict(attrs.get(UA_METRICS, {}))
        metrics.update({schema.constraint_metric(k): v for k, v in cons.items()})
        if trial.state == TrialState.COMPLETE:
            metrics[schema.M_SEARCH_FEASIBLE] = float(all(v <= 0 for v in cons.values()))
        run_id = attrs.get(UA_RUN_ID)
        params = {} if run_id else dict(attrs.get(UA_CONFIG, trial.params))
        status = "FINISHED" if trial.state == TrialState.COMPLETE else "FAILED"
        if trial.state != TrialState.COMPLETE:
            reason = attrs.get(UA_REFUSED) or trial.system_attrs.get("fail_reason") or f"trial {trial.state.name.lower()}"
            tags[schema.T_FAILURE] = " ".join(str(reason).split())[:480]
        if run_id is None:
            run = tracking.client().create_run(self.exp_id, run_name=trial_name(trial.number, params), tags={})
            run_id = run.info.run_id
            try:
                _log(run_id, params, metrics, tags)
            finally:
                tracking.end_run(run_id, status)
        else:  # measure mode: the measurement run exists; make it this trial's run
            _log(run_id, params, metrics, tags)


# ---------------------------------------------------------------------- parent run
def run_name(families: list[str], objectives: list[str]) -> str:
    """``search-<families>-<objectives>``: ``search-sd2+sdxl-energy``, ``search-5fam-energy-psnr``.

    Example:
        >>> run_name(["tiny-sd2", "tiny-sdxl"], ["energy", "psnr"])
        'search-tiny-sd2+tiny-sdxl-energy-psnr'
    """
    fams = "+".join(families) if len(families) <= 3 else f"{len(families)}fam"
    return "-".join(part for part in ("search", fams, *objectives) if part)


def trial_name(number: int, config: dict[str, Any]) -> str:
    """``t<number>-<model>-<h>x<w>-<steps>st``, the trial's config at a glance."""
    name = f"t{number}"
    if config.get("model"):
        name += f"-{config['model']}"
    if config.get("height") and config.get("width"):
        name += f"-{config['height']}x{config['width']}"
    if config.get("steps"):
        name += f"-{config['steps']}st"
    return name


def start_parent(exp_id: str, study_name: str, params: dict[str, Any], name: str | None = None) -> str:
    run_id = tracking.start_run(
        exp_id, kind=schema.KIND_SEARCH, run_name=name or study_name,
        tags={schema.T_STUDY_NAME: study_name, schema.T_VERSION: __version__},
    )
    _log(run_id, params, {}, {})
    return run_id


def log_summary(
    run_id: str,
    *,
    best: dict[str, Any] | None,
    metrics: dict[str, float],
    space_json: str,
    trials: pd.DataFrame,
    pareto: pd.DataFrame,
    quality_metric: str | None,
    study: optuna.Study | None,
    params: dict[str, Any] | None = None,
    baseline: tuple[float, float] | None = None,
) -> None:
    """Best config (``best_*`` params and metrics), counts, saving, space, trials, Pareto front, plots.

    ``baseline``: ``(energy, quality)`` of the baseline config, marked on the Pareto plot.
    """
    c = tracking.client()
    params = dict(params or {})
    out_metrics = dict(metrics)
    if best is not None:
        params.update({schema.best_param(k): v for k, v in best["config"].items()})
        out_metrics.update({schema.best_metric(k): v for k, v in best["metrics"].items()})
    if schema.M_ENERGY_TOTAL in trials and trials[schema.M_ENERGY_TOTAL].notna().any():
        energy = trials[schema.M_ENERGY_TOTAL].dropna()
        out_metrics[schema.M_SEARCH_ENERGY_MIN] = float(energy.min())
        out_metrics[schema.M_SEARCH_ENERGY_MEDIAN] = float(energy.median())
    out_metrics.update(display_metrics(best, metrics))
    _log(run_id, params, out_metrics, {})
    c.log_text(run_id, space_json, schema.A_SEARCH_SPACE_JSON)
    c.log_text(run_id, trials.to_csv(index=False), schema.A_SEARCH_TRIALS_CSV)
    if quality_metric and not pareto.empty:
        c.log_text(run_id, pareto.to_csv(index=False), schema.A_PARETO_CSV)
    with tempfile.TemporaryDirectory() as tmp:
        if quality_metric and quality_metric in trials and trials[quality_metric].notna().any():
            path = Path(tmp) / Path(schema.A_PARETO_PNG).name
            pareto_plot(trials, pareto, quality_metric, path, baseline=baseline)
            c.log_artifact(run_id, str(path), str(Path(schema.A_PARETO_PNG).parent))
        if study is not None:
            for path in optuna_plots(study, Path(tmp)):
                c.log_artifact(run_id, str(path), schema.A_OPTUNA_PLOTS_DIR)


def superseded_metrics(evaluator: Any) -> dict[str, float]:
    """``search/runs_superseded`` when the quality model was fitted from runs here (none otherwise)."""
    n = getattr(getattr(evaluator, "quality_model", None), "superseded", None)  # set by fit_quality_model
    return {} if n is None else {schema.M_SEARCH_SUPERSEDED: float(n)}


def display_metrics(best: dict[str, Any] | None, metrics: dict[str, float]) -> dict[str, float]:
    """The energy view's short columns of a search parent: ``best J/img`` and ``saved pct`` (the saving
    against the baseline in percent), three significant digits; none without a feasible best."""
    from mlflow_energy.tracking.ui import rounded

    out: dict[str, float] = {}
    energy = (best or {}).get("metrics", {}).get(schema.M_ENERGY_TOTAL)
    if energy is not None and math.isfinite(energy):
        out[schema.M_VIEW_BEST_ENERGY] = rounded(energy)
    frac = metrics.get(schema.M_SEARCH_SAVED_FRAC)
    if best is not None and frac is not None and math.isfinite(frac):
        out[schema.M_VIEW_SAVED_PCT] = rounded(100.0 * frac)
    return out


def log_floor(run_id: str, floors: dict[str, float]) -> None:
    """The default quality floors the search applied: constraint params, and the PSNR floor as a metric."""
    metrics = {schema.M_SEARCH_QUALITY_FLOOR: floors["min_psnr"]} if "min_psnr" in floors else {}
    _log(run_id, {schema.constraint_param(k): v for k, v in floors.items()}, metrics, {})


def pareto_plot(trials: pd.DataFrame, pareto: pd.DataFrame, quality_metric: str, path: Path,
                baseline: tuple[float, float] | None = None) -> list[str]:
    """Energy per image vs quality: every trial, feasible ones highlighted, the front as a line, the baseline a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    feasible = trials["feasible"].astype(bool)
    ax.scatter(trials.loc[~feasible, schema.M_ENERGY_TOTAL], trials.loc[~feasible, quality_metric],
               s=14, c="lightgray", label="infeasible")
    ax.scatter(trials.loc[feasible, schema.M_ENERGY_TOTAL], trials.loc[feasible, quality_metric],
               s=14, c="tab:blue", label="feasible")
    if not pareto.empty:
        front = pareto.sort_values(schema.M_ENERGY_TOTAL)
        ax.plot(front[schema.M_ENERGY_TOTAL], front[quality_metric], "o-", c="tab:red", label="Pareto front")
    if baseline is not None and math.isfinite(baseline[0]):
        y = baseline[1] if math.isfinite(baseline[1]) else ax.get_ylim()[0]
        ax.scatter([baseline[0]], [y], marker="*", s=160, c="black", zorder=5, label="baseline")
    from mlflow_energy._plotstyle import legend_outside, log_axes, save

    ax.set_xlabel("energy per image (J)")
    ax.set_ylabel(quality_metric)
    log_axes(ax, y=False)
    legend_outside(ax)
    ax.set_title("energy vs quality")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    fig.tight_layout()
    save(fig, path)
    return labels


def optuna_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optuna's matplotlib plots that apply: optimisation history, parameter importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    multi = len(study.directions) > 1
    target = {"target": (lambda t: t.values[0]), "target_name": "energy per image (J)"} if multi else {}
    plots = {"optimization_history.png": ovm.plot_optimization_history, "param_importances.png": ovm.plot_param_importances}
    paths = []
    for name, fn in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib backend is marked experimental
            try:
                ax = fn(study, **target)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two varying parameters and several trials
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def finish(run_id: str, status: str, failure: str | None = None) -> None:
    if failure:
        _log(run_id, {}, {}, {schema.T_FAILURE: failure[:480]})
    tracking.end_run(run_id, status)
