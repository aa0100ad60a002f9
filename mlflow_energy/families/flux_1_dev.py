"""FLUX.1 [dev] (1024 px): rectified-flow transformer 11.9 B + CLIP-L + T5-XXL (512) + VAE f8c16.

Black Forest Labs' guidance-distilled model: the guidance scale (3.5, pipeline default) is
an input embedding, so each step is one transformer pass (``cfg: distilled``). Latents are
packed 2x2 into 64-channel tokens. Architecture: ``data/flux.1-dev.json`` (provenance in
``data/PROVENANCE.md``). Scheduler: the released FlowMatchEulerDiscrete config with
resolution-dependent (dynamic) shifting.
"""

from mlflow_energy.families._base import family_from_data, register
from mlflow_energy.families._flux_common import tiny_flux

FULL = family_from_data(
    "flux.1-dev",
    default_guidance_scale=3.5,
    adapter="flux",
    scheduler={
        "class": "FlowMatchEulerDiscreteScheduler",
        "config": {
            "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
            "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
        },
    },
)
TINY = tiny_flux(FULL)

register(FULL, TINY)
