"""Phase adapter for ``StableDiffusionPipeline`` (SD 1.5, SD 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mlflow_energy.families._adapter import denoise_to_latents, to_unit_images
from mlflow_energy.families._base import Family
from mlflow_energy.families._tokenizers import word_tokenizer

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig


class StableDiffusionAdapter:
    def tokenizers(self, family: Family) -> dict[str, Any]:
        return {"tokenizer": word_tokenizer(family.text_lengths["text_encoder"], bos="<|startoftext|>")}

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]:
        prompt_embeds, negative = pipe.encode_prompt(
            [cfg.prompt] * cfg.batch_size,
            pipe._execution_device,
            1,
            cfg.cfg,
            negative_prompt=[""] * cfg.batch_size if cfg.cfg else None,
        )
        return {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative}

    def denoise(self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator) -> torch.Tensor:
        return denoise_to_latents(pipe, cfg, generator, guidance_scale=cfg.guidance_scale, **embeds)

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        return to_unit_images(image)


ADAPTER = StableDiffusionAdapter()
