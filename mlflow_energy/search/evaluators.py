"""How a trial's config is scored: by the registered energy model (milliseconds) or by measuring it live."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from mlflow_energy import schema
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.search.space import Constraints, SearchSpace

#: Measure mode's device when none is given: what ``mlflow-energy measure`` takes (this machine's CPU).
DEFAULT_DEVICE: str = InferenceConfig.__dataclass_fields__["device"].default

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


class RefusedConfig(ConfigError):
    """The predictor refused a config (outside what it has seen): the trial is pruned, not the search."""


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
    :class:`~mlflow_energy.search.quality.QualityModel` or any ``.predict(df)`` with ``quality_psnr_db``
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
        # The device the predicted configs run on: the GPU the hardware names, else the CPU
        # (an energy model fitted on CPU runs predicts CPU configs; a default priced in fp16 on
        # a GPU would be a config this machine cannot run).
        from mlflow_energy.measure.hardware import find_gpu

        self.device = "cuda" if find_gpu(hardware) is not None else "cpu"
        self.quality_model = quality_model
        self.stored_quality = False  # True: quality_model is the stored fidelity proxy (steps and scheduler only)
        self.baseline: InferenceConfig | None = None  # set by the search: the user's baseline
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
            "cfg_passes": [float(c.passes) for c in cfgs], "hardware": [self.hardware] * len(cfgs),
        })

    def check(self, space: SearchSpace, constraints: Constraints, quality_metric: str | None) -> None:
        """Refuse, before any trial, constraints or objectives this predictor cannot score."""
        limit_dim = space.dim("power_limit_w")
        if limit_dim is not None:
            raise ConfigError(
                "power_limit_w", limit_dim.to_json(),
                "measure mode (--mode measure on the GPU): the predictor takes no power limit, as its training "
                "data (the public measurements, this project's sweeps) ran at each GPU's default limit",
            )
        model_dim = space.dim("model")
        models = list(model_dim.choices) if model_dim else []
        first = self.baseline or InferenceConfig(model=models[0], device=self.device).validate()
        try:
            self.predict([first])  # sets _has_time; a refused baseline is one line before any trial
        except RefusedConfig as exc:
            raise ConfigError("baseline", f"{first.model} {first.height}x{first.width} steps={first.steps} "
                              f"{first.precision} batch {first.batch_size}",
                              f"a config the energy model has seen (name one with --baseline NAME=VALUE): {exc}") from None
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
            self.use_stored_quality()
        if self.quality_model is None:
            raise ConfigError(
                wants_quality[0], "without quality data",
                "a quality model (--quality-model-uri, or --quality-experiment with runs that log quality/psnr_db); "
                "predict mode without quality data supports step and latency constraints only",
            )
        for model in models:
            probe = dataclasses.replace(first, model=model) if model == first.model else \
                InferenceConfig(model=model, device=self.device, precision=first.precision).validate()
            q = self._quality([probe])
            if q.isna().all(axis=None):
                raise ConfigError("model", model, "a family the quality model has data for (measure it with quality first)")

    def use_stored_quality(self) -> bool:
        """Take the stored fidelity proxy (:mod:`~mlflow_energy.search.fidelity`) as the quality model."""
        from mlflow_energy.search.fidelity import stored_quality_model

        if self.quality_model is None:
            self.quality_model, self.stored_quality = stored_quality_model(), True
            self.quality_model_uri = "stored fidelity proxy (tiny pipelines, steps and scheduler)"
        return self.stored_quality

    def _quality(self, cfgs: Sequence[InferenceConfig]) -> pd.DataFrame:
        models = [c.model for c in cfgs]
        if self.stored_quality:
            from mlflow_energy.search.fidelity import base_family

            models = [base_family(m) for m in models]
        frame = pd.DataFrame({"model": models, "scheduler": [c.scheduler for c in cfgs],
                              "steps": [c.steps for c in cfgs]})
        import mlflow.pyfunc

        qm = self.quality_model  # an in-process PythonModel takes (context, df); a loaded pyfunc takes (df)
        out = pd.DataFrame(qm.predict(None, frame) if isinstance(qm, mlflow.pyfunc.PythonModel) else qm.predict(frame))
        q = pd.DataFrame({
            schema.M_QUALITY_PSNR: out.get("quality_psnr_db", pd.Series([math.nan] * len(cfgs))).to_numpy(float),
            schema.M_QUALITY_SSIM: out.get("quality_ssim", pd.Series([math.nan] * len(cfgs))).to_numpy(float),
        })
        if self.stored_quality and self.baseline is not None:
            # the proxy knows steps and scheduler: a changed guidance, CFG or precision has no predicted quality
            b = self.baseline
            unknown = [(c.guidance_scale, c.passes, c.precision) != (b.guidance_scale, b.passes,
                                                                                  b.precision) for c in cfgs]
            q.loc[unknown, :] = math.nan
        return q

    def interval_rows(self, cfgs: Sequence[InferenceConfig], level: str | None = None
                      ) -> list[tuple[float, float, float]] | None:
        """``(energy, low, high)`` per config from the predictor's 90% interval columns.

        ``level`` asks the predictor for one interval level for every row (param ``interval_level``);
        ``None`` is returned when it cannot answer that.
        """
        frame = self._frame(cfgs)
        try:
            raw = pd.DataFrame(self.predictor.predict(frame, params={"interval_level": level}) if level
                               else self.predictor.predict(frame))
        except Exception:  # noqa: BLE001 - a predictor without that param or level: the caller falls back
            if level:
                return None
            raise
        if level and "interval_level" in raw and not (raw["interval_level"].astype(str) == level).all():
            return None  # the param was ignored: the widths are not that level's
        lo = raw.get("energy_total_j_low", raw["energy_total_j"])
        hi = raw.get("energy_total_j_high", raw["energy_total_j"])
        return [(float(e), float(a), float(b)) for e, a, b in zip(raw["energy_total_j"], lo, hi, strict=True)]

    def predict(self, cfgs: Sequence[InferenceConfig]) -> pd.DataFrame:
        """Metrics of many configs at once (run-schema keys), one row per config."""
        from mlflow.exceptions import MlflowException

        try:
            raw = pd.DataFrame(self.predictor.predict(self._frame(cfgs)))
        except MlflowException as exc:  # the pyfunc's input check (e.g. FLOPs outside the fitted range)
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            err = RefusedConfig("config", exc.message, "a config the energy model covers")
            err.args = (exc.message.removeprefix("row 0: "),)  # already names the field, value and range
            raise err from None
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
            schema.P_SEARCH_QUALITY_SOURCE: ("stored fidelity proxy: tiny random-weight pipelines, steps and scheduler"
                                             if self.stored_quality else ("quality model" if self.quality_model else None)),
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
        device: str = DEFAULT_DEVICE,
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
        self.baseline: InferenceConfig | None = None  # set by the search: quality is measured against it

    def check(self, space: SearchSpace, constraints: Constraints, quality_metric: str | None) -> None:
        from mlflow_energy.measure import check_device

        check_device(self.device)  # before any trial: a missing device is one line, not a failed trial
        if schema.M_QUALITY_CLIP in (quality_metric, *(c.metric for c in constraints.active())) and not self.clip_model:
            raise ConfigError("clip_model", None, "a local CLIP model directory (--clip-model) for CLIP-score constraints")

    def reference(self, cfg: InferenceConfig) -> Any:
        from mlflow_energy.search.quality import reference_config, render

        ref = reference_config(self.reference_base(cfg), self.reference_steps).validate()
        key = ref.config_hash()
        if key not in self._references:
            self._references[key] = render(ref, pipeline=self.cache.get(ref))
        return self._references[key]

    def reference_base(self, cfg: InferenceConfig) -> InferenceConfig:
        """What the reference of ``cfg`` converges from: the baseline (its guidance, CFG, precision,
        scheduler) at the trial's batch size and seed, when the trial keeps the baseline's family and
        size; else the trial's own config (images of another family or size cannot be compared)."""
        b = self.baseline
        if b is None or (b.model, b.height, b.width) != (cfg.model, cfg.height, cfg.width):
            return cfg
        return dataclasses.replace(b, batch_size=cfg.batch_size, seed=cfg.seed, prompt=cfg.prompt)

    def evaluate(self, cfg: InferenceConfig) -> Evaluation:
        from mlflow_energy import tracking
        from mlflow_energy.measure.runner import measure
        from mlflow_energy.search import quality
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
