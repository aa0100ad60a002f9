"""InferenceConfig validation: one clear error per bad field, defaults filled, stable hash."""

from __future__ import annotations

import pytest

from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError


def test_defaults_come_from_the_family() -> None:
    cfg = InferenceConfig(model="sd2").validate()
    assert (cfg.height, cfg.width, cfg.steps, cfg.guidance_scale) == (768, 768, 50, 7.5)
    assert cfg.cfg is True
    assert InferenceConfig(model="sd2", guidance_scale=1.0).validate().cfg is False


@pytest.mark.parametrize(
    ("changes", "field", "allowed"),
    [
        ({"model": "sd9"}, "model", "one of"),
        ({"height": 100}, "height", "multiple of 8"),
        ({"width": 36}, "width", "multiple of 8"),
        ({"steps": 0}, "steps", ">= 1"),
        ({"batch_size": 0}, "batch_size", ">= 1"),
        ({"repeats": 0}, "repeats", ">= 1"),
        ({"warmup": -1}, "warmup", ">= 0"),
        ({"guidance_scale": -1.0}, "guidance_scale", "from 0 to 100"),
        ({"precision": "fp8"}, "precision", "fp32, fp16, bf16"),
        ({"precision": "fp16", "device": "cpu"}, "precision", "on device cpu"),
        ({"device": "tpu"}, "device", "cpu, cuda"),
        ({"scheduler": "NoSuchScheduler"}, "scheduler", "scheduler class name"),
        ({"steps": 2.5}, "steps", "integer"),
    ],
)
def test_bad_fields_name_field_value_and_allowed(changes: dict, field: str, allowed: str) -> None:
    kwargs = {"model": "sd2", "height": 512, "width": 512, "steps": 10, **changes}
    with pytest.raises(ConfigError) as info:
        InferenceConfig(**kwargs).validate()
    message = str(info.value)
    assert info.value.field == field
    assert message.startswith(f"{field}=")
    assert allowed in message
    assert "\n" not in message


def test_known_scheduler_is_accepted() -> None:
    assert InferenceConfig(model="sd2", scheduler="EulerDiscreteScheduler").validate().scheduler == "EulerDiscreteScheduler"


def test_hash_ignores_repeats_and_warmup_but_not_what_is_measured() -> None:
    a = InferenceConfig(model="sd2", height=512, width=512, steps=10)
    assert a.config_hash() == InferenceConfig(model="sd2", height=512, width=512, steps=10, repeats=5, warmup=3).config_hash()
    assert a.config_hash() != InferenceConfig(model="sd2", height=512, width=512, steps=11).config_hash()
    assert a.config_hash() != InferenceConfig(model="sd2", height=512, width=512, steps=10, precision="bf16").config_hash()


def test_round_trip_and_unknown_keys() -> None:
    cfg = InferenceConfig(model="sd2", height=512, width=512, steps=10)
    assert InferenceConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="hieght"):
        InferenceConfig.from_dict({"model": "sd2", "hieght": 512})


def test_cfg_passes_defaults_to_pipe_prompt_and_keeps_earlier_hashes() -> None:
    """Qwen-Image runs one pass unless asked for true CFG; SD runs two at guidance > 1. A config that
    leaves cfg_passes at its default hashes as before the field existed."""
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.errors import ConfigError

    assert InferenceConfig(model="qwen-image").validate().cfg_passes == 1
    assert not InferenceConfig(model="qwen-image").cfg
    assert InferenceConfig(model="qwen-image", cfg_passes=2).cfg
    assert InferenceConfig(model="sd2").validate().cfg_passes == 2
    same = InferenceConfig(model="sd2", steps=4)
    assert same.config_hash() == InferenceConfig(model="sd2", steps=4, cfg_passes=2, guidance_scale=None).config_hash()
    assert InferenceConfig(model="qwen-image", cfg_passes=2).config_hash() != InferenceConfig(model="qwen-image")\
        .config_hash()
    with pytest.raises(ConfigError, match=r"cfg_passes=2 is not allowed: expected 1 \(flux.1-schnell"):
        InferenceConfig(model="flux.1-schnell", cfg_passes=2).validate()
    with pytest.raises(ConfigError, match=r"cfg_passes=3"):
        InferenceConfig(model="qwen-image", cfg_passes=3).validate()
