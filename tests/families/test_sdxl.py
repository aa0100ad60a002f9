"""SDXL: full-size shapes on meta, tiny pipeline end to end, text lengths."""

import diffusers
import pytest

from mlflow_energy.config import InferenceConfig
from mlflow_energy.families import get_family
from mlflow_energy.families._adapter import get_adapter

NAME = "sdxl"
TINY = "tiny-" + NAME
# Published parameter counts, billions (data/PROVENANCE.md).
PUBLISHED_B = {"unet": 2.567, "text_encoder": 0.123, "text_encoder_2": 0.695, "vae": 0.0837}


def test_full_size_parameter_counts_match_published(meta_counts):
    counts = meta_counts(NAME)
    for component, billions in PUBLISHED_B.items():
        assert counts[component] / 1e9 == pytest.approx(billions, rel=0.01), component


def test_family_record_and_scheduler():
    fam = get_family(NAME)
    assert fam.pipeline_class == "StableDiffusionXLPipeline"
    assert fam.adapter == "sdxl" and fam.measurable
    assert fam.default_guidance_scale == 5.0
    assert fam.cfg == "true"
    sched = getattr(diffusers, fam.scheduler["class"]).from_config(dict(fam.scheduler["config"]))
    assert type(sched).__name__ == "EulerDiscreteScheduler"
    for key, value in {"timestep_spacing": "leading", "prediction_type": "epsilon"}.items():
        assert sched.config[key] == value, key


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_tiny_three_phases(traced, check_images, guidance):
    t = traced(TINY, batch_size=2, guidance_scale=guidance)
    assert type(t.pipe) is diffusers.StableDiffusionXLPipeline
    check_images(t)
    assert t.cfg.cfg is t.family.uses_cfg(guidance)
    assert t.samples_per_image == t.family.passes(guidance) * t.family.denoiser_calls(t.cfg.steps)


def test_tiny_unet_gets_added_conditioning(traced):
    t = traced(TINY, batch_size=2, guidance_scale=5.0)
    added = t.denoiser_kwargs["added_cond_kwargs"]
    assert added["time_ids"].shape == (4, 6)  # CFG doubles the batch
    assert added["text_embeds"].shape == (4, t.pipe.text_encoder_2.config.projection_dim)


def test_text_encoders_run_at_family_text_lengths(traced):
    t = traced(TINY, batch_size=1)
    assert t.text_lengths == {te: {t.family.text_lengths[te]} for te in t.family.text_encoders}
    assert set(t.family.text_lengths.items()) <= set(get_family(NAME).text_lengths.items())


def test_full_size_tokenizers_pad_to_family_text_lengths():
    fam = get_family(NAME)
    tokenizers = get_adapter(fam.adapter).tokenizers(fam)
    for te in fam.text_encoders:
        tok = tokenizers[te.replace("text_encoder", "tokenizer")]
        assert tok.model_max_length == fam.text_lengths[te], te


def test_tiny_geometry_every_pixel_multiple_runs(traced, check_images):
    fam = get_family(TINY)
    InferenceConfig(model=TINY, height=64, width=64).validate()
    assert fam.pixel_multiple % fam.latent_downsample == 0
    for height, width in [(fam.pixel_multiple, fam.pixel_multiple), (3 * fam.pixel_multiple, 5 * fam.pixel_multiple)]:
        t = traced(TINY, height=height, width=width, steps=1, guidance_scale=0.0)
        check_images(t)
    assert t.pipe.vae_scale_factor == fam.latent_downsample
    full = get_family(NAME)
    assert full.pixel_multiple == 8
