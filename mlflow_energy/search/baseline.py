"""The user's baseline config, the default quality floor, and the saving with its 90% interval.

The saving a search reports is against the config the user runs today (the *baseline*): named
with ``baseline={name: value}`` (``--baseline steps=30``), else the first listed family's
default at the search's output size (the fixed resolution, else the family's), the device's usual
precision, batch size 1 and the pipeline's scheduler.

The quality floor (on by default): PSNR against the reference >= ``min(30 dB, the baseline's
own PSNR - 1 dB)``: a config may not drift from what the sampler converges to by more than the
baseline does (less 1 dB), and need not beat 30 dB where the baseline is near-converged. With a
local CLIP model (measure mode), also CLIP score >= the baseline's less 1.

The saving's 90% interval, ``1 - E_best / E_baseline``:

- measure mode: from the repeats. Each config's 95% half-width of the mean (Student t) gives a
  standard error; the two measurements are independent, so the log ratio's standard error is
  the root sum of squares of the relative errors, and the 90% interval is +-1.645 of it.
- predict mode: from the predictor's interval columns (90%, log-symmetric). Both predictions
  share the model's error for their family and hardware (a family-level or setup-level miss
  moves both the same way and cancels in the ratio); what does not cancel is each config's own
  residual, the width of the predictor's ``known`` level (leave-one-config-out), asked for with
  ``params={"interval_level": "known"}``. The log ratio's half-width is the root sum of squares
  of those two config-level half-widths (the residuals taken as independent, which overstates
  it for neighbouring configs). When the families differ, or the predictor takes no such param,
  the rows' own half-widths are combined the same way (independent, wider).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from mlflow_energy import schema
from mlflow_energy.config import SCHEDULER_DEFAULT, InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.search.space import DIM_TYPES, SearchSpace, _cast

FLOOR_CAP_DB = 30.0  # the default floor never asks for more than this
FLOOR_MARGIN_DB = 1.0  # nor more than the baseline's own PSNR less this
CLIP_MARGIN = 1.0  # measure mode with a CLIP model: CLIP score >= the baseline's less this
Z90 = 1.6448536269514722  # two-sided 90%: the normal quantile 0.95
Z95 = 1.959963984540054
BASELINE_FIELDS: tuple[str, ...] = (
    "model", "resolution", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler",
    "cfg_passes",
)


def parse_baseline(items: Any) -> dict[str, Any]:
    """``["steps=30", "guidance_scale=7"]``, ``"steps=30,precision=fp16"`` or a mapping -> typed values.

    Example:
        >>> parse_baseline(["steps=30,resolution=512"])
        {'steps': 30, 'height': 512, 'width': 512}
    """
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        texts = [items] if isinstance(items, str) else list(items)
        pairs = []
        for text in texts:
            for part in str(text).split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise ConfigError("baseline", part, "NAME=VALUE pairs, NAME one of " + ", ".join(BASELINE_FIELDS))
                name, value = part.split("=", 1)
                pairs.append((name.strip().replace("-", "_"), value.strip()))
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name not in BASELINE_FIELDS:
            raise ConfigError("baseline", name, "one of " + ", ".join(BASELINE_FIELDS))
        typed = _cast(name, value) if DIM_TYPES[name] is not str or isinstance(value, str) else value
        if name == "resolution":
            out["height"] = out["width"] = typed
        else:
            out[name] = typed
    return out


def baseline_config(space: SearchSpace, evaluator: Any, overrides: Mapping[str, Any] | None = None,
                    seed: int = 0) -> InferenceConfig:
    """The user's baseline: ``overrides``, else the family default at the space's output size.

    The family is the first one the space lists; precision the device's usual one (``fp16`` on
    a GPU, ``fp32`` on a CPU) unless the space fixes one or lacks it (then its first choice).
    """
    from mlflow_energy.search.study import _config

    overrides = dict(overrides or {})
    model_dim = space.dim("model")
    assert model_dim is not None  # SearchSpace.from_options requires one
    usual = "fp32" if evaluator.device == "cpu" else "fp16"
    dim = space.dim("precision")
    if dim is not None and not dim.ranged and usual not in dim.choices:
        usual = dim.choices[0]
    values: dict[str, Any] = {"precision": usual, "batch_size": 1, "scheduler": SCHEDULER_DEFAULT}
    values.update({k: v for k, v in space.fixed_values().items() if k in ("height", "width")})
    values["model"] = model_dim.values()[0]
    values.update(overrides)
    return _config(values, evaluator, seed)


def inherited(space: SearchSpace, base: InferenceConfig, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial of the baseline's family takes from the baseline for the dimensions the space leaves
    out: its precision, output size and whatever ``--baseline`` named (other families: the precision)."""
    searched = set(space.searched({k: 1 for k in BASELINE_FIELDS if k != "resolution"}))
    names = {"precision", "height", "width", *overrides}
    return {k: getattr(base, k) for k in names - searched - {"model", "resolution"}}


