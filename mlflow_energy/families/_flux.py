"""Phase adapter for ``FluxPipeline`` (FLUX.1-dev, FLUX.1-schnell).

Text: CLIP-L (77 tokens, pooled output only) and T5-XXL at ``max_sequence_length`` = the
family's ``text_lengths["text_encoder_2"]`` (512 for dev, 256 for schnell). No negative
prompt: FLUX.1-dev is guidance-distilled (the guidance scale is an input embedding, one
transformer pass per step), FLUX.1-schnell takes no guidance. Latents leave the loop
packed 2x2 into 64-channel tokens; decoding unpacks them and undoes scaling and shift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mlflow_energy.families._adapter import denoise_to_latents, to_unit_images
from mlflow_energy.families._base import Family
from mlflow_energy.families._tokenizers import word_tokenizer

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig


class FluxAdapter:
    def tokenizers(self, family: Family) -> dict[str, Any]:
        return {
            "tokenizer": word_tokenizer(family.text_lengths["text_encoder"], bos="<|startoftext|>"),
            "tokenizer_2": word_tokenizer(family.text_lengths["text_encoder_2"]),
        }

    @staticmethod
    def _t5_length(pipe: Any) -> int:
        return int(pipe.tokenizer_2.model_max_length)

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]:
        prompts = [cfg.prompt] * cfg.batch_size
        prompt_embeds, pooled, _text_ids = pipe.encode_prompt(
            prompts,
            prompts,
            device=pipe._execution_device,
            num_images_per_prompt=1,
            max_sequence_length=self._t5_length(pipe),
        )
        embeds = {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}
        if cfg.cfg:  # true CFG (cfg_passes 2): an empty negative prompt, as pipe(prompt, negative_prompt="") encodes it
            negatives = [""] * cfg.batch_size
            negative, negative_pooled, _ = pipe.encode_prompt(
                negatives, negatives, device=pipe._execution_device, num_images_per_prompt=1,
                max_sequence_length=self._t5_length(pipe),
            )
            embeds.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
        return embeds

    def denoise(self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator) -> torch.Tensor:
        # guidance_scale is only read when the transformer has guidance embeddings (dev). True CFG (two
        # transformer passes per step) runs when negative embeddings are given and true_cfg_scale > 1.
        true_cfg = {"true_cfg_scale": cfg.guidance_scale} if cfg.cfg else {}
        return denoise_to_latents(
            pipe, cfg, generator, guidance_scale=cfg.guidance_scale, max_sequence_length=self._t5_length(pipe),
            **true_cfg, **embeds
        )

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        vae = pipe.vae
        latents = pipe._unpack_latents(latents, cfg.height, cfg.width, pipe.vae_scale_factor)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return to_unit_images(image)


ADAPTER = FluxAdapter()
