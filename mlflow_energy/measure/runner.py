"""Measure one inference config, phase by phase: text encoding, denoising, decoding.

Each measured repeat opens one window over the whole inference and, nested inside it, one
window per phase, the three back to back; the device is synchronised at every boundary.
Warm-up runs go first, unmeasured, and the number of warm-ups and repeats follows the
measurement protocol (:mod:`mlflow_energy.measure.protocol`: warm up until the time per run
is stable, repeat until the 95% interval of the total is within the target). Values are per
image (divided by the batch size), the mean over the repeats that are not outliers; the phase
sum is compared with the whole window. Given the device's idle power, each phase also gets
its dynamic energy (total minus idle power x time).

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
from mlflow_energy.measure.power_limit import applied_power_limit
from mlflow_energy.measure.protocol import DEFAULT_PROTOCOL, Protocol, outlier_mask, summarise

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
        repeats: measured runs done (the protocol may add to ``config.repeats``).
        warmups: warm-up runs done.
        outliers: measured runs left out of the means as outliers.
        energy_total_ci95_j: 95% half-width of the mean total (inf with fewer than 2 kept runs).
        noisy: True when the interval missed the protocol's target.
        protocol_target: that target (a fraction of the total; 0: fixed repeats, no target).
        energy_median_j, energy_spread_j: per phase, median and robust spread (1.4826 x MAD)
            of the per-image energy over the measured runs.
        idle_power_w: the device's idle power subtracted for ``dynamic_energy_j`` (0: none).
        dynamic_energy_j: per phase, ``energy_j - idle_power_w x time_s``.
        energy_scope: what ``energy_j`` holds: ``total`` (the meter's whole device or package,
            idle included) or ``dynamic`` (no idle share, as the process-attributed estimate).
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
    repeats: int = 0
    warmups: int = 0
    outliers: int = 0
    energy_total_ci95_j: float = float("nan")
    noisy: bool = False
    protocol_target: float = 0.0
    energy_median_j: dict[str, float] = field(default_factory=dict)
    energy_spread_j: dict[str, float] = field(default_factory=dict)
    idle_power_w: float = 0.0
    dynamic_energy_j: dict[str, float] = field(default_factory=dict)
    energy_scope: str = "total"


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

    A config with another key drops the previous pipeline first, so only one pipeline
    occupies the device. On an accelerator the memory is also collected and returned to the
    driver (``gc.collect`` and ``torch.cuda.empty_cache``); on the CPU dropping the last
    reference frees the weights, and a full garbage collection (0.3-0.5 s, longer than
    building a small pipeline) is not worth it.

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
        """Drop the cached pipeline; collect garbage and free device memory when it was on an accelerator."""
        on_accelerator = self._key is not None and not self._key[3].startswith("cpu")
        self._pipe = None
        self._key = None
        if on_accelerator:
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


def _limited_gpu(cfg: InferenceConfig, meter: EnergyMeter) -> str:
    """The GPU whose power limit ``cfg.power_limit_w`` sets: the one the meter measures."""
    device = getattr(meter, "gpu_device", None)
    if cfg.power_limit_w is not None and device is None:
        raise ConfigError(
            "power_limit_w", cfg.power_limit_w,
            f"unset on device {cfg.device!r}: a power limit is set through NVML on the measured NVIDIA GPU, "
            f"and this measurement's meter ({meter.source}) measures none",
        )
    return device or cfg.device


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


def measure(
    cfg: InferenceConfig,
    *,
    meter: EnergyMeter | None = None,
    pipeline: Any | None = None,
    protocol: Protocol | None = None,
    idle_power_w: float | None = None,
) -> Measurement:
    """Measure ``cfg``: warm-up runs, then measured runs with phase windows; per-image values.

    Args:
        cfg: the config (validated here; bad values raise :class:`ConfigError`).
        meter: the energy meter; default :func:`mlflow_energy.measure.meters.auto_meter` for the device.
        pipeline: an already built pipeline of ``cfg``'s family, device and precision
            (see :class:`PipelineCache`); default: build one.
        protocol: when to stop warming up and repeating; default
            :data:`~mlflow_energy.measure.protocol.DEFAULT_PROTOCOL` (5% target, at most 20
            repeats or 30 s); ``Protocol.fixed()`` runs exactly ``cfg.warmup`` + ``cfg.repeats``.
        idle_power_w: the device's idle power (:func:`~mlflow_energy.measure.protocol.idle_power`);
            default: the meter's own model of it (0 W for the process-attributed CPU estimate),
            else none (dynamic energy = total).

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
    protocol = protocol or DEFAULT_PROTOCOL
    fam = get_family(cfg.model)
    if not fam.measurable:
        from mlflow_energy.families import family_names

        raise ConfigError("model", cfg.model, "a measurable family: " + ", ".join(family_names(measurable_only=True)))
    adapter = _adapter.get_adapter(fam.adapter)
    flops = config_flops(cfg)
    own_meter = meter is None
    meter = meter or auto_meter(cfg.device)
    batch = cfg.batch_size
    min_repeats = max(cfg.repeats, 2) if protocol.adaptive else cfg.repeats
    try:
        limited_gpu = _limited_gpu(cfg, meter)
        pipe = pipeline if pipeline is not None else build_pipeline(cfg)
        set_scheduler(pipe, cfg.scheduler)
        # The limit is in force from the first warm-up run to the last measured one, and restored
        # even when a run fails (the previous limit is journaled first: see measure.power_limit).
        with applied_power_limit(limited_gpu, cfg.power_limit_w), torch.inference_mode():
            warm_times: list[float] = []
            while not protocol.warm(len(warm_times), warm_times, cfg.warmup):
                start = time.perf_counter()
                _run_once(pipe, adapter, cfg, None)
                _synchronize(cfg.device)
                warm_times.append(time.perf_counter() - start)
            meter.reset_timeline()
            runs: list[dict[str, tuple[float, float]]] = []
            totals: list[float] = []
            images: torch.Tensor | None = None
            start = time.perf_counter()
            while not protocol.done(len(runs), time.perf_counter() - start, totals, minimum=min_repeats):
                results, images = _run_once(pipe, adapter, cfg, meter)
                runs.append(results)
                totals.append(sum(results[p][0] for p in schema.PHASES) / batch)
            tags = meter.tags()  # while the config's power limit is still in force
        timeline = meter.timeline()
    finally:
        if own_meter:
            meter.close()

    keep = outlier_mask(totals)
    total_summary = summarise(totals, keep=keep)
    energy: dict[str, float] = {}
    times: dict[str, float] = {}
    medians: dict[str, float] = {}
    spreads: dict[str, float] = {}
    for phase in schema.PHASES:
        e = summarise([r[phase][0] / batch for r in runs], keep=keep)
        energy[phase] = e.mean
        medians[phase], spreads[phase] = e.median, e.spread
        times[phase] = summarise([r[phase][1] / batch for r in runs], keep=keep).mean
    energy[schema.PHASE_TOTAL] = sum(energy[p] for p in schema.PHASES)
    times[schema.PHASE_TOTAL] = sum(times[p] for p in schema.PHASES)
    medians[schema.PHASE_TOTAL], spreads[schema.PHASE_TOTAL] = total_summary.median, total_summary.spread
    kept = [t for t, k in zip(totals, keep, strict=True) if k]
    std = statistics.stdev(kept) if len(kept) > 1 else 0.0
    kept_runs = [r for r, k in zip(runs, keep, strict=True) if k]
    whole_j = statistics.fmean(r[WHOLE][0] for r in kept_runs) / batch
    whole_s = statistics.fmean(r[WHOLE][1] for r in kept_runs) / batch
    gap = (energy[schema.PHASE_TOTAL] - whole_j) / whole_j if whole_j > 0 else 0.0
    power = whole_j / whole_s if whole_s > 0 else 0.0
    if idle_power_w is None:
        idle_power_w = float(getattr(meter, "idle_power_model_w", None) or 0.0)
    dynamic = {p: energy[p] - idle_power_w * times[p] for p in (*schema.PHASES, schema.PHASE_TOTAL)}
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
        repeats=len(runs),
        warmups=len(warm_times),
        outliers=total_summary.outliers,
        energy_total_ci95_j=total_summary.ci95,
        noisy=not protocol.met(total_summary),
        protocol_target=protocol.target,
        energy_median_j=medians,
        energy_spread_j=spreads,
        idle_power_w=float(idle_power_w),
        dynamic_energy_j=dynamic,
        energy_scope=str(getattr(meter, "scope", "total")),
    )