def within_seen(space: SearchSpace, base: InferenceConfig, evaluator: Any) -> tuple[SearchSpace, list[str]]:
    """Predict mode: drop the categorical values the predictor refuses at the baseline (outside what it has seen).

    Each value of a categorical dimension is priced once in the baseline's config; a refused one
    leaves the space, with a note naming it. Ranges stay: a refused point of one is a pruned trial.
    """
    from mlflow_energy.search.evaluators import RefusedConfig
    from mlflow_energy.search.space import Dim
    from mlflow_energy.search.study import _config

    dims, notes = dict(space.dims), []
    fields = {k: getattr(base, k) for k in BASELINE_FIELDS if k != "resolution"}
    for name, dim in space.dims.items():
        if dim.ranged or dim.fixed or name in ("model", "resolution", "height", "width"):
            continue
        kept = []
        for value in dim.choices:
            try:
                evaluator.predict([_config({**fields, name: value}, evaluator, base.seed)])
            except RefusedConfig:
                notes.append(f"{name}={value} left out: outside what the energy model has seen")
                continue
            except ConfigError:
                pass  # not a config with the baseline's other values; it may be with others
            kept.append(value)
        if kept:
            dims[name] = Dim(name, choices=tuple(kept))
    return SearchSpace(dims), notes


def enqueue_baseline(study: Any, space: SearchSpace, base: InferenceConfig) -> None:
    """Try the baseline first when the space holds it, so a search always has one config meeting its own floor."""
    params: dict[str, Any] = {}
    for name, dim in space.dims.items():
        if dim.fixed:
            continue
        value = getattr(base, name, None) if name != "resolution" else (base.height if base.height == base.width else None)
        ok = value is not None and (dim.low <= value <= dim.high if dim.ranged else value in dim.choices)
        if not ok:
            return
        params[name] = value
    study.enqueue_trial(params, skip_if_exists=True)


def quality_floor(baseline_psnr: float | None) -> float | None:
    """The default PSNR floor from the baseline's own PSNR; ``None`` when that is unknown.

    Example:
        >>> quality_floor(100.0), quality_floor(24.04), quality_floor(None)
        (30.0, 23.0, None)
    """
    if baseline_psnr is None or not math.isfinite(baseline_psnr):
        return None
    return round(min(FLOOR_CAP_DB, baseline_psnr - FLOOR_MARGIN_DB), 1)


def default_floors(baseline_metrics: Mapping[str, float]) -> dict[str, float]:
    """The default floors from the baseline's metrics: ``min_psnr`` and, when it has a CLIP score, ``min_clip_score``.

    Example:
        >>> default_floors({"quality/psnr_db": 26.0, "quality/clip_score": 31.24})
        {'min_psnr': 25.0, 'min_clip_score': 30.24}
    """
    floors: dict[str, float] = {}
    psnr = quality_floor(baseline_metrics.get(schema.M_QUALITY_PSNR))
    if psnr is not None:
        floors["min_psnr"] = psnr
    clip = baseline_metrics.get(schema.M_QUALITY_CLIP)
    if clip is not None and math.isfinite(clip):
        floors["min_clip_score"] = round(clip - CLIP_MARGIN, 2)
    return floors


