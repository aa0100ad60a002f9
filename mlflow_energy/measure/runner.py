"""Measure one inference config, phase by phase: text encoding, denoising, decoding.

Each measured repeat opens one window over the whole inference and, nested inside it, one
window per phase, the three back to back; the device is synchronised at every boundary.
Warm-up runs go first, unmeasured. Values are per image (divided by the batch size), the
mean over repeats; the phase sum is compared with the whole window.

Example:
    >>> from mlflow_energy.config import InferenceConfig
    >>> from mlflow_energy.measure.runner import measure
    >>> m = measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=2, repeats=1, warmup=0))
    >>> sorted(m.energy_j)
    ['decode', 'denoise', 'text_encode', 'total']
    >>> m.images.shape
    torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from mlflow_energy import schema
from mlflow_energy.config import SCHEDULER_DEFAULT, InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import EnergyMeter, auto_meter

WHOLE = "whole"
_DEFAULT_SCHEDULER_ATTR = "_mlflow_energy_default_scheduler"


@dataclass
class Measurement:
    """What :func:`measure` returns: per-image energy and time of one config.

    Attributes:
        config: the validated config.
        energy_j: joules per image, mean over repeats: ``text_encode``, ``denoise``,
            ``decode`` and ``total`` (the phase sum).
        energy_total_std_j: std over repeats of the per-image total (0 with one repeat).
        time_s: seconds per image, same keys.
        flops: FLOP per image (:func:`mlflow_energy.flops.config_flops`).
        power_avg_w: mean power over the whole-inference windows.
        whole_window_j: joules per image in the window over the whole inference.
        phase_sum_gap: ``(phase sum - whole) / whole``.
        energy_source: the meter's label (``zeus:nvml``, ``estimate:cpu-tdp``, ...).
        hardware: GPU or CPU model name.
        extra_tags: more run tags from the meter (driver version, power limit, ...).
        images: the last repeat's images, ``(B, 3, H, W)`` float in [0, 1], on the CPU.
        timeline: power samples over the measured repeats (GPU), else ``None``.
    """

    config: InferenceConfig
    energy_j: dict[str, float]
    energy_total_std_j: float
    time_s: dict[str, float]
    flops: dict[str, float]
    power_avg_w: float
    whole_window_j: float
    phase_sum_gap: float
    energy_source: str
    hardware: str
    extra_tags: dict[str, str] = field(default_factory=dict)
    images: torch.Tensor | None = None
    timeline: Any | None = None


# --------------------------------------------------------------------------- pipelines
def build_pipeline(cfg: InferenceConfig) -> Any:
    """The pipeline of ``cfg``'s family on its device in its precision (random or real weights)."""
    from mlflow_energy.families import _adapter, _build, get_family

    fam = get_family(cfg.model)
    if not fam.measurable:
        from mlflow_energy.families import family_names

        raise ConfigError("model", cfg.model, "a measurable family: " + ", ".join(family_names(measurable_only=True)))
    adapter = _adapter.get_adapter(fam.adapter)
    return _build.build_pipeline(
        fam,
        weights=cfg.weights,
        device=cfg.device,
        precision=cfg.precision,
        tokenizers=adapter.tokenizers(fam) if cfg.weights == "random" else None,
    )


