"""Stable Diffusion 2.1 (768 px, v-prediction): UNet + OpenCLIP-H text encoder + VAE f8c4.

Architecture: ``data/sd2.json`` (released configs; provenance in ``data/PROVENANCE.md``).
"""

from mlflow_energy.families._base import family_from_data, register, tiny_variant
from mlflow_energy.families._small import small_sd

FULL = family_from_data(
    "sd2",
    default_guidance_scale=7.5,
    adapter="sd",
    scheduler={
        "class": "DDIMScheduler",
        "config": {
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
            "prediction_type": "v_prediction", "num_train_timesteps": 1000,
        },
    },
)

TINY = tiny_variant(
    FULL,
    {
        "text_encoder": {
            "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32,
        },
        "unet": {
            "block_out_channels": [32, 64], "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "attention_head_dim": [2, 4], "cross_attention_dim": 32, "norm_num_groups": 8,
            "sample_size": 8,
        },
        "vae": {
            "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "sample_size": 64,
        },
    },
    # A 2-level VAE downsamples by 2, not 8: keep latent geometry consistent with the VAE.
    latent_downsample=2,
)

SMALL = small_sd(FULL)

register(FULL, TINY, SMALL)
