"""Checks every family passes: full-size shapes on meta, tiny pipeline end to end, text lengths, sizes.

Parametrised over the registry, so a new family is checked as soon as it is registered, and
fails here until its expected values are added to the tables below. What only one family
does (SDXL's added conditioning, FLUX.1-dev's guidance embedding, Qwen-Image's true CFG...)
is checked in that family's own ``test_<module>.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import diffusers
import pytest

from mlflow_energy.config import InferenceConfig
from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._adapter import get_adapter
from mlflow_energy.families._base import TINY_PREFIX

# Published parameter counts, billions (data/PROVENANCE.md).
PUBLISHED_B: dict[str, dict[str, float]] = {
    "flux.1-dev": {"transformer": 11.9, "text_encoder": 0.123, "text_encoder_2": 4.762, "vae": 0.0838},
    "flux.1-schnell": {"transformer": 11.9, "text_encoder_2": 4.762},
    "pixart-sigma": {"transformer": 0.611, "text_encoder": 4.762},
    "qwen-image": {"transformer": 20.43, "text_encoder": 8.29, "vae": 0.127},
    "sana-1.6b": {"transformer": 1.605, "text_encoder": 2.614, "vae": 0.312},
    "sd1.5": {"unet": 0.86, "text_encoder": 0.123, "vae": 0.0837},
    "sd2": {"unet": 0.866, "text_encoder": 0.34, "vae": 0.0837},
    "sd3-medium": {"transformer": 2.028, "text_encoder_2": 0.695, "text_encoder_3": 4.762},
    "sd3.5-large": {"transformer": 8.057, "text_encoder_2": 0.695, "text_encoder_3": 4.762},
    "sd3.5-medium": {"transformer": 2.243, "text_encoder_2": 0.695, "text_encoder_3": 4.762},
    "sdxl": {"unet": 2.567, "text_encoder": 0.123, "text_encoder_2": 0.695, "vae": 0.0837},
    "ssd-1b": {"unet": 1.331, "text_encoder_2": 0.695},
}


@dataclass(frozen=True)
class Record:
    """What a measurable family's record says, and how its tiny variant is run."""

    pipeline: str  # diffusers pipeline class
    adapter: str
    guidance: float  # default guidance scale
    cfg: str
    scheduler: str  # diffusers scheduler class
    scheduler_config: dict[str, Any] = field(default_factory=dict)  # released values the scheduler keeps
    pixel_multiple: int = 16  # of the full-size family
    min_steps: int = 1

    @property
    def guidances(self) -> tuple[float, ...]:
        """Guidance scales the tiny run is checked at: the default, and 1.0 (CFG off) where CFG is real."""
        return (self.guidance, 1.0) if self.cfg == "true" else (self.guidance,)


_FLOW = "FlowMatchEulerDiscreteScheduler"
_SD3 = Record("StableDiffusion3Pipeline", "sd3", 7.0, "true", _FLOW, {"shift": 3.0, "use_dynamic_shifting": False})

