"""Qwen-Image (1024 px): MMDiT 20.4 B + Qwen2.5-VL-7B text encoder + causal 3-D VAE f8c16.

Alibaba Qwen's text-to-image model. The text encoder is the full Qwen2.5-VL-7B forward over
a chat template plus the prompt (162 tokens here: a 128-token prompt, see ``_qwen.py``);
the transformer attends to the 128 prompt tokens. CFG is "true CFG": a negative prompt and
``true_cfg_scale`` 4.0 (the pipeline default), two transformer passes per step. The VAE is
the Wan-style causal video VAE run on one frame. Architecture: ``data/qwen-image.json``
(provenance in ``data/PROVENANCE.md``). Scheduler: the released FlowMatchEulerDiscrete
config (exponential dynamic shifting, terminal shift 0.02).
"""

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import family_from_data, register, tiny_variant

FULL = family_from_data(
    "qwen-image",
    default_guidance_scale=4.0,
    adapter="qwen",
    min_steps=2,  # the released scheduler's shift_terminal divides 0 by 0 at one step
    scheduler={
        "class": "FlowMatchEulerDiscreteScheduler",
        "config": {
            "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True,
            "base_shift": 0.5, "max_shift": 0.9, "base_image_seq_len": 256, "max_image_seq_len": 8192,
            "shift_terminal": 0.02, "time_shift_type": "exponential", "invert_sigmas": False,
            "stochastic_sampling": False, "use_beta_sigmas": False, "use_exponential_sigmas": False,
            "use_karras_sigmas": False,
        },
    },
)

TINY = tiny_variant(
    FULL,
    {
        "text_encoder": {
            "text_config": {
                "vocab_size": _tiny.VOCAB, "hidden_size": _tiny.TEXT_WIDTH, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "bos_token_id": 0, "eos_token_id": 0,
                "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            },
            "vision_config": {
                "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                "out_hidden_size": _tiny.TEXT_WIDTH, "fullatt_block_indexes": [0],
            },
        },
        "transformer": {
            "num_layers": 2, "attention_head_dim": 16, "num_attention_heads": 2,
            "joint_attention_dim": _tiny.TEXT_WIDTH, "axes_dims_rope": [4, 6, 6],
        },
        "vae": {"base_dim": 8, "dim_mult": [1, 2], "num_res_blocks": 1, "temperal_downsample": [False]},
    },
    latent_downsample=_tiny.LATENT_DOWNSAMPLE,
)

register(FULL, TINY)