def free_device_memory() -> None:
    """Collect garbage and return cached CUDA memory to the driver."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PipelineCache:
    """Keeps one loaded pipeline and reuses it for configs of the same (model, weights, precision, device).

    A config with another key frees the previous pipeline first (garbage collection and
    ``torch.cuda.empty_cache``), so only one pipeline occupies the device.

    Example:
        >>> cache = PipelineCache()
        >>> cfg = InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1).validate()
        >>> cache.get(cfg) is cache.get(cfg)
        True
        >>> cache.clear()
    """

    def __init__(self) -> None:
        self._key: tuple[str, str, str, str] | None = None
        self._pipe: Any | None = None
        self.builds = 0
        self.last_build_s = 0.0

    @staticmethod
    def key(cfg: InferenceConfig) -> tuple[str, str, str, str]:
        return (cfg.model, cfg.weights, cfg.precision, cfg.device)

    def get(self, cfg: InferenceConfig) -> Any:
        """The pipeline for ``cfg``, built when the key changes."""
        key = self.key(cfg)
        if self._pipe is not None and key == self._key:
            return self._pipe
        self.clear()
        start = time.perf_counter()
        self._pipe = build_pipeline(cfg)
        self.last_build_s = time.perf_counter() - start
        self._key = key
        self.builds += 1
        return self._pipe

    def clear(self) -> None:
        """Drop the cached pipeline and free its memory."""
        self._pipe = None
        self._key = None
        free_device_memory()


def set_scheduler(pipe: Any, scheduler: str) -> None:
    """Give ``pipe`` the scheduler ``scheduler`` (``default``: the pipeline's own one)."""
    default = getattr(pipe, _DEFAULT_SCHEDULER_ATTR, None)
    if default is None:
        default = pipe.scheduler
        setattr(pipe, _DEFAULT_SCHEDULER_ATTR, default)
    if scheduler == SCHEDULER_DEFAULT:
        pipe.scheduler = default
    else:
        import diffusers

        pipe.scheduler = getattr(diffusers, scheduler).from_config(default.config)


# --------------------------------------------------------------------------- measuring
def _synchronize(device: str) -> None:
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def _run_once(pipe: Any, adapter: Any, cfg: InferenceConfig, meter: EnergyMeter | None) -> tuple[dict, torch.Tensor]:
    """One inference; with a meter, windows around the whole and each phase."""
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    results: dict[str, tuple[float, float]] = {}

    def begin(name: str) -> None:
        if meter is not None:
            _synchronize(cfg.device)
            meter.begin_window(name)

    def end(name: str) -> None:
        if meter is not None:
            _synchronize(cfg.device)
            results[name] = meter.end_window(name)

    begin(WHOLE)
    try:
        begin(schema.PHASE_TEXT_ENCODE)
        embeds = adapter.encode(pipe, cfg)
        end(schema.PHASE_TEXT_ENCODE)
        begin(schema.PHASE_DENOISE)
        latents = adapter.denoise(pipe, embeds, cfg, generator)
        end(schema.PHASE_DENOISE)
        begin(schema.PHASE_DECODE)
        images = adapter.decode(pipe, latents, cfg)
        end(schema.PHASE_DECODE)
    except BaseException:
        # Windows left open by an error must not leak into the next run of this meter.
        if meter is not None:
            for name in (schema.PHASE_TEXT_ENCODE, schema.PHASE_DENOISE, schema.PHASE_DECODE, WHOLE):
                if name not in results:
                    try:
                        meter.end_window(name)
                    except Exception:
                        pass
        raise
    end(WHOLE)
    return results, images


def measure(cfg: InferenceConfig, *, meter: EnergyMeter | None = None, pipeline: Any | None = None) -> Measurement:
    """Measure ``cfg``: warm-up runs, then ``repeats`` runs with phase windows; per-image values.

    Args:
        cfg: the config (validated here; bad values raise :class:`ConfigError`).
        meter: the energy meter; default :func:`mlflow_energy.measure.meters.auto_meter` for the device.
        pipeline: an already built pipeline of ``cfg``'s family, device and precision
            (see :class:`PipelineCache`); default: build one.

    Example:
        >>> m = measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1, warmup=0))
        >>> m.energy_source in ("estimate:cpu-tdp", "zeus:rapl")
        True
        >>> abs(m.energy_j["total"] - sum(m.energy_j[p] for p in ("text_encode", "denoise", "decode"))) < 1e-9
        True
    """
    from mlflow_energy.families import _adapter, get_family
    from mlflow_energy.flops import config_flops

    cfg = cfg.validate()
    fam = get_family(cfg.model)
    if not fam.measurable:
        from mlflow_energy.families import family_names

        raise ConfigError("model", cfg.model, "a measurable family: " + ", ".join(family_names(measurable_only=True)))
    adapter = _adapter.get_adapter(fam.adapter)
    flops = config_flops(cfg)
    own_meter = meter is None
    meter = meter or auto_meter(cfg.device)
    try:
        pipe = pipeline if pipeline is not None else build_pipeline(cfg)
        set_scheduler(pipe, cfg.scheduler)
        with torch.inference_mode():
            for _ in range(cfg.warmup):
                _run_once(pipe, adapter, cfg, None)
            meter.reset_timeline()
            runs: list[dict[str, tuple[float, float]]] = []
            images: torch.Tensor | None = None
            for _ in range(cfg.repeats):
                results, images = _run_once(pipe, adapter, cfg, meter)
                runs.append(results)
        timeline = meter.timeline()
        tags = meter.tags()
    finally:
        if own_meter:
            meter.close()

    batch = cfg.batch_size
    energy: dict[str, float] = {}
    times: dict[str, float] = {}
    for phase in schema.PHASES:
        energy[phase] = statistics.fmean(r[phase][0] for r in runs) / batch
        times[phase] = statistics.fmean(r[phase][1] for r in runs) / batch
    energy[schema.PHASE_TOTAL] = sum(energy[p] for p in schema.PHASES)
    times[schema.PHASE_TOTAL] = sum(times[p] for p in schema.PHASES)
    totals = [sum(r[p][0] for p in schema.PHASES) / batch for r in runs]
    std = statistics.stdev(totals) if len(totals) > 1 else 0.0
    whole_j = statistics.fmean(r[WHOLE][0] for r in runs) / batch
    whole_s = statistics.fmean(r[WHOLE][1] for r in runs) / batch
    gap = (energy[schema.PHASE_TOTAL] - whole_j) / whole_j if whole_j > 0 else 0.0
    power = whole_j / whole_s if whole_s > 0 else 0.0
    return Measurement(
        config=cfg,
        energy_j=energy,
        energy_total_std_j=std,
        time_s=times,
        flops=flops,
        power_avg_w=power,
        whole_window_j=whole_j,
        phase_sum_gap=gap,
        energy_source=meter.source,
        hardware=meter.hardware,
        extra_tags=dict(tags),
        images=images.detach().float().cpu() if images is not None else None,
        timeline=timeline,
    )
