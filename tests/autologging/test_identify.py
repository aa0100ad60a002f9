"""Family recognition that survives library versions: every registered family, built with the installed libraries."""

from __future__ import annotations

import types

import pytest

from mlflow_energy.autologging.identify import pipeline_family
from mlflow_energy.families import family_names, get_family


def _on_meta(name: str) -> types.SimpleNamespace:
    """The family's components, constructed on the meta device by the installed transformers/diffusers classes."""
    from mlflow_energy.families._build import build_on_meta

    fam = get_family(name)
    return types.SimpleNamespace(**{c: build_on_meta(s["class"], s.get("config", {})) for c, s in fam.components.items()})


def test_every_registered_family_is_recognised_with_the_installed_libraries() -> None:
    # Full-size, small and tiny alike: the config each component reports back (not the dict it was
    # built from) must name its family, whatever defaults this transformers/diffusers version adds.
    wrong = {name: pipeline_family(_on_meta(name)) for name in family_names()}
    assert {k: v for k, v in wrong.items() if v != k} == {}


def test_built_tiny_pipelines_are_recognised() -> None:
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    for name in ("tiny-flux.1-dev", "tiny-sd3.5-medium", "tiny-pixart-sigma", "tiny-qwen-image"):
        assert pipeline_family(build_pipeline(InferenceConfig(model=name))) == name


def test_recognition_ignores_what_does_not_set_flops() -> None:
    """A T5 built the way diffusers' tests build it (own vocabulary, untied embeddings) is still FLUX's."""
    from transformers import T5Config, T5EncoderModel

    pipe = _on_meta("tiny-flux.1-dev")
    t5 = get_family("tiny-flux.1-dev").components["text_encoder_2"]["config"]
    import torch

    with torch.device("meta"):
        pipe.text_encoder_2 = T5EncoderModel(T5Config(**{**t5, "vocab_size": 1000, "tie_word_embeddings": False,
                                                         "dropout_rate": 0.0, "layer_norm_epsilon": 1e-5}))
    assert pipeline_family(pipe) == "tiny-flux.1-dev"
    # ... but a different width is a different model.
    with torch.device("meta"):
        pipe.text_encoder_2 = T5EncoderModel(T5Config(**{**t5, "d_model": t5["d_model"] * 2}))
    assert pipeline_family(pipe) is None


@pytest.mark.parametrize("name", ["tiny-sd3-medium", "tiny-sd3.5-medium", "tiny-sd3.5-large"])
def test_the_most_specific_family_wins(name: str) -> None:
    # tiny-sd3-medium's data names no dual-attention layers: SD3.5 pipelines agree with it too.
    assert pipeline_family(_on_meta(name)) == name


def test_batch_and_size_from_every_output_kind() -> None:
    import numpy as np
    import torch

    from mlflow_energy import schema
    from mlflow_energy.autologging.identify import call_params, first_image, image_count

    videos = type("VideoOut", (), {"frames": np.zeros((2, 5, 24, 40, 3), dtype="float32")})()  # 2 videos, 5 frames
    assert image_count(videos) == 2 and first_image(videos).size == (40, 24)
    prior = type("PriorOut", (), {"image_embeds": torch.zeros(3, 32), "negative_image_embeds": torch.zeros(3, 32)})()
    assert image_count(prior) == 3 and first_image(prior) is None
    images = type("Out", (), {"images": [np.zeros((16, 48, 3), dtype="float32")]})()
    pipe = type("Pipe", (), {"__call__": lambda self, prompt, num_inference_steps=4: None})()
    params = call_params(pipe, ("a cat",), {}, images, denoiser_calls=4)
    # height and width from the output where the call did not pass them
    assert (params[schema.P_HEIGHT], params[schema.P_WIDTH], params[schema.P_STEPS]) == (16, 48, 4)
    video_params = call_params(pipe, ("a cat",), {}, videos, denoiser_calls=4)
    assert (video_params[schema.P_BATCH_SIZE], video_params[schema.P_NUM_FRAMES]) == (2, 5)
    assert (video_params[schema.P_HEIGHT], video_params[schema.P_WIDTH]) == (24, 40)


def test_the_execution_device_is_read_once_until_the_placement_changes(sd_components, monkeypatch) -> None:
    """diffusers' ``_execution_device`` walks every submodule: autolog asks it again only when a
    component, its parameters' device or its offload hooks change."""
    from diffusers import StableDiffusionPipeline

    from mlflow_energy.autologging.identify import execution_device

    pipe = StableDiffusionPipeline(**sd_components)
    asked = []
    real = StableDiffusionPipeline._execution_device

    def counted(self):
        asked.append(1)
        return real.fget(self)

    monkeypatch.setattr(StableDiffusionPipeline, "_execution_device", property(counted))
    assert [execution_device(pipe) for _ in range(3)] == ["cpu"] * 3
    assert len(asked) == 1
    pipe.unet._hf_hook = object()  # what enable_model_cpu_offload adds to each component
    try:
        assert execution_device(pipe) == "cpu" and len(asked) == 2
    finally:
        del pipe.unet._hf_hook
    pipe.register_modules(vae=type(pipe.vae)(**pipe.vae.config))  # a component replaced
    execution_device(pipe)
    assert len(asked) == 3
