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