@dataclasses.dataclass(frozen=True)
class Saving:
    """``frac = 1 - best / baseline`` with its 90% interval (``nan`` when none can be made)."""

    frac: float
    low: float
    high: float
    how: str

    @property
    def beyond_noise(self) -> bool:
        """True when the whole interval is above zero (a real saving)."""
        return math.isfinite(self.low) and self.low > 0

    def metrics(self) -> dict[str, float]:
        return {schema.M_SEARCH_SAVED_FRAC: self.frac, schema.M_SEARCH_SAVED_FRAC_LOW: self.low,
                schema.M_SEARCH_SAVED_FRAC_HIGH: self.high}


def _from_log_ratio(ratio: float, half: float, how: str) -> Saving:
    if not (ratio > 0 and math.isfinite(half)):
        return Saving(1.0 - ratio, math.nan, math.nan, how)
    log_r = math.log(ratio)
    return Saving(1.0 - ratio, 1.0 - math.exp(log_r + half), 1.0 - math.exp(log_r - half), how)


def measured_saving(best_j: float, best_ci95_j: float | None, base_j: float, base_ci95_j: float | None) -> Saving:
    """Measure mode: independent repeats of both configs (95% half-widths) -> the 90% interval.

    Example:
        >>> s = measured_saving(50.0, 1.0, 100.0, 2.0)
        >>> round(s.frac, 3), round(s.low, 3), round(s.high, 3)
        (0.5, 0.488, 0.512)
    """
    how = "measured repeats of both configs (95% half-widths -> 90%, independent)"
    if base_j <= 0:
        return Saving(math.nan, math.nan, math.nan, how)
    rel = [(ci or math.nan) / Z95 / e if e > 0 else math.nan for e, ci in ((best_j, best_ci95_j), (base_j, base_ci95_j))]
    if best_j == base_j and best_ci95_j == base_ci95_j:  # one and the same measurement
        return Saving(0.0, 0.0, 0.0, how + "; the best config is the baseline itself")
    return _from_log_ratio(best_j / base_j, Z90 * math.hypot(*rel), how)


def predicted_saving(evaluator: Any, best: InferenceConfig, base: InferenceConfig) -> Saving:
    """Predict mode: the predictor's 90% intervals, its family- and hardware-level error shared."""
    rows = evaluator.interval_rows([best, base])
    (b, b_lo, b_hi), (d, d_lo, d_hi) = rows
    if best.config_hash() == base.config_hash():
        return Saving(0.0, 0.0, 0.0, "the best config is the baseline itself")
    halves = [math.log(hi / lo) / 2 if lo > 0 and hi > 0 else math.nan for _, lo, hi in rows]
    how = "predictor's 90% intervals, independent (families differ or no config-level width)"
    if best.model == base.model:
        known = evaluator.interval_rows([best, base], level="known")
        if known is not None:
            halves = [math.log(hi / lo) / 2 if lo > 0 and hi > 0 else math.nan for _, lo, hi in known]
            how = "predictor's config-level (known) 90% widths; its family/hardware error shared, cancels"
    return _from_log_ratio(b / d if d > 0 else math.nan, math.hypot(*halves), how)


def describe_change(best: InferenceConfig, base: InferenceConfig) -> str | None:
    """A plain warning when the best config changes what the user asked for (family, output size)."""
    parts = []
    if best.model != base.model:
        parts.append(f"family {best.model} instead of {base.model}")
    if (best.height, best.width) != (base.height, base.width):
        parts.append(f"{best.height}x{best.width} images instead of {base.height}x{base.width}")
    if not parts:
        return None
    return "the best config changes " + " and ".join(parts) + " (searched dimensions): part of the saving is that change"
