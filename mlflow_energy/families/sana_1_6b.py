"""SANA 1.5 1.6B (1024 px): linear-attention DiT 1.6 B + Gemma-2-2B text encoder + DC-AE f32c32.

A FLOPs-only family: it has analytical FLOPs and public measurements, but no phase adapter,
so the runner does not build it (``Family.measurable`` is False). Architecture:
``data/sana-1.6b.json`` (provenance in ``data/PROVENANCE.md``). Registered only when this
diffusers/transformers build has the SANA classes (checked without importing either). Guidance 4.5 (pipeline default).
"""

import importlib.util
from pathlib import Path

from mlflow_energy.families._base import family_from_data, register, tiny_variant

# Modules that define the SANA classes in diffusers and transformers (checked without importing them).
_SANA_MODULES = (
    ("diffusers", "models/transformers/sana_transformer.py"),
    ("diffusers", "models/autoencoders/autoencoder_dc.py"),
    ("transformers", "models/gemma2/modeling_gemma2.py"),
)


def _classes_available() -> bool:
    """True when the installed diffusers and transformers ship the SANA classes.

    Looked up with :func:`importlib.util.find_spec` and the packages' files, so registering the
    family never imports diffusers, transformers or torch.
    """
    for package, relative in _SANA_MODULES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return False
        if not any((Path(root) / relative).is_file() for root in spec.submodule_search_locations):
            return False
    return True


if _classes_available():
    FULL = family_from_data(
        "sana-1.6b",
        default_guidance_scale=4.5,
        adapter=None,
        scheduler={
            "class": "DPMSolverMultistepScheduler",
            "config": {
                "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint",
                "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0,
            },
        },
    )
    TINY = tiny_variant(
        FULL,
        {
            "text_encoder": {
                "vocab_size": 1000, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "query_pre_attn_scalar": 16,
            },
            "transformer": {
                "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16,
                "num_cross_attention_heads": 2, "cross_attention_head_dim": 16, "cross_attention_dim": 32,
                "caption_channels": 32,
            },
            "vae": {
                "attention_head_dim": 8,
                "encoder_block_types": ["ResBlock", "EfficientViTBlock"],
                "decoder_block_types": ["ResBlock", "EfficientViTBlock"],
                "encoder_block_out_channels": [16, 32], "decoder_block_out_channels": [16, 32],
                "encoder_layers_per_block": [1, 1], "decoder_layers_per_block": [1, 1],
                "encoder_qkv_multiscales": [[], [5]], "decoder_qkv_multiscales": [[], [5]],
            },
        },
        latent_downsample=2,
    )
    register(FULL, TINY)
