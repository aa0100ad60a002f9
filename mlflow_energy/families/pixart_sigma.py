"""PixArt-Sigma XL-2 1024-MS (1024 px): DiT 0.61 B + T5-XXL (300 tokens) + SDXL VAE f8c4.

Cross-attention DiT with adaLN-single conditioning; it predicts noise and a learned
variance. Architecture: ``data/pixart-sigma.json`` (provenance in ``data/PROVENANCE.md``).
Scheduler: the released DPMSolverMultistep config. Guidance 4.5 (pipeline default, CFG
with an empty negative prompt: two samples per step); 20 steps.
"""

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import family_from_data, register, tiny_variant

FULL = family_from_data(
    "pixart-sigma",
    default_guidance_scale=4.5,
    adapter="pixart",
    scheduler={
        "class": "DPMSolverMultistepScheduler",
        "config": {
            "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
            "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint",
            "prediction_type": "epsilon", "lower_order_final": True, "timestep_spacing": "linspace",
            "steps_offset": 0, "thresholding": False, "use_karras_sigmas": False,
        },
    },
)

TINY = tiny_variant(
    FULL,
    {
        "text_encoder": _tiny.T5,
        "transformer": {
            "sample_size": 32, "num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16,
            "cross_attention_dim": 32, "caption_channels": _tiny.TEXT_WIDTH, "interpolation_scale": 1,
        },
        "vae": _tiny.VAE_KL,
    },
    latent_downsample=_tiny.LATENT_DOWNSAMPLE,
)

register(FULL, TINY)
