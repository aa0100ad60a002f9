"""Phase adapter for ``StableDiffusion3Pipeline`` (SD3-Medium, SD3.5-Medium, SD3.5-Large).

Three text encoders: CLIP-L and CLIP-G (77 tokens each) and T5-XXL, run at
``max_sequence_length`` = the family's ``text_lengths["text_encoder_3"]`` (256). The
transformer sees 77 + 256 joint text tokens. Decoding undoes the VAE's scaling and shift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mlflow_energy.families._adapter import denoise_to_latents, to_unit_images
from mlflow_energy.families._base import Family
from mlflow_energy.families._tokenizers import word_tokenizer

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig


class StableDiffusion3Adapter:
    def tokenizers(self, family: Family) -> dict[str, Any]:
        return {
            "tokenizer": word_tokenizer(family.text_lengths["text_encoder"], bos="<|startoftext|>"),
            "tokenizer_2": word_tokenizer(family.text_lengths["text_encoder_2"], bos="<|startoftext|>"),
            "tokenizer_3": word_tokenizer(family.text_lengths["text_encoder_3"]),
        }

    @staticmethod
    def _t5_length(pipe: Any) -> int:
        return int(pipe.tokenizer_3.model_max_length)

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]:
        prompts = [cfg.prompt] * cfg.batch_size
        negative = [""] * cfg.batch_size if cfg.cfg else None
        prompt_embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
            prompts,
            prompts,
            prompts,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg.cfg,
            negative_prompt=negative,
            negative_prompt_2=negative,
            negative_prompt_3=negative,
            max_sequence_length=self._t5_length(pipe),
        )
        embeds = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if cfg.cfg:
            embeds.update(negative_prompt_embeds=negative_embeds, negative_pooled_prompt_embeds=negative_pooled)
        return embeds

    def denoise(self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator) -> torch.Tensor:
        return denoise_to_latents(
            pipe, cfg, generator, guidance_scale=cfg.guidance_scale, max_sequence_length=self._t5_length(pipe), **embeds
        )

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        vae = pipe.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return to_unit_images(image)


ADAPTER = StableDiffusion3Adapter()
