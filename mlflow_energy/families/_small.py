"""Small variants (``small-<family>``): the released classes at widths where compute dominates.

Tiny variants run in milliseconds at 32-48 px: their cost is Python overhead, not FLOPs, and
no energy law can show on them. Small variants keep the same pipeline and component classes
with denoisers that are *few and wide*: one or two blocks of width 1024 (transformers) or a
two-level UNet of 160-320 channels. Width is what matters on a CPU: two intra-op threads share
a matrix product well only from a few hundred MFLOP up (a 256^3 product gets almost no speedup
on two cores, a 1024^3 one about 2x), so narrow ops measure thread overhead, not FLOPs, and
energy per FLOP then depends on the thread count. Depth is what the demo's time budget can
spare: one image costs about 0.15 s at the demo's smallest config and 4 s at its largest on
two cores, and energy follows FLOPs over its resolution x steps grid (``projects/cpu-demo.yaml``).
Text encoders stay tiny (their cost is constant per prompt); the VAE has three levels, so it
downsamples by 4 and decoding scales with the pixels.

Example:
    >>> from mlflow_energy.families import get_family
    >>> fam = get_family("small-sd2")
    >>> fam.pipeline_class == get_family("sd2").pipeline_class, fam.latent_downsample
    (True, 4)
"""

from __future__ import annotations

from typing import Any

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import SMALL_PREFIX, Family, tiny_variant
from mlflow_energy.families._sd3_common import reduced_components

#: Pixels per latent cell of the small VAE (three levels).
LATENT_DOWNSAMPLE = 4
#: Default resolution and steps of the small variants.
DEFAULT_RESOLUTION = 128
DEFAULT_STEPS = 4

VAE_KL: dict[str, Any] = {
    "block_out_channels": [32, 64, 64], "layers_per_block": 1, "norm_num_groups": 16,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "sample_size": 128,
}

SD_UNET: dict[str, Any] = {
    "block_out_channels": [160, 320], "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": [5, 10], "cross_attention_dim": _tiny.TEXT_WIDTH, "norm_num_groups": 32,
    "sample_size": 32,
}

SDXL_UNET: dict[str, Any] = {
    "block_out_channels": [160, 320], "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 1], "attention_head_dim": [5, 10],
    "cross_attention_dim": 2 * _tiny.TEXT_WIDTH, "norm_num_groups": 32, "sample_size": 32,
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + _tiny.TEXT_WIDTH,
}

FLUX_TRANSFORMER: dict[str, Any] = {
    "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 64, "num_attention_heads": 16,
    "joint_attention_dim": _tiny.TEXT_WIDTH, "pooled_projection_dim": _tiny.TEXT_WIDTH,
    "axes_dims_rope": [16, 24, 24],
}


def _small(full: Family, overrides: dict[str, dict[str, Any]]) -> Family:
    return tiny_variant(
        full, overrides, prefix=SMALL_PREFIX, default_resolution=DEFAULT_RESOLUTION,
        default_steps=DEFAULT_STEPS, latent_downsample=LATENT_DOWNSAMPLE,
    )


def small_sd(full: Family) -> Family:
    """Small SD 1.5/2: a 2-level UNet 160-320 (heads of 32) with cross-attention on the upper level."""
    return _small(full, {"text_encoder": _tiny.CLIP, "unet": SD_UNET, "vae": VAE_KL})


def small_sdxl(full: Family) -> Family:
    """Small SDXL: a 2-level UNet 160-320 (heads of 32) with attention on the lower level, as SDXL has."""
    return _small(
        full, {"text_encoder": _tiny.CLIP, "text_encoder_2": _tiny.CLIP, "unet": SDXL_UNET, "vae": VAE_KL}
    )


def small_flux(full: Family) -> Family:
    """Small FLUX: 1 double-stream + 1 single-stream block of 16 heads x 64 (width 1024)."""
    return _small(
        full,
        {"text_encoder": _tiny.CLIP, "text_encoder_2": _tiny.T5, "transformer": FLUX_TRANSFORMER, "vae": VAE_KL},
    )


def small_sd3(full: Family) -> Family:
    """Small MMDiT(-X): 1 joint block of 16 heads x 64 (width 1024), with dual attention if the full model has it."""
    return _small(
        full,
        reduced_components(full, num_layers=1, heads=16, head_dim=64, caption_projection_dim=1024,
                           pos_embed_max_size=96, vae=VAE_KL),
    )
