"""Stable Diffusion XL base 1.0 (1024 px): UNet 2.6 B + CLIP-L + OpenCLIP-bigG + VAE f8c4.

Architecture: ``data/sdxl.json`` (released configs; provenance in ``data/PROVENANCE.md``);
the same shapes cover SDXL-Turbo. The UNet takes added conditioning: the pooled, projected
bigG embedding (1280) and six size/crop ``time_ids``. Scheduler: the released
EulerDiscrete config. Guidance 5.0 (pipeline default).
"""

from typing import Any

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import family_from_data, register, tiny_variant
from mlflow_energy.families._small import small_sdxl

SCHEDULER: dict[str, Any] = {
    "class": "EulerDiscreteScheduler",
    "config": {
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "prediction_type": "epsilon", "interpolation_type": "linear",
        "steps_offset": 1, "timestep_spacing": "leading", "use_karras_sigmas": False,
    },
}

# Tiny SDXL-style UNet: added conditioning = 6 time ids x 8 + pooled text 32.
TINY_UNET: dict[str, Any] = {
    "block_out_channels": [32, 64], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 1], "attention_head_dim": [2, 4],
    "cross_attention_dim": 2 * _tiny.TEXT_WIDTH, "norm_num_groups": 8, "sample_size": 32,
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + _tiny.TEXT_WIDTH,
}

FULL = family_from_data("sdxl", default_guidance_scale=5.0, adapter="sdxl", scheduler=SCHEDULER)

TINY = tiny_variant(
    FULL,
    {"text_encoder": _tiny.CLIP, "text_encoder_2": _tiny.CLIP, "unet": TINY_UNET, "vae": _tiny.VAE_KL},
    latent_downsample=_tiny.LATENT_DOWNSAMPLE,
)

SMALL = small_sdxl(FULL)

register(FULL, TINY, SMALL)
