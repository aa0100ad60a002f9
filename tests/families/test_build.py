"""The random-weight builder and the real-weights path, on tiny families."""

import pytest
import torch

from mlflow_energy.config import InferenceConfig
from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._adapter import get_adapter
from mlflow_energy.families._build import build_pipeline, construct, materialize_random

MEASURED_TINY = [n for n in family_names(measurable_only=True) if n.startswith("tiny-")]


def _run(name: str, pipe) -> torch.Tensor:
    fam = get_family(name)
    adapter = get_adapter(fam.adapter)
    cfg = InferenceConfig(model=name, height=32, width=32, steps=2).validate()
    embeds = adapter.encode(pipe, cfg)
    latents = adapter.denoise(pipe, embeds, cfg, torch.Generator().manual_seed(0))
    return adapter.decode(pipe, latents, cfg)


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-flux.1-dev", "tiny-qwen-image"])
def test_weights_from_a_local_directory(tmp_path, name):
    fam = get_family(name)
    pipe = build_pipeline(fam, tokenizers=get_adapter(fam.adapter).tokenizers(fam), seed=3)
    pipe.save_pretrained(tmp_path)
    loaded = build_pipeline(fam, weights=str(tmp_path))
    assert type(loaded) is type(pipe)
    for component in fam.components:
        ours, theirs = getattr(pipe, component).state_dict(), getattr(loaded, component).state_dict()
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            assert torch.equal(value, theirs[key]), f"{component}.{key}"
    # Same weights and tokenizers: the same images.
    torch.testing.assert_close(_run(name, loaded), _run(name, pipe))


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl", "tiny-sd3.5-medium", "tiny-flux.1-dev",
                                  "tiny-qwen-image", "tiny-pixart-sigma"])
def test_random_init_is_finite_and_keeps_computed_buffers(name):
    fam = get_family(name)
    for component, spec in fam.components.items():
        model = materialize_random(spec["class"], dict(spec["config"]), "cpu", torch.float32, seed=1)
        reference = construct(spec["class"], dict(spec["config"]))  # ordinary construction, real buffers
        for key, buf in reference.named_buffers():
            assert torch.equal(model.get_buffer(key), buf), f"{component}.{key}"
        for key, p in model.named_parameters():
            assert torch.isfinite(p).all(), f"{component}.{key}"
            if p.ndim >= 2 and p.numel() > 256:
                expected = 1 / p[0].numel() ** 0.5
                assert p.std().item() == pytest.approx(expected, rel=0.2), f"{component}.{key}"
        # Parameters shared in the ordinary model stay shared (T5's embeddings).
        shared = {k for k, _ in reference.named_parameters(remove_duplicate=False)} - {
            k for k, _ in reference.named_parameters()}
        assert shared == {k for k, _ in model.named_parameters(remove_duplicate=False)} - {
            k for k, _ in model.named_parameters()}


def test_clip_position_ids_survive_materialisation():
    spec = get_family("tiny-sd2").components["text_encoder"]
    model = materialize_random(spec["class"], dict(spec["config"]), "cpu", torch.bfloat16)
    assert torch.equal(model.get_buffer("embeddings.position_ids"), torch.arange(77).unsqueeze(0))
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16


def test_seeds_change_weights_and_repeat_exactly():
    spec = get_family("tiny-flux.1-dev").components["transformer"]
    a, b, c = (materialize_random(spec["class"], dict(spec["config"]), "cpu", torch.float32, seed=s) for s in (0, 0, 1))
    key = "x_embedder.weight"
    assert torch.equal(a.get_parameter(key), b.get_parameter(key))
    assert not torch.equal(a.get_parameter(key), c.get_parameter(key))


@pytest.mark.parametrize("name", MEASURED_TINY)
def test_every_tiny_family_validates_at_64_px(name):
    cfg = InferenceConfig(model=name, height=64, width=64).validate()
    assert cfg.steps == get_family(name).default_steps
