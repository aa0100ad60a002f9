"""Shared pieces of the SD3 / SD3.5 families: released scheduler and tiny component configs."""

from __future__ import annotations

from typing import Any

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import Family, tiny_variant

# stabilityai/stable-diffusion-3*-*/scheduler/scheduler_config.json (identical for all three).
SCHEDULER: dict[str, Any] = {
    "class": "FlowMatchEulerDiscreteScheduler",
    "config": {"num_train_timesteps": 1000, "shift": 3.0},
}

T5_WIDTH = 2 * _tiny.TEXT_WIDTH  # the pipeline zero-pads CLIP-L + CLIP-G features to the T5 width


def reduced_components(full: Family, *, num_layers: int, heads: int, head_dim: int, caption_projection_dim: int,
                       pos_embed_max_size: int, vae: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Component overrides of a reduced SD3 variant: tiny text encoders and an MMDiT(-X) of the given
    size, with dual attention on block 0 if the full model has it (used by ``tiny-`` and ``small-``)."""
    transformer: dict[str, Any] = {
        "sample_size": 32, "num_layers": num_layers, "attention_head_dim": head_dim, "num_attention_heads": heads,
        "joint_attention_dim": T5_WIDTH, "caption_projection_dim": caption_projection_dim,
        "pooled_projection_dim": 2 * _tiny.TEXT_WIDTH, "pos_embed_max_size": pos_embed_max_size,
    }
    if full.components["transformer"]["config"].get("dual_attention_layers"):
        transformer["dual_attention_layers"] = [0]
    return {
        "text_encoder": _tiny.CLIP,
        "text_encoder_2": _tiny.CLIP,
        "text_encoder_3": {**_tiny.T5, "d_model": T5_WIDTH},
        "transformer": transformer,
        "vae": vae,
    }


def tiny_sd3(full: Family) -> Family:
    """Tiny MMDiT(-X): 2 joint blocks of 4 heads x 8; dual attention on block 0 if the full model has it."""
    return tiny_variant(
        full,
        reduced_components(full, num_layers=2, heads=4, head_dim=8, caption_projection_dim=32,
                           pos_embed_max_size=64, vae=_tiny.VAE_KL),
        latent_downsample=_tiny.LATENT_DOWNSAMPLE,
    )