RECORDS: dict[str, Record] = {
    "flux.1-dev": Record("FluxPipeline", "flux", 3.5, "distilled", _FLOW,
                         {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}),
    "flux.1-schnell": Record("FluxPipeline", "flux", 0.0, "none", _FLOW, {"use_dynamic_shifting": False, "shift": 1.0}),
    "pixart-sigma": Record("PixArtSigmaPipeline", "pixart", 4.5, "true", "DPMSolverMultistepScheduler",
                           {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "qwen-image": Record("QwenImagePipeline", "qwen", 4.0, "true", _FLOW,
                         {"use_dynamic_shifting": True, "max_shift": 0.9, "shift_terminal": 0.02,
                          "time_shift_type": "exponential"}, min_steps=2),
    "sd1.5": Record("StableDiffusionPipeline", "sd", 7.5, "true", "PNDMScheduler",
                    {"skip_prk_steps": True, "steps_offset": 1}, pixel_multiple=8),
    "sd2": Record("StableDiffusionPipeline", "sd", 7.5, "true", "DDIMScheduler",
                  {"prediction_type": "v_prediction"}, pixel_multiple=8),
    "sd3-medium": _SD3,
    "sd3.5-large": _SD3,
    "sd3.5-medium": _SD3,
    "sdxl": Record("StableDiffusionXLPipeline", "sdxl", 5.0, "true", "EulerDiscreteScheduler",
                   {"timestep_spacing": "leading", "prediction_type": "epsilon"}, pixel_multiple=8),
    "ssd-1b": Record("StableDiffusionXLPipeline", "sdxl", 5.0, "true", "EulerDiscreteScheduler",
                     {"timestep_spacing": "leading"}, pixel_multiple=8),
}

FULL = family_names(tiny=False)
MEASURABLE = family_names(tiny=False, measurable_only=True)
TINY = [n for n in family_names(measurable_only=True) if n.startswith(TINY_PREFIX)]


def _full(tiny: str) -> str:
    return tiny.removeprefix(TINY_PREFIX)


@pytest.mark.parametrize("name", FULL)
def test_full_size_parameter_counts_match_published(meta_counts, name):
    counts = meta_counts(name)
    for component, billions in PUBLISHED_B[name].items():
        assert counts[component] / 1e9 == pytest.approx(billions, rel=0.01), component


@pytest.mark.parametrize("name", MEASURABLE)
def test_family_record_and_scheduler(name):
    fam, rec = get_family(name), RECORDS[name]
    assert fam.pipeline_class == rec.pipeline
    assert fam.adapter == rec.adapter and fam.measurable
    assert fam.default_guidance_scale == rec.guidance
    assert fam.cfg == rec.cfg
    sched = getattr(diffusers, fam.scheduler["class"]).from_config(dict(fam.scheduler["config"]))
    assert type(sched).__name__ == rec.scheduler
    for key, value in rec.scheduler_config.items():
        assert sched.config[key] == value, key


@pytest.mark.parametrize(
    ("tiny", "guidance"), [(tiny, g) for tiny in TINY for g in RECORDS[_full(tiny)].guidances]
)
def test_tiny_three_phases(traced, check_images, tiny, guidance):
    t = traced(tiny, batch_size=2, guidance_scale=guidance)
    assert type(t.pipe) is getattr(diffusers, RECORDS[_full(tiny)].pipeline)
    check_images(t)
    # what pipe(prompt) runs: true-CFG pipelines (Qwen-Image, FLUX.1) one pass without a negative prompt
    assert t.cfg.passes == (1 if t.family.pipeline_class in ("QwenImagePipeline", "FluxPipeline")
                            else t.family.passes(guidance))
    assert t.samples_per_image == t.cfg.passes * t.family.denoiser_calls(t.cfg.steps)


@pytest.mark.parametrize("tiny", ["tiny-qwen-image", "tiny-flux.1-dev"])
def test_true_cfg_runs_two_passes_when_asked(traced, tiny):
    """``cfg_passes=2`` on a true-CFG pipeline: an empty negative prompt and true_cfg_scale, two passes per step."""
    t = traced(tiny, batch_size=1, guidance_scale=4.0, cfg_passes=2)
    assert t.cfg.cfg and t.samples_per_image == 2 * t.family.denoiser_calls(t.cfg.steps)


@pytest.mark.parametrize("tiny", TINY)
def test_text_encoders_run_at_family_text_lengths(traced, tiny):
    t = traced(tiny, batch_size=1)
    assert t.text_lengths == {te: {t.family.text_lengths[te]} for te in t.family.text_encoders}
    assert set(t.family.text_lengths.items()) <= set(get_family(_full(tiny)).text_lengths.items())


@pytest.mark.parametrize("name", MEASURABLE)
def test_full_size_tokenizers_pad_to_family_text_lengths(name):
    fam = get_family(name)
    tokenizers = get_adapter(fam.adapter).tokenizers(fam)
    for te in fam.text_encoders:
        tok = tokenizers[te.replace("text_encoder", "tokenizer")]
        assert tok.model_max_length == fam.text_lengths[te], te


@pytest.mark.parametrize("tiny", TINY)
def test_tiny_geometry_every_pixel_multiple_runs(traced, check_images, tiny):
    fam, rec = get_family(tiny), RECORDS[_full(tiny)]
    InferenceConfig(model=tiny, height=64, width=64).validate()
    assert fam.pixel_multiple % fam.latent_downsample == 0
    for height, width in [(fam.pixel_multiple, fam.pixel_multiple), (3 * fam.pixel_multiple, 5 * fam.pixel_multiple)]:
        t = traced(tiny, height=height, width=width, steps=rec.min_steps, guidance_scale=0.0)
        check_images(t)
    assert t.pipe.vae_scale_factor == fam.latent_downsample
    assert get_family(_full(tiny)).pixel_multiple == rec.pixel_multiple
