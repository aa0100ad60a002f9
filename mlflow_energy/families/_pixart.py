"""Phase adapter for ``PixArtSigmaPipeline`` (PixArt-Sigma).

One T5-XXL text encoder at ``max_sequence_length`` = the family's
``text_lengths["text_encoder"]`` (300), negative prompt encoded too with CFG. The
transformer predicts noise and a learned variance (8 output channels); the pipeline keeps
the noise half. Resolution binning is turned off so the requested height and width are
what runs (the pipeline's default snaps them to the nearest trained aspect ratio).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mlflow_energy.families._adapter import denoise_to_latents, to_unit_images
from mlflow_energy.families._base import Family
from mlflow_energy.families._tokenizers import word_tokenizer

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig


class PixArtSigmaAdapter:
    def tokenizers(self, family: Family) -> dict[str, Any]:
        return {"tokenizer": word_tokenizer(family.text_lengths["text_encoder"])}

    @staticmethod
    def _t5_length(pipe: Any) -> int:
        return int(pipe.tokenizer.model_max_length)

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]:
        prompt_embeds, prompt_mask, negative, negative_mask = pipe.encode_prompt(
            [cfg.prompt] * cfg.batch_size,
            do_classifier_free_guidance=cfg.cfg,
            negative_prompt="",
            num_images_per_prompt=1,
            device=pipe._execution_device,
            clean_caption=False,
            max_sequence_length=self._t5_length(pipe),
        )
        embeds = {"prompt_embeds": prompt_embeds, "prompt_attention_mask": prompt_mask}
        if cfg.cfg:
            embeds.update(negative_prompt_embeds=negative, negative_prompt_attention_mask=negative_mask)
        return embeds

    def denoise(self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator) -> torch.Tensor:
        return denoise_to_latents(
            pipe,
            cfg,
            generator,
            guidance_scale=cfg.guidance_scale,
            negative_prompt=None,  # the negative embeddings come from encode()
            use_resolution_binning=False,
            clean_caption=False,
            max_sequence_length=self._t5_length(pipe),
            **embeds,
        )

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        vae = pipe.vae
        image = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]
        return to_unit_images(image)


ADAPTER = PixArtSigmaAdapter()
