"""The phase-split runner on real tiny diffusers pipelines (CPU)."""

from __future__ import annotations

import pytest
import torch

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import ZeusMeter
from mlflow_energy.measure.protocol import Protocol
from mlflow_energy.measure.runner import Measurement, PipelineCache, measure, set_scheduler


def _tiny_measurable() -> list[str]:
    from mlflow_energy.families import family_names, get_family

    return [n for n in family_names() if n.startswith("tiny-") and get_family(n).measurable]


def _check_measurement(m: Measurement, batch: int = 1) -> None:
    cfg = m.config
    for key in (*schema.PHASES, schema.PHASE_TOTAL):
        assert m.energy_j[key] > 0, key
        assert m.time_s[key] > 0, key
    assert m.energy_j["total"] == pytest.approx(sum(m.energy_j[p] for p in schema.PHASES))
    assert m.time_s["total"] == pytest.approx(sum(m.time_s[p] for p in schema.PHASES))
    assert set(m.flops) == {"text_encode", "denoise", "decode", "total", "denoise_per_step"}
    assert m.flops["denoise"] > 0
    assert m.images is not None
    assert tuple(m.images.shape) == (batch, 3, cfg.height, cfg.width)
    assert m.images.dtype == torch.float32
    assert float(m.images.min()) >= 0.0 and float(m.images.max()) <= 1.0
    assert torch.isfinite(m.images).all()
    assert m.whole_window_j > 0
    assert m.power_avg_w > 0


@pytest.mark.parametrize("model", _tiny_measurable())
def test_each_tiny_family_end_to_end(model, small_config, no_rapl):
    m = measure(small_config(model, steps=2))  # some schedulers need >= 2 steps
    _check_measurement(m)
    assert m.energy_source == "estimate:cpu-tdp"
    assert m.config.model == model
    # The estimate is linear in user CPU time: phases back to back sum to the whole window.
    assert abs(m.phase_sum_gap) < 0.25


def test_per_image_values_and_nesting_with_exact_counter(fake_gpu_factory, small_config):
    # Every counter read adds 1 J: a phase window is 1 J, the whole window (8 reads, 4 windows) 7 J.
    fake_gpu_factory(mode="step", step_j=1.0)
    meter = ZeusMeter("cuda")
    try:
        m = measure(small_config(batch_size=2, repeats=3), meter=meter, protocol=Protocol.fixed())
    finally:
        meter.close()
    for phase in schema.PHASES:
        assert m.energy_j[phase] == pytest.approx(1.0 / 2)
    assert m.energy_j["total"] == pytest.approx(3.0 / 2)
    assert m.whole_window_j == pytest.approx(7.0 / 2)
    assert m.phase_sum_gap == pytest.approx((3.0 - 7.0) / 7.0)
    assert m.energy_total_std_j == pytest.approx(0.0)
    assert m.energy_source == "zeus:nvml"
    assert m.hardware == "NVIDIA Fake GPU 80GB"
    assert m.extra_tags[schema.T_POWER_LIMIT] == "300"
    assert tuple(m.images.shape) == (2, 3, m.config.height, m.config.width)


def test_zeus_gpu_path_end_to_end(fake_gpu, small_config):
    meter = ZeusMeter("cuda")
    try:
        m = measure(small_config(repeats=2), meter=meter)
    finally:
        meter.close()
    _check_measurement(m)
    # Constant 150 W: energy = power x time in every window, and the gap is the time gap.
    assert m.power_avg_w == pytest.approx(150.0, rel=0.05)
    for phase in schema.PHASES:
        assert m.energy_j[phase] == pytest.approx(150.0 * m.time_s[phase], rel=0.05, abs=0.01)
    assert abs(m.phase_sum_gap) < 0.1
    assert m.timeline is not None and set(m.timeline["power_w"]) == {150.0}


def test_warmup_runs_are_not_measured(fake_gpu_factory, small_config):
    gpus = fake_gpu_factory(mode="step", step_j=1.0)
    meter = ZeusMeter("cuda")
    try:
        measure(small_config(warmup=2, repeats=1), meter=meter, protocol=Protocol.fixed())
    finally:
        meter.close()
    assert gpus.reads == 8  # one measured run: 4 windows x (begin + end); warm-up reads nothing


def test_measure_validates_first(small_config):
    with pytest.raises(ConfigError, match="steps=0"):
        measure(small_config(steps=0))
    with pytest.raises(ConfigError, match="model='nope'"):
        measure(small_config().__class__(model="nope"))


def test_pipeline_cache_reuses_and_rebuilds(small_config):
    cache = PipelineCache()
    a = small_config().validate()
    p1 = cache.get(a)
    assert cache.get(small_config(steps=2).validate()) is p1
    assert cache.builds == 1
    p2 = cache.get(small_config(precision="bf16").validate())
    assert p2 is not p1 and cache.builds == 2
    cache.clear()
    assert cache.get(a) is not p1 and cache.builds == 3
    cache.clear()


def test_scheduler_swap_and_restore(small_config, no_rapl):
    cache = PipelineCache()
    cfg = small_config(scheduler="EulerDiscreteScheduler").validate()
    pipe = cache.get(cfg)
    default_cls = type(pipe.scheduler)
    m = measure(cfg, pipeline=pipe)
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert m.config.scheduler == "EulerDiscreteScheduler"
    set_scheduler(pipe, "default")
    assert type(pipe.scheduler) is default_cls
    cache.clear()


def test_same_seed_same_image(small_config, no_rapl):
    cache = PipelineCache()
    cfg = small_config(seed=3).validate()
    pipe = cache.get(cfg)
    a = measure(cfg, pipeline=pipe).images
    b = measure(cfg, pipeline=pipe).images
    c = measure(small_config(seed=4).validate(), pipeline=pipe).images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    cache.clear()


def _small_families() -> list[str]:
    from mlflow_energy.families import family_names

    return [n for n in family_names() if n.startswith("small-")]


@pytest.mark.parametrize("model", _small_families())
def test_each_small_family_runs_with_the_released_classes(model, no_rapl):
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.families import get_family

    small = get_family(model)
    full = get_family(small.base)
    assert small.pipeline_class == full.pipeline_class and small.is_tiny and not full.is_tiny
    assert {c: s["class"] for c, s in small.components.items()} == {c: s["class"] for c, s in full.components.items()}
    cfg = InferenceConfig(model=model, height=64, width=64, steps=1, repeats=1, warmup=0)
    m = measure(cfg, protocol=Protocol.fixed())
    _check_measurement(m)
    # wider than the tiny denoiser: several times its FLOPs on the same latent grid (16 x 16)
    assert m.flops["denoise_per_step"] > 3 * _denoise_step_flops("tiny-" + small.base, 32)


def _denoise_step_flops(model: str, side: int) -> float:
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.flops import config_flops

    return config_flops(InferenceConfig(model=model, height=side, width=side, steps=1).validate())["denoise_per_step"]
