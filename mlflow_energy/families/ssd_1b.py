"""Segmind SSD-1B (1024 px): a distilled SDXL, UNet 1.3 B, with SDXL's text encoders and VAE.

Architecture: ``data/ssd-1b.json``. The UNet block structure is **reconstructed** (no public
copy of its ``config.json`` was found; see ``data/PROVENANCE.md``): fewer transformer layers
per block and a mid block without attention. Runs in ``StableDiffusionXLPipeline`` with the
SDXL scheduler. Guidance 5.0 (pipeline default).
"""

from mlflow_energy.families import _tiny
from mlflow_energy.families._base import family_from_data, register, tiny_variant
from mlflow_energy.families.sdxl import SCHEDULER, TINY_UNET

FULL = family_from_data("ssd-1b", default_guidance_scale=5.0, adapter="sdxl", scheduler=SCHEDULER)

TINY = tiny_variant(
    FULL,
    {
        "text_encoder": _tiny.CLIP,
        "text_encoder_2": _tiny.CLIP,
        # Same tiny UNet as SDXL, keeping SSD-1B's traits: per-up-block depths, attention-free mid block.
        "unet": {**TINY_UNET, "reverse_transformer_layers_per_block": [[1, 2], [0, 0]]},
        "vae": _tiny.VAE_KL,
    },
    latent_downsample=_tiny.LATENT_DOWNSAMPLE,
)

register(FULL, TINY)
