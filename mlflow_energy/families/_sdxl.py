"""Phase adapter for ``StableDiffusionXLPipeline`` (SDXL, SSD-1B).

Two CLIP text encoders (77 tokens each); the pooled, projected output of the second one
and the six ``time_ids`` feed the UNet's added conditioning (``added_cond_kwargs``), which
the pipeline builds itself from the pooled embeddings and ``height``/``width``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mlflow_energy.families._adapter import denoise_to_latents, to_unit_images
from mlflow_energy.families._base import Family
from mlflow_energy.families._tokenizers import word_tokenizer

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig


class StableDiffusionXLAdapter:
    def tokenizers(self, family: Family) -> dict[str, Any]:
        return {
            "tokenizer": word_tokenizer(family.text_lengths["text_encoder"], bos="<|startoftext|>"),
            "tokenizer_2": word_tokenizer(family.text_lengths["text_encoder_2"], bos="<|startoftext|>"),
        }

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]:
        # An explicit empty negative prompt is encoded (not zeroed), as with any negative prompt.
        prompt_embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            [cfg.prompt] * cfg.batch_size,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg.cfg,
            negative_prompt=[""] * cfg.batch_size if cfg.cfg else None,
        )
        embeds = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if cfg.cfg:
            embeds.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
        return embeds

    def denoise(self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator) -> torch.Tensor:
        return denoise_to_latents(pipe, cfg, generator, guidance_scale=cfg.guidance_scale, **embeds)

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        vae = pipe.vae
        # As the pipeline: the SDXL VAE overflows in fp16, so it is upcast for the decode.
        needs_upcasting = vae.dtype == torch.float16 and vae.config.force_upcast
        if needs_upcasting:
            pipe.upcast_vae()
            latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            c = latents.shape[1]
            mean_t = torch.tensor(mean).view(1, c, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, c, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if needs_upcasting:
            vae.to(dtype=torch.float16)
        return to_unit_images(image)


ADAPTER = StableDiffusionXLAdapter()
