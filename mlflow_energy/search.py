"""Search: Optuna finds the lowest-energy config under step, quality and latency constraints.

Two modes:

- ``predict`` (:class:`PredictEvaluator`): the registered energy model (or any object with the
  predictor contract's ``.predict(df)``) scores a config in milliseconds; quality comes from a
  :class:`~mlflow_energy.quality.QualityModel` fitted on runs that logged quality metrics.
- ``measure`` (:class:`MeasureEvaluator`): each config is measured live with the runner, and its
  images are compared with the reference (same config and seed at ``reference_steps``).

Constraints go through Optuna's constraint support (``Trial.set_constraint`` in Optuna >= 5,
the sampler's ``constraints_func`` before), as relative violations, so the sampler steers away
from infeasible regions. With ``multi_objective=True`` the study minimises energy and
maximises quality, and the result carries the feasible Pareto front.

Example:
    >>> from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace, search
    >>> space = SearchSpace.from_options({"model": ["sd2", "sdxl"], "steps": ["10:50"], "resolution": ["512"]})
    >>> evaluator = PredictEvaluator.from_uri("models:/energy@champion", hardware="H100")  # doctest: +SKIP
    >>> result = search(space, evaluator, Constraints(min_steps=20), trials=100)  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from mlflow_energy import _search_tracking as st
from mlflow_energy import schema
from mlflow_energy._search_space import Constraints, SearchSpace, load_spec, merge_space, parse_dim
from mlflow_energy.config import SCHEDULER_DEFAULT, InferenceConfig
from mlflow_energy.errors import ConfigError, MlflowEnergyError

__all__ = [
    "Constraints", "Evaluation", "MeasureEvaluator", "NoFeasibleConfigError", "PredictEvaluator", "SearchResult",
    "SearchSpace", "default_config", "load_spec", "merge_space", "parse_dim", "search",
]

MODES: tuple[str, ...] = ("predict", "measure")
QUALITY_METRICS: dict[str, str] = {
    "psnr": schema.M_QUALITY_PSNR, "ssim": schema.M_QUALITY_SSIM, "clip": schema.M_QUALITY_CLIP,
}
_PREDICTOR_TO_METRIC: dict[str, str] = {
    "energy_text_encode_j": schema.M_ENERGY_TEXT_ENCODE,
    "energy_denoise_j": schema.M_ENERGY_DENOISE,
    "energy_decode_j": schema.M_ENERGY_DECODE,
    "energy_total_j": schema.M_ENERGY_TOTAL,
    "co2e_g": schema.M_CARBON_CO2E,
    "time_total_s": schema.M_TIME_TOTAL,
}


class NoFeasibleConfigError(MlflowEnergyError):
    """Every trial broke a constraint; the message names the least-violating config and its breaches."""


@dataclass
class Evaluation:
    """What one config scores: per-image metrics under run-schema keys.

    Attributes:
        metrics: ``energy/total_j`` always; ``time/total_s``, ``quality/*`` and more when known.
        run_id: measure mode: the measurement run this trial completes.
        energy_source, hardware: tags of the trial run.
    """

    metrics: dict[str, float]
    run_id: str | None = None
    energy_source: str = ""
    hardware: str = ""

    @property
    def energy_j(self) -> float:
        return self.metrics[schema.M_ENERGY_TOTAL]


class Evaluator(Protocol):
    mode: str
    device: str

    def check(self, space: SearchSpace, constraints: Constraints, quality_metric: str | None) -> None: ...

    def evaluate(self, cfg: InferenceConfig) -> Evaluation: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------- predict mode
def _only_hardware(model: Any) -> str:
    """The hardware of an energy model fitted on exactly one; else ask for ``--hardware``."""
    try:
        known = sorted(model.unwrap_python_model()._model.hardware)
    except AttributeError:  # not our energy model: it cannot say
        known = []
    if len(known) != 1:
        allowed = "one of " + ", ".join(known) if known else "the GPU to predict for"
        raise ConfigError("hardware", None, f"{allowed} (--hardware H100)")
    return known[0]


class PredictEvaluator:
    """Scores configs with a predictor: any object with ``.predict(df)`` following the predictor contract.

    Latency: the predictor's ``time_total_s`` output (seconds per image) when it has one; else,
    with ``avg_power_w``, ``energy_total_j / avg_power_w`` (an assumption, logged as a param);
    else a latency constraint is refused. Quality: ``quality_model`` (a
    :class:`~mlflow_energy.quality.QualityModel` or any ``.predict(df)`` with ``quality_psnr_db``
    / ``quality_ssim`` outputs); without one, quality constraints are refused.

    Example:
        >>> evaluator = PredictEvaluator(my_predictor, hardware="H100")  # doctest: +SKIP
        >>> evaluator.evaluate(InferenceConfig(model="sd2", steps=20).validate()).energy_j  # doctest: +SKIP
    """

    mode = "predict"
    device = "cuda"

    def __init__(
        self,
        predictor: Any,
        hardware: str,
        *,
        quality_model: Any = None,
        avg_power_w: float | None = None,
        model_uri: str | None = None,
        quality_model_uri: str | None = None,
    ) -> None:
        if not hardware:
            raise ConfigError("hardware", hardware, "the GPU the predictor predicts for (e.g. H100)")
        if avg_power_w is not None and not avg_power_w > 0:
            raise ConfigError("avg_power_w", avg_power_w, "a power in watts > 0")
        self.predictor = predictor
        self.hardware = hardware
        self.quality_model = quality_model
        self.avg_power_w = avg_power_w
        self.model_uri = model_uri
        self.quality_model_uri = quality_model_uri
        self._has_time: bool | None = None

    @classmethod
    def from_uri(
        cls, model_uri: str, hardware: str | None, *, quality_model_uri: str | None = None,
        avg_power_w: float | None = None,
    ) -> PredictEvaluator:
        """Load the registered energy model (and optionally a quality model) by URI.

        ``hardware=None`` takes the one hardware the energy model was fitted on, if it knows one.
        """
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        models = []
        for field_name, uri in (("model_uri", model_uri), ("quality_model_uri", quality_model_uri)):
            if uri is None:
                models.append(None)
                continue
            try:
                models.append(mlflow.pyfunc.load_model(uri))
            except (MlflowException, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(field_name, uri, f"a loadable MLflow model URI ({first[:200]})") from None
        return cls(models[0], hardware or _only_hardware(models[0]), quality_model=models[1],
                   avg_power_w=avg_power_w, model_uri=model_uri, quality_model_uri=quality_model_uri)

    def _frame(self, cfgs: Sequence[InferenceConfig]) -> pd.DataFrame:
        return pd.DataFrame({
            "model": [c.model for c in cfgs], "height": [c.height for c in cfgs], "width": [c.width for c in cfgs],
            "steps": [c.steps for c in cfgs], "guidance_scale": [float(c.guidance_scale) for c in cfgs],
            "precision": [c.precision for c in cfgs], "batch_size": [c.batch_size for c in cfgs],
            "hardware": [self.hardware] * len(cfgs),
        })

    def check(self, space: SearchSpace, constraints: Constraints, quality_metric: str | None) -> None:
        """Refuse, before any trial, constraints or objectives this predictor cannot score."""
        model_dim = space.dim("model")
        models = list(model_dim.choices) if model_dim else []
        self.predict([InferenceConfig(model=models[0], device=self.device).validate()])  # sets _has_time
        if constraints.max_latency_s is not None and not self._has_time and self.avg_power_w is None:
            raise ConfigError(
                "max_latency_s", constraints.max_latency_s,
                "a predictor with a time_total_s output, or an assumed average power (--avg-power-w) to estimate "
                "latency as energy / power",
            )
        wants_quality = [c.name for c in constraints.active() if c.metric.startswith("quality/")]
        if quality_metric:
            wants_quality.append(f"quality objective {quality_metric}")
        if not wants_quality:
            return
        if schema.M_QUALITY_CLIP in (quality_metric, *(c.metric for c in constraints.active())):
            raise ConfigError("min_clip_score", constraints.min_clip_score,
                              "no CLIP-score constraint or objective in predict mode (the quality model predicts PSNR and SSIM)")
        if self.quality_model is None:
            raise ConfigError(
                wants_quality[0], "without quality data",
                "a quality model (--quality-model-uri, or --quality-experiment with runs that log quality/psnr_db); "
                "predict mode without quality data supports step and latency constraints only",
            )
        for model in models:
            q = self._quality([InferenceConfig(model=model, device=self.device).validate()])
            if q.isna().all(axis=None):
                raise ConfigError("model", model, "a family the quality model has data for (measure it with quality first)")

    def _quality(self, cfgs: Sequence[InferenceConfig]) -> pd.DataFrame:
        frame = pd.DataFrame({"model": [c.model for c in cfgs], "scheduler": [c.scheduler for c in cfgs],
                              "steps": [c.steps for c in cfgs]})
        import mlflow.pyfunc

        qm = self.quality_model  # an in-process PythonModel takes (context, df); a loaded pyfunc takes (df)
        out = pd.DataFrame(qm.predict(None, frame) if isinstance(qm, mlflow.pyfunc.PythonModel) else qm.predict(frame))
        return pd.DataFrame({
            schema.M_QUALITY_PSNR: out.get("quality_psnr_db", pd.Series([math.nan] * len(cfgs))).to_numpy(float),
            schema.M_QUALITY_SSIM: out.get("quality_ssim", pd.Series([math.nan] * len(cfgs))).to_numpy(float),
        })

    def predict(self, cfgs: Sequence[InferenceConfig]) -> pd.DataFrame:
        """Metrics of many configs at once (run-schema keys), one row per config."""
        raw = pd.DataFrame(self.predictor.predict(self._frame(cfgs)))
        missing = [c for c in ("energy_total_j",) if c not in raw]
        if missing:
            raise ConfigError("predictor", f"outputs {list(raw.columns)}", "a predictor with an energy_total_j output")
        self._has_time = "time_total_s" in raw and bool(raw["time_total_s"].notna().all())
        out = pd.DataFrame({metric: raw[col].to_numpy(float) for col, metric in _PREDICTOR_TO_METRIC.items() if col in raw})
        if schema.M_TIME_TOTAL not in out and self.avg_power_w is not None:
            out[schema.M_TIME_TOTAL] = out[schema.M_ENERGY_TOTAL] / self.avg_power_w
        if self.quality_model is not None:
            q = self._quality(cfgs)
            out[q.columns] = q.to_numpy()
        return out

    def evaluate(self, cfg: InferenceConfig) -> Evaluation:
        row = self.predict([cfg]).iloc[0]
        return Evaluation({k: float(v) for k, v in row.items() if pd.notna(v)},
                          energy_source=schema.SOURCE_PREDICTOR, hardware=self.hardware)

    def describe(self) -> dict[str, Any]:
        return {
            schema.P_SEARCH_MODE: self.mode, schema.P_SEARCH_HARDWARE: self.hardware,
            schema.P_SEARCH_MODEL_URI: self.model_uri or type(self.predictor).__name__,
            schema.P_SEARCH_QUALITY_URI: self.quality_model_uri or (type(self.quality_model).__name__ if self.quality_model else None),
            schema.P_SEARCH_AVG_POWER: self.avg_power_w if not self._has_time else None,
        }


# ---------------------------------------------------------------------- measure mode
class MeasureEvaluator:
    """Measures each config with the runner; PSNR/SSIM against the reference (and CLIP score).

    The reference of a config is the same config (prompt, seed, size, scheduler, precision) at
    ``reference_steps``; it is rendered once per distinct reference and cached. Each trial's
    measurement is logged as a full run-schema run and becomes the trial's child run.

    Example:
        >>> evaluator = MeasureEvaluator(device="cpu", repeats=1, warmup=0, reference_steps=8)  # doctest: +SKIP
    """

    mode = "measure"

    def __init__(
        self,
        *,
        device: str = "cuda",
        weights: str = "random",
        repeats: int = 3,
        warmup: int = 1,
        reference_steps: int = 50,
        clip_model: str | None = None,
        prompt: str | None = None,
        meter: Any = None,
    ) -> None:
        from mlflow_energy.measure.runner import PipelineCache

        if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 1:
            raise ConfigError("reference_steps", reference_steps, "an integer >= 1")
        self.device = device
        self.weights = weights
        self.repeats = repeats
        self.warmup = warmup
        self.reference_steps = reference_steps
        self.clip_model = clip_model
        self.prompt = prompt
        self.meter = meter
        self._own_meter = False
        self.cache = PipelineCache()
        self._references: dict[str, Any] = {}
        self._done: dict[str, Evaluation] = {}
        self.experiment: str | None = None
        self.parent_run_id: str | None = None

    def check(self, space: SearchSpace, constraints: Constraints, quality_metric: str | None) -> None:
        if schema.M_QUALITY_CLIP in (quality_metric, *(c.metric for c in constraints.active())) and not self.clip_model:
            raise ConfigError("clip_model", None, "a local CLIP model directory (--clip-model) for CLIP-score constraints")

    def reference(self, cfg: InferenceConfig) -> Any:
        from mlflow_energy.quality import reference_config, render

        ref = reference_config(cfg, self.reference_steps).validate()
        key = ref.config_hash()
        if key not in self._references:
            self._references[key] = render(ref, pipeline=self.cache.get(ref))
        return self._references[key]

    def evaluate(self, cfg: InferenceConfig) -> Evaluation:
        from mlflow_energy import quality, tracking
        from mlflow_energy.measure.runner import measure
        from mlflow_energy.tracking.jsonl import run_metrics

        key = cfg.config_hash()
        if key in self._done:  # the sampler proposed a config measured already: reuse, log a new trial run
            return dataclasses.replace(self._done[key], run_id=None)
        m = measure(cfg, meter=self._meter(), pipeline=self.cache.get(cfg))
        metrics = run_metrics(m)  # the run schema's metrics: a repeated config's trial run carries them too
        if m.images is not None:
            metrics.update(quality.reference_quality(m.images, self.reference(cfg)))
            if self.clip_model:
                metrics[schema.M_QUALITY_CLIP] = quality.clip_score(m.images, cfg.prompt, self.clip_model)
        run_id = tracking.log_measurement(m, experiment=self.experiment, parent_run_id=self.parent_run_id)
        result = Evaluation(metrics, run_id=run_id, energy_source=m.energy_source, hardware=m.hardware)
        self._done[key] = result
        return result

    def _meter(self) -> Any:
        """One meter for the whole search (opening one per measurement costs seconds)."""
        if self.meter is None:
            from mlflow_energy.measure.meters import auto_meter

            self.meter, self._own_meter = auto_meter(self.device), True
        return self.meter

    def close(self) -> None:
        """Close the meter this evaluator opened and free the cached pipeline."""
        if self._own_meter and self.meter is not None:
            self.meter.close()
            self.meter, self._own_meter = None, False
        self.cache.clear()

    def describe(self) -> dict[str, Any]:
        return {schema.P_SEARCH_MODE: self.mode, schema.P_DEVICE: self.device,
                schema.P_REFERENCE_STEPS: self.reference_steps, schema.P_WEIGHTS: self.weights}


# ---------------------------------------------------------------------- configs
def _config(values: dict[str, Any], evaluator: Evaluator, seed: int = 0) -> InferenceConfig:
    kwargs = {k: v for k, v in values.items() if v is not None}
    extra: dict[str, Any] = {"device": evaluator.device, "seed": seed}
    if isinstance(evaluator, MeasureEvaluator):
        extra.update(weights=evaluator.weights, repeats=evaluator.repeats, warmup=evaluator.warmup)
        if evaluator.prompt:
            extra["prompt"] = evaluator.prompt
    return InferenceConfig(**{**extra, **kwargs}).validate()


def default_config(model: str, space: SearchSpace, evaluator: Evaluator, seed: int = 0) -> InferenceConfig:
    """The family's default config, with the space's fixed dimensions (fixed resolution, say) kept.

    Steps, resolution and guidance scale are the family's defaults; precision is ``fp16`` on a
    GPU (``fp32`` on a CPU), batch size 1, the pipeline's own scheduler.
    """
    values: dict[str, Any] = {"precision": "fp32" if evaluator.device == "cpu" else "fp16",
                              "batch_size": 1, "scheduler": SCHEDULER_DEFAULT}
    values.update({k: v for k, v in space.fixed_values().items() if k != "model"})
    values["model"] = model
    return _config(values, evaluator, seed)


def _check_space(space: SearchSpace, evaluator: Evaluator) -> None:
    """Every value of every dimension must make a valid config (fails fast, one line)."""
    for values in space.corner_values():
        _config(values, evaluator)


def _study_name(space: SearchSpace, constraints: Constraints, evaluator: Evaluator, multi: bool) -> str:
    blob = "|".join([space.to_json(), repr(sorted(constraints.as_dict().items())), evaluator.mode, str(multi)])
    return "search-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------- result
@dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
        best_config: the feasible config with the lowest energy per image.
        best_metrics: its metrics (run-schema keys).
        default_config, default_energy_j: the best family's default config and its energy per image.
        energy_saved_j, energy_saved_frac: ``default - best`` in J per image, and as a fraction of default.
        pareto: feasible energy-vs-quality Pareto front (empty without quality).
        trials: every complete trial: config, metrics, violations, ``feasible``.
        n_trials, n_feasible: complete trials in the study, feasible ones.
        parent_run_id, study_name: where it is recorded.
    """

    best_config: InferenceConfig
    best_metrics: dict[str, float]
    default_config: InferenceConfig
    default_energy_j: float
    energy_saved_j: float
    energy_saved_frac: float
    pareto: pd.DataFrame
    trials: pd.DataFrame
    n_trials: int
    n_feasible: int
    parent_run_id: str | None
    study_name: str
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the terminal: best config, its metrics, the saving against the default."""
        c, d = self.best_config, self.default_config
        lines = [
            f"best config ({self.n_feasible}/{self.n_trials} trials feasible): model={c.model} {c.height}x{c.width} "
            f"steps={c.steps} guidance_scale={c.guidance_scale:g} precision={c.precision} batch_size={c.batch_size} "
            f"scheduler={c.scheduler}",
            "  " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(self.best_metrics.items())),
            f"default config: {d.height}x{d.width} steps={d.steps} guidance_scale={d.guidance_scale:g} "
            f"precision={d.precision} batch_size={d.batch_size}: {self.default_energy_j:.4g} J per image",
            f"energy saved vs default: {self.energy_saved_j:.4g} J per image ({100 * self.energy_saved_frac:.1f}%)",
        ]
        if len(self.pareto) > 1:
            lines.append(f"Pareto front (energy vs quality): {len(self.pareto)} configs")
        if self.parent_run_id:
            lines.append(f"MLflow parent run: {self.parent_run_id}")
        return "\n".join(lines)


def _pareto(trials: pd.DataFrame, quality_metric: str | None) -> pd.DataFrame:
    """Feasible trials no other feasible trial beats on both energy (lower) and quality (higher)."""
    if not quality_metric or quality_metric not in trials:
        return trials.iloc[0:0]
    data = trials[trials["feasible"] & trials[quality_metric].notna()]
    data = data.sort_values([schema.M_ENERGY_TOTAL, quality_metric], ascending=[True, False])
    keep, best_q = [], -math.inf
    seen: set[tuple[float, float]] = set()
    for idx, row in data.iterrows():
        point = (row[schema.M_ENERGY_TOTAL], row[quality_metric])
        if row[quality_metric] > best_q and point not in seen:
            keep.append(idx)
            best_q = row[quality_metric]
            seen.add(point)
    return data.loc[keep].reset_index(drop=True)


def _trials_frame(trials: Sequence[Any]) -> pd.DataFrame:
    rows = []
    for t in trials:
        row = {"trial": t.number, **t.user_attrs.get(st.UA_CONFIG, {}), **t.user_attrs.get(st.UA_METRICS, {})}
        row.update({schema.constraint_metric(k): v for k, v in st.violations(t).items()})
        row["feasible"] = st.is_feasible(t)
        rows.append(row)
    return pd.DataFrame(rows)


def _infeasible_message(trials: Sequence[Any], constraints: Constraints) -> str:
    def score(t: Any) -> float:
        return sum(max(0.0, v) for v in st.violations(t).values())

    worst = min(trials, key=score)
    cfg = worst.user_attrs.get(st.UA_CONFIG, {})
    metrics = {**worst.user_attrs.get(st.UA_METRICS, {}), schema.P_STEPS: cfg.get(schema.P_STEPS)}
    broken = [c.describe(float(metrics[c.metric])) for c in constraints.active()
              if st.violations(worst).get(c.name, 0) > 0 and metrics.get(c.metric) is not None]
    shown = " ".join(f"{k}={cfg[k]}" for k in (schema.P_MODEL, schema.P_HEIGHT, schema.P_WIDTH, schema.P_STEPS,
                                                schema.P_GUIDANCE_SCALE, schema.P_PRECISION, schema.P_BATCH_SIZE,
                                                schema.P_SCHEDULER) if k in cfg)
    return (f"no feasible config in {len(trials)} trials; the least-violating one ({shown}) breaks "
            + "; ".join(broken) + ": relax that constraint or widen the space")


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
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(_STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except (ImportError, ValueError) as exc:
            raise ConfigError("storage", st.redact(url), f"an SQLAlchemy database URL Optuna can open ({exc})") from None
        except (IntegrityError, OperationalError):
            # Workers that start together on a new database race to create Optuna's schema;
            # the loser finds it made by the winner on the next attempt.
            if attempt == _STORAGE_ATTEMPTS - 1:
                raise
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
    evaluator.check(space, constraints, qkey if multi_objective else None)
    active = constraints.active()
    study_name = study_name or _study_name(space, constraints, evaluator, multi_objective)
    directions = ["minimize", "maximize"] if multi_objective else ["minimize"]

    rdb = _storage(storage)
    with _quiet_optuna():
        study = optuna.create_study(storage=rdb, study_name=study_name, directions=directions,
                                    sampler=_sampler(seed, len(active)), load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError("study_name", study_name, f"a study with directions {directions} (this one has other objectives)")

    exp_id = st.experiment_id(experiment)
    params = {
        **evaluator.describe(), schema.P_SEARCH_TRIALS: trials, schema.P_SEARCH_SEED: seed,
        schema.P_SEARCH_SAMPLER: type(study.sampler).__name__, schema.P_SEARCH_STUDY: study_name,
        schema.P_SEARCH_STORAGE: st.redact(storage),
        schema.P_SEARCH_OBJECTIVES: "energy_total_j:minimize" + (f",{quality_metric}:maximize" if multi_objective else ""),
        **{schema.constraint_param(c.name): c.bound for c in active},
    }
    parent = st.start_parent(exp_id, study_name, params)
    if isinstance(evaluator, MeasureEvaluator):
        evaluator.experiment, evaluator.parent_run_id = experiment, parent
    image_seed = 0

    def objective(trial: optuna.trial.Trial) -> float | tuple[float, float]:
        cfg = _config(space.suggest(trial), evaluator, image_seed)
        ev = evaluator.evaluate(cfg)
        values = {c.metric: ev.metrics.get(c.metric, math.nan) for c in active}
        values[schema.P_STEPS] = float(cfg.steps)
        cons = {c.name: c.violation(values[c.metric]) if not math.isnan(values[c.metric]) else 1.0 for c in active}
        config = {k: v for k, v in cfg.to_dict().items() if k in schema.RUN_PARAMS}
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
        with _quiet_optuna():
            study.optimize(
                objective, n_trials=trials, callbacks=[st.TrialLogger(exp_id, parent, study_name)] if log_trials else [],
                catch=(RuntimeError,) if evaluator.mode == "measure" else (),
            )
        result = _summarise(study, space, evaluator, constraints, qkey, parent, study_name, plots)
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
    parent: str, study_name: str, plots: bool,
) -> SearchResult:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise NoFeasibleConfigError("no trial completed: see the failed trial runs' mlflow_energy.failure tags")
    frame = _trials_frame(complete)
    feasible = [t for t in complete if st.is_feasible(t)]
    pareto = _pareto(frame, qkey)
    counts = {schema.M_SEARCH_N_TRIALS: float(len(complete)), schema.M_SEARCH_N_FEASIBLE: float(len(feasible))}
    if not feasible:
        message = _infeasible_message(complete, constraints)
        st.log_summary(parent, best=None, metrics=counts, space_json=space.to_json(), trials=frame, pareto=pareto,
                       quality_metric=qkey, study=None)
        raise NoFeasibleConfigError(message)
    best = min(feasible, key=lambda t: (t.user_attrs[st.UA_METRICS][schema.M_ENERGY_TOTAL], t.number))
    best_cfg = _config({k: v for k, v in best.user_attrs[st.UA_CONFIG].items()
                        if k in ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler")},
                       evaluator, best.user_attrs[st.UA_CONFIG].get(schema.P_SEED, 0))
    best_metrics = dict(best.user_attrs[st.UA_METRICS])
    default = default_config(best_cfg.model, space, evaluator, best_cfg.seed)
    default_energy = _default_energy(evaluator, default)
    saved = default_energy - best_metrics[schema.M_ENERGY_TOTAL]
    metrics = {
        **counts, schema.M_SEARCH_DEFAULT_ENERGY: default_energy, schema.M_SEARCH_SAVED_J: saved,
        schema.M_SEARCH_SAVED_FRAC: saved / default_energy if default_energy > 0 else 0.0,
    }
    st.log_summary(
        parent, best={"config": best.user_attrs[st.UA_CONFIG], "metrics": best_metrics}, metrics=metrics,
        space_json=space.to_json(), trials=frame, pareto=pareto, quality_metric=qkey,
        study=study if plots else None,
    )
    return SearchResult(
        best_config=best_cfg, best_metrics=best_metrics, default_config=default, default_energy_j=default_energy,
        energy_saved_j=saved, energy_saved_frac=metrics[schema.M_SEARCH_SAVED_FRAC], pareto=pareto, trials=frame,
        n_trials=len(complete), n_feasible=len(feasible), parent_run_id=parent, study_name=study_name,
    )


def _default_energy(evaluator: Evaluator, default: InferenceConfig) -> float:
    if isinstance(evaluator, PredictEvaluator):
        return float(evaluator.predict([default])[schema.M_ENERGY_TOTAL].iloc[0])
    from mlflow_energy.measure.runner import measure

    m = measure(default, meter=evaluator._meter(), pipeline=evaluator.cache.get(default))  # type: ignore[attr-defined]
    return float(m.energy_j[schema.PHASE_TOTAL])


class _quiet_optuna:
    """Optuna logs one INFO line per trial; keep the terminal to our own summary."""

    def __enter__(self) -> None:
        import optuna

        self._level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        import optuna

        optuna.logging.set_verbosity(self._level)


# ---------------------------------------------------------------------- options (CLI, YAML)
DIM_OPTIONS: tuple[str, ...] = (
    "model", "resolution", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler",
)
SEARCH_DEFAULTS: dict[str, Any] = {
    "mode": "predict", "model_uri": None, "hardware": None, "avg_power_w": None, "quality_model_uri": None,
    "quality_experiment": (), "trials": 50, "seed": 0, "storage": None, "study_name": None, "experiment": None,
    "multi_objective": False, "quality_metric": "psnr", "device": "cuda", "weights": "random", "repeats": 3,
    "warmup": 1, "reference_steps": 50, "clip_model": None, "prompt": None, "plots": True, "log_trials": True,
}


def search_from_options(
    dims: dict[str, Sequence[str]], constraints: dict[str, Any], options: dict[str, Any], spec: str | None = None
) -> SearchResult:
    """The ``mlflow-energy search`` command: merge a YAML spec with command-line values and search.

    Command-line values (not ``None``, not empty) override the spec's ``space``,
    ``constraints`` and ``search`` sections, which override :data:`SEARCH_DEFAULTS`.

    Example:
        >>> search_from_options({"model": ["sd2"], "steps": ["10:50"]}, {"min_steps": 20},
        ...                     {"model_uri": "models:/energy@champion", "hardware": "H100"})  # doctest: +SKIP
    """
    loaded = load_spec(spec) if spec else {"space": {}, "constraints": {}, "search": {}}
    unknown = set(loaded["search"]) - set(SEARCH_DEFAULTS)
    if unknown:
        raise ConfigError("spec.search", sorted(unknown)[0], "options " + ", ".join(sorted(SEARCH_DEFAULTS)))
    opts = {**SEARCH_DEFAULTS, **loaded["search"], **{k: v for k, v in options.items() if v not in (None, (), [])}}
    cons = {**loaded["constraints"], **{k: v for k, v in constraints.items() if v is not None}}
    space = SearchSpace.from_options(merge_space(loaded["space"], dims))
    if opts["mode"] not in MODES:
        raise ConfigError("mode", opts["mode"], "one of " + ", ".join(MODES))
    if opts["mode"] == "predict":
        if not opts["model_uri"]:
            raise ConfigError("model_uri", None, "the registered energy model (--model-uri models:/NAME@champion)")
        evaluator: Evaluator = PredictEvaluator.from_uri(
            opts["model_uri"], opts["hardware"],
            quality_model_uri=opts["quality_model_uri"], avg_power_w=opts["avg_power_w"],
        )
        experiments = opts["quality_experiment"]
        if isinstance(experiments, str):
            experiments = [experiments]
        if experiments and evaluator.quality_model is None:
            from mlflow_energy.quality import fit_quality_model

            evaluator.quality_model = fit_quality_model(list(experiments))
            evaluator.quality_model_uri = "fitted from experiments " + ",".join(experiments)
    else:
        evaluator = MeasureEvaluator(
            device=opts["device"], weights=opts["weights"], repeats=opts["repeats"], warmup=opts["warmup"],
            reference_steps=opts["reference_steps"], clip_model=opts["clip_model"], prompt=opts["prompt"],
        )
    return search(
        space, evaluator, Constraints(**cons), trials=opts["trials"], seed=opts["seed"], storage=opts["storage"],
        study_name=opts["study_name"], experiment=opts["experiment"], multi_objective=bool(opts["multi_objective"]),
        quality_metric=opts["quality_metric"], plots=bool(opts["plots"]), log_trials=bool(opts["log_trials"]),
    )
