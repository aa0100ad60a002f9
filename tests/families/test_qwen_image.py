"""Qwen-Image: what only this family checks (shared checks: test_common.py)."""

import pytest

from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError

NAME = "qwen-image"
TINY = "tiny-" + NAME


def test_true_cfg_runs_two_transformer_calls_per_step(traced):
    t = traced(TINY, batch_size=2, guidance_scale=4.0, cfg_passes=2)
    assert len(t.denoiser_calls) == 2 * t.cfg.steps
    assert {b for b, _ in t.denoiser_calls} == {2}


def test_guidance_alone_runs_one_transformer_call_per_step(traced):
    """``pipe(prompt)`` with no negative prompt runs one pass a step: the default ``cfg_passes``."""
    t = traced(TINY, batch_size=2, guidance_scale=4.0)
    assert t.cfg.cfg_passes == 1
    assert len(t.denoiser_calls) == t.cfg.steps


def test_one_step_is_refused_before_anything_runs():
    for name in (NAME, TINY):
        with pytest.raises(ConfigError, match=r"steps=1 .*>= 2"):
            InferenceConfig(model=name, height=64, width=64, steps=1).validate()
    assert InferenceConfig(model=TINY, height=64, width=64, steps=2).validate().steps == 2


def test_text_lengths_chat_prefix_and_prompt(traced):
    t = traced(TINY, batch_size=1)
    assert t.text_lengths == {"text_encoder": {162}}
    assert {n for _, n in t.denoiser_calls} == {t.family.text_lengths["transformer_text_tokens"]}
