"""Shared pieces of the FLUX.1 families: tiny component configs."""

from __future__ import annotations

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import Family, tiny_variant


def tiny_flux(full: Family) -> Family:
    """Tiny FLUX: 1 double-stream + 2 single-stream blocks of 2 heads x 16, same packing and RoPE axes."""
    return tiny_variant(
        full,
        {
            "text_encoder": _tiny.CLIP,
            "text_encoder_2": _tiny.T5,
            "transformer": {
                "num_layers": 1, "num_single_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2,
                "joint_attention_dim": _tiny.TEXT_WIDTH, "pooled_projection_dim": _tiny.TEXT_WIDTH,
                "axes_dims_rope": [4, 6, 6],
            },
            "vae": _tiny.VAE_KL,
        },
        latent_downsample=_tiny.LATENT_DOWNSAMPLE,
    )
