"""Stable Diffusion 1.5 (512 px, epsilon prediction): UNet + CLIP ViT-L/14 text encoder + VAE f8c4.

Runwayml's ``stable-diffusion-v1-5`` (also covers fine-tunes of the same shape, such as
Openjourney v4). Architecture: ``data/sd1.5.json`` (released configs; provenance in
``data/PROVENANCE.md``). Scheduler: the released PNDM config. Guidance 7.5 (pipeline default).
"""

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import family_from_data, register, tiny_variant

FULL = family_from_data(
    "sd1.5",
    default_guidance_scale=7.5,
    adapter="sd",
    scheduler={
        "class": "PNDMScheduler",
        "config": {
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
            "steps_offset": 1, "clip_sample": False,
        },
    },
)

TINY = tiny_variant(
    FULL,
    {
        "text_encoder": _tiny.CLIP,
        "unet": {
            "block_out_channels": [32, 64], "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": 4, "cross_attention_dim": _tiny.TEXT_WIDTH, "norm_num_groups": 8,
            "sample_size": 32,
        },
        "vae": _tiny.VAE_KL,
    },
    latent_downsample=_tiny.LATENT_DOWNSAMPLE,
)

register(FULL, TINY)
