"""The Optuna study: samplers, RDB storage, constraints, and :func:`search` itself."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from mlflow_energy import schema
from mlflow_energy.config import SCHEDULER_DEFAULT, InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.search import baseline as bl
from mlflow_energy.search import trial_runs as st
from mlflow_energy.search.evaluators import (
    QUALITY_METRICS,
    Evaluation,
    Evaluator,
    MeasureEvaluator,
    PredictEvaluator,
    RefusedConfig,
)
from mlflow_energy.search.result import NoFeasibleConfigError, SearchResult, _infeasible_message, _pareto, _trials_frame
from mlflow_energy.search.space import Constraints, SearchSpace


# ---------------------------------------------------------------------- configs
def _config(values: dict[str, Any], evaluator: Evaluator, seed: int = 0) -> InferenceConfig:
    kwargs = {k: v for k, v in values.items() if v is not None}
    extra: dict[str, Any] = {"device": evaluator.device, "seed": seed}
    if isinstance(evaluator, MeasureEvaluator):
        extra.update(weights=evaluator.weights, repeats=evaluator.repeats, warmup=evaluator.warmup)
        if evaluator.prompt:
            extra["prompt"] = evaluator.prompt
    return InferenceConfig(**{**extra, **kwargs}).validate()


def default_config(model: str, space: SearchSpace, evaluator: Evaluator, seed: int = 0,
                   precision: str | None = None) -> InferenceConfig:
    """The family's default config on the search's device, precision and hardware.

    Steps, resolution and guidance scale are the family's defaults; the space's fixed
    dimensions (a fixed resolution, say) are kept. Precision is the device's usual one
    (``fp16`` on a GPU, ``fp32`` on a CPU) when the space allows it, else ``precision`` (the
    best config's), so the default is never a config the search could not run; batch size 1,
    the pipeline's own scheduler. The evaluator prices it on the search's hardware.
    """
    usual = "fp32" if evaluator.device == "cpu" else "fp16"
    dim = space.dim("precision")
    if dim is not None and not dim.ranged and usual not in dim.choices:
        usual = precision or dim.choices[0]
    values: dict[str, Any] = {"precision": usual, "batch_size": 1, "scheduler": SCHEDULER_DEFAULT}
    values.update({k: v for k, v in space.fixed_values().items() if k != "model"})
    values["model"] = model
    return _config(values, evaluator, seed)


def _check_space(space: SearchSpace, evaluator: Evaluator) -> None:
    """Every value of every dimension must make a valid config (fails fast, one line).

    Passes per step depend on the guidance scale, so ``cfg_passes`` is checked apart: each of its
    values must be one that some family and guidance scale of the space can run (a trial whose
    combination cannot is pruned with the reason, the search goes on).
    """
    for values in space.corner_values():
        _config({k: v for k, v in values.items() if k != schema.P_CFG_PASSES}, evaluator)
    dim = space.dim(schema.P_CFG_PASSES)
    if dim is None:
        return
    from mlflow_energy.config import allowed_cfg_passes
    from mlflow_energy.families import get_family

    models, scales = (space.dim(n).values() if space.dim(n) else [None] for n in ("model", "guidance_scale"))
    if models == [None]:
        raise ConfigError(schema.P_CFG_PASSES, dim.to_json(), "a search that names its model (--model)")
    runnable = {p for m in models for g in scales for p in allowed_cfg_passes(get_family(m), g)}
    for passes in dim.values():
        if passes not in runnable:
            raise ConfigError(schema.P_CFG_PASSES, passes, " or ".join(map(str, sorted(runnable))) + " for "
                              + ", ".join(models) + " at guidance_scale " + ", ".join(
                                  "default" if g is None else f"{g:g}" for g in scales))


def _study_name(space: SearchSpace, constraints: Constraints, evaluator: Evaluator, multi: bool,
                base: InferenceConfig | None = None, floor: bool = False) -> str:
    blob = "|".join([space.to_json(), repr(sorted(constraints.as_dict().items())), evaluator.mode, str(multi)])
    if base is not None:  # a search with a quality floor or another baseline is another study
        blob += f"|{base.config_hash()}|floor={floor}"
    return "search-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------- the search
def _sampler(seed: int | None, n_constraints: int) -> Any:
    import optuna

    kwargs: dict[str, Any] = {"seed": seed}
    if n_constraints and not hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna < 5
        kwargs["constraints_func"] = lambda t: [float(v) for v in st.violations(t).values()]
    return optuna.samplers.TPESampler(**kwargs)


_STORAGE_ATTEMPTS = 5


def _storage(url: str | None) -> Any:
    if not url:
        return None
    import optuna
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

    from mlflow_energy.tracking.retry import database_url

    url = database_url(url)  # postgresql:// with psycopg2 only

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(_STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (ImportError, ValueError, ArgumentError) as exc:
            raise ConfigError("storage", st.redact(url), f"an SQLAlchemy database URL Optuna can open ({exc})") from None
        except (IntegrityError, OperationalError, ProgrammingError) as exc:
            # Workers that start together on a new database race to create Optuna's schema
            # (PostgreSQL: UniqueViolation, DuplicateTable); the loser finds it made on the next attempt.
            if isinstance(exc, ProgrammingError) and "already exists" not in str(exc):
                raise
            if attempt == _STORAGE_ATTEMPTS - 1:
                first = " ".join(str(getattr(exc, "orig", exc)).split())[:160]
                raise ConfigError("storage", st.redact(url), f"a database that answers ({first})") from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def search(
    space: SearchSpace,
    evaluator: Evaluator,
    constraints: Constraints | None = None,
    *,
    trials: int = 50,
    seed: int | None = 0,
    storage: str | None = None,
    study_name: str | None = None,
    experiment: str | None = None,
    multi_objective: bool = False,
    quality_metric: str = "psnr",
    plots: bool = True,
    log_trials: bool = True,
    baseline: Mapping[str, Any] | None = None,
    quality_floor: bool = True,
) -> SearchResult:
    """Find the lowest-energy feasible config of ``space`` with Optuna, tracked in MLflow.

    Args:
        space: the configs to try (:class:`SearchSpace`).
        evaluator: :class:`PredictEvaluator` (milliseconds per trial) or :class:`MeasureEvaluator`.
        constraints: step, quality and latency bounds (:class:`Constraints`).
        trials: trials this call runs (added to the study's earlier trials, if any).
        seed: sampler seed; give each worker sharing a study its own seed.
        storage: ``None`` (in memory) or an SQLAlchemy URL (``sqlite:///optuna.db``,
            ``postgresql://...``); workers with the same URL and ``study_name`` share one study.
        study_name: default: a hash of space, constraints, mode and objectives.
        experiment: MLflow experiment of the parent and trial runs.
        multi_objective: minimise energy and maximise ``quality_metric``; the result's ``pareto``
            holds the feasible front.
        quality_metric: ``psnr``, ``ssim`` or ``clip``: the quality axis of the Pareto front.
        plots: log the Pareto plot and Optuna's plots on the parent run.
        log_trials: log each trial as a child run (about 0.1 s per trial on a SQLite store); the
            parent run always gets the trials as ``search/trials.csv``.
        baseline: the user's baseline config (``{"steps": 30}``; :func:`~mlflow_energy.search.baseline.baseline_config`
            fills the rest): the saving is against it, and measure mode's quality reference is it.
        quality_floor: without a quality constraint, require PSNR >= min(30 dB, the baseline's - 1 dB)
            (:func:`~mlflow_energy.search.baseline.quality_floor`); ``False`` searches without one.

    Returns:
        :class:`SearchResult`, summarising every complete trial of the study.

    Raises:
        ConfigError: bad space, constraint or option (before any trial runs).
        NoFeasibleConfigError: every trial broke a constraint; names the least-violating config.

    Example:
        >>> result = search(SearchSpace.from_options({"model": ["sd2"], "steps": ["10:50"]}),
        ...                 PredictEvaluator(my_predictor, "H100"), Constraints(min_steps=20))  # doctest: +SKIP
        >>> result.best_config.steps  # doctest: +SKIP
        20
    """
    import optuna

    constraints = constraints or Constraints()
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError("trials", trials, "an integer >= 1")
    if quality_metric not in QUALITY_METRICS:
        raise ConfigError("quality_metric", quality_metric, "one of " + ", ".join(QUALITY_METRICS))
    qkey = QUALITY_METRICS[quality_metric]
    _check_space(space, evaluator)
    base_cfg = bl.baseline_config(space, evaluator, bl.parse_baseline(baseline))
    evaluator.baseline = base_cfg
    user_quality = any(c.metric.startswith("quality/") for c in constraints.active())
    floor_wanted = quality_floor and not user_quality
    if floor_wanted and isinstance(evaluator, PredictEvaluator) and evaluator.quality_model is None:
        evaluator.use_stored_quality()
    evaluator.check(space, constraints, qkey if multi_objective else None)
    notes: list[str] = []
    if isinstance(evaluator, PredictEvaluator):
        space, notes = bl.within_seen(space, base_cfg, evaluator)
    active = constraints.active()
    study_name = study_name or _study_name(space, constraints, evaluator, multi_objective, base_cfg, floor_wanted)
    directions = ["minimize", "maximize"] if multi_objective else ["minimize"]

    rdb = _storage(storage)
    with _quiet_optuna():
        study = optuna.create_study(storage=rdb, study_name=study_name, directions=directions,
                                    sampler=_sampler(seed, len(active) + floor_wanted), load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError("study_name", study_name, f"a study with directions {directions} (this one has other objectives)")
    bl.enqueue_baseline(study, space, base_cfg)

    from mlflow_energy.tracking.retry import ensure_store

    ensure_store()  # postgresql:// with psycopg2 only; workers racing to create a fresh store's schema
    exp_id = st.experiment_id(experiment)
    params = {
        **evaluator.describe(), schema.P_SEARCH_TRIALS: trials, schema.P_SEARCH_SEED: seed,
        schema.P_SEARCH_SAMPLER: type(study.sampler).__name__, schema.P_SEARCH_STUDY: study_name,
        schema.P_SEARCH_STORAGE: st.redact(storage),
        schema.P_SEARCH_OBJECTIVES: "energy_total_j:minimize" + (f",{quality_metric}:maximize" if multi_objective else ""),
        **{schema.constraint_param(c.name): c.bound for c in active},
        **{schema.baseline_param(k): getattr(base_cfg, k) for k in bl.BASELINE_FIELDS if k != "resolution"},
    }
    model_dim = space.dim("model")
    families = [str(v) for v in model_dim.values()] if model_dim is not None else []
    objectives = ["energy"] + ([quality_metric] if multi_objective else [])
    parent = st.start_parent(exp_id, study_name, params, st.run_name(families, objectives))
    if isinstance(evaluator, MeasureEvaluator):
        evaluator.experiment, evaluator.parent_run_id = experiment, parent
    image_seed = 0
    state: dict[str, Any] = {}

    inherit = bl.inherited(space, base_cfg, bl.parse_baseline(baseline))

    def objective(trial: optuna.trial.Trial) -> float | tuple[float, float]:
        values = space.suggest(trial)
        if values.get("model", base_cfg.model) == base_cfg.model:
            values = {**inherit, **values}
        else:
            values = {"precision": base_cfg.precision, **values}
        try:
            cfg = _config(values, evaluator, image_seed)
        except ConfigError as exc:  # passes the family cannot run at this guidance scale: prune, go on
            if exc.field != schema.P_CFG_PASSES:
                raise
            trial.set_user_attr(st.UA_REFUSED, str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        try:
            ev = evaluator.evaluate(cfg)
        except RefusedConfig as exc:  # outside what the predictor has seen: prune the trial, go on
            trial.set_user_attr(st.UA_REFUSED, str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        values = {c.metric: ev.metrics.get(c.metric, math.nan) for c in active}
        values[schema.P_STEPS] = float(cfg.steps)
        cons = {c.name: c.violation(values[c.metric]) if not math.isnan(values[c.metric]) else 1.0 for c in active}
        config = {k: v for k, v in cfg.to_dict().items()
                  if k in schema.RUN_PARAMS or (k in schema.OPTIONAL_PARAMS and v is not None)}
        config[schema.P_CFG] = str(cfg.cfg).lower()
        trial.set_user_attr(st.UA_CONFIG, config)
        trial.set_user_attr(st.UA_METRICS, ev.metrics)
        trial.set_user_attr(st.UA_CONSTRAINTS, cons)
        trial.set_user_attr(st.UA_SOURCE, ev.energy_source)
        trial.set_user_attr(st.UA_HARDWARE, ev.hardware)
        trial.set_user_attr("config_hash", cfg.config_hash())
        if ev.run_id:
            trial.set_user_attr(st.UA_RUN_ID, ev.run_id)
        if hasattr(trial, "set_constraint"):
            for name, value in cons.items():
                trial.set_constraint(name, value)
        if multi_objective:
            return ev.energy_j, ev.metrics.get(qkey, math.nan)
        return ev.energy_j

    status, failure = "FAILED", None
    try:
        base_ev = evaluator.evaluate(base_cfg)
        state.update(base=base_cfg, base_ev=base_ev, floor=None, floor_note=None, notes=notes)
        floors = bl.default_floors(base_ev.metrics) if floor_wanted else {}
        if floor_wanted and "min_psnr" not in floors:
            state["floor_note"] = (f"no quality floor: the baseline ({base_cfg.model}) has no PSNR "
                                   + ("(no quality data for this family)" if evaluator.mode == "predict" else
                                      "(its images could not be compared)"))
        if floors:
            constraints = dataclasses.replace(constraints, **floors)
            active[:] = constraints.active()
            state["floor"] = floors.get("min_psnr")
            st.log_floor(parent, floors)
        elif not user_quality:
            state["floor_note"] = "no quality floor (switched off): the saving may cost image quality"
        with _quiet_optuna():
            study.optimize(
                objective, n_trials=trials, callbacks=[st.TrialLogger(exp_id, parent, study_name)] if log_trials else [],
                catch=(RuntimeError,) if evaluator.mode == "measure" else (),
            )
        result = _summarise(study, space, evaluator, constraints, qkey, parent, study_name, plots, state)
        status = "FINISHED"
        return result
    except NoFeasibleConfigError as exc:
        failure = str(exc)
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        failure = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise
    finally:
        if isinstance(evaluator, MeasureEvaluator):
            evaluator.close()
        st.finish(parent, status, failure)


def _summarise(
    study: Any, space: SearchSpace, evaluator: Evaluator, constraints: Constraints, qkey: str,
    parent: str, study_name: str, plots: bool, state: dict[str, Any],
) -> SearchResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    refused = [t for t in trials if t.state == TrialState.PRUNED and st.UA_REFUSED in t.user_attrs]
    if not complete:
        if refused:
            raise NoFeasibleConfigError(f"the energy model refused all {len(refused)} trials: "
                                        f"{refused[-1].user_attrs[st.UA_REFUSED]}; narrow the space to what it has seen")
        raise NoFeasibleConfigError("no trial completed: see the failed trial runs' mlflow_energy.failure tags")
    frame = _trials_frame(complete)
    feasible = [t for t in complete if st.is_feasible(t)]
    pareto = _pareto(frame, qkey)
    base_cfg: InferenceConfig = state["base"]
    base_ev: Evaluation = state["base_ev"]
    base_metrics = dict(base_ev.metrics)
    counts = {schema.M_SEARCH_N_TRIALS: float(len(complete)), schema.M_SEARCH_N_FEASIBLE: float(len(feasible)),
              schema.M_SEARCH_N_REFUSED: float(len(refused)), schema.M_SEARCH_DEFAULT_ENERGY: base_ev.energy_j,
              **st.superseded_metrics(evaluator)}
    if schema.M_QUALITY_PSNR in base_metrics:
        counts[schema.M_SEARCH_BASELINE_PSNR] = base_metrics[schema.M_QUALITY_PSNR]
    baseline_point = (base_ev.energy_j, base_metrics.get(qkey, math.nan))
    if not feasible:
        message = _infeasible_message(complete, constraints)
        st.log_summary(parent, best=None, metrics=counts, space_json=space.to_json(), trials=frame, pareto=pareto,
                       quality_metric=qkey, study=None, baseline=baseline_point)
        raise NoFeasibleConfigError(message)
    best = min(feasible, key=lambda t: (t.user_attrs[st.UA_METRICS][schema.M_ENERGY_TOTAL], t.number))
    best_cfg = _config({k: v for k, v in best.user_attrs[st.UA_CONFIG].items()
                        if k in ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler",
                                  schema.P_POWER_LIMIT, schema.P_CFG_PASSES)},
                       evaluator, best.user_attrs[st.UA_CONFIG].get(schema.P_SEED, 0))
    best_metrics = dict(best.user_attrs[st.UA_METRICS])
    if isinstance(evaluator, PredictEvaluator):
        saving = bl.predicted_saving(evaluator, best_cfg, base_cfg)
    else:
        saving = bl.measured_saving(best_metrics[schema.M_ENERGY_TOTAL], best_metrics.get(schema.M_ENERGY_TOTAL_CI95),
                                    base_ev.energy_j, base_metrics.get(schema.M_ENERGY_TOTAL_CI95))
    saved = base_ev.energy_j - best_metrics[schema.M_ENERGY_TOTAL]
    metrics = {**counts, schema.M_SEARCH_SAVED_J: saved, **saving.metrics()}
    st.log_summary(
        parent, best={"config": space.searched(best.user_attrs[st.UA_CONFIG]), "metrics": best_metrics},
        metrics=metrics, params={schema.P_SEARCH_SAVING_INTERVAL: saving.how},
        space_json=space.to_json(), trials=frame, pareto=pareto, quality_metric=qkey,
        study=study if plots else None, baseline=baseline_point,
    )
    notes = [n for n in (state.get("floor_note"), bl.describe_change(best_cfg, base_cfg), *state["notes"]) if n]
    return SearchResult(
        best_config=best_cfg, best_metrics=best_metrics, default_config=base_cfg, default_energy_j=base_ev.energy_j,
        energy_saved_j=saved, energy_saved_frac=saving.frac, pareto=pareto, trials=frame,
        n_trials=len(complete), n_feasible=len(feasible), parent_run_id=parent, study_name=study_name,
        mode=evaluator.mode, saving=saving, baseline_metrics=base_metrics, quality_floor=state.get("floor"),
        notes=notes, n_refused=len(refused),
    )


class _DropInputErrors(logging.Filter):
    """Optuna's "Trial failed" warnings for a ConfigError: the error is re-raised and shown as one line."""

    dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConfigError):
            self.dropped = True
            return False
        return not (self.dropped and "failed with value None" in record.getMessage())


class _quiet_optuna:
    """Optuna logs one INFO line per trial; keep the terminal to our own summary."""

    _filter = _DropInputErrors()

    def __enter__(self) -> None:
        import optuna

        self._level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        logging.getLogger("optuna.study._optimize").addFilter(self._filter)

    def __exit__(self, *exc: Any) -> None:
        import optuna

        optuna.logging.set_verbosity(self._level)
        logging.getLogger("optuna.study._optimize").removeFilter(self._filter)
