"""Phase adapter for ``QwenImagePipeline`` (Qwen-Image).

Text: Qwen2.5-VL-7B (the full ``Qwen2_5_VLForConditionalGeneration`` forward) runs over a
chat template prefix (34 tokens) plus the prompt; the pipeline drops the prefix and the
transformer attends to the rest. The real tokenizer pads only to the longest prompt, so the
length is prompt-dependent. The in-memory tokenizer here makes every prompt, negative
included, exactly ``text_lengths["text_encoder"]`` tokens (162 = 34 + 128: a 128-token
prompt, the length the FLOP counts assume), so encoder and transformer lengths are known.

CFG is "true CFG": a negative prompt plus ``true_cfg_scale`` > 1 runs the transformer twice
per step (positive and negative, as two calls). Decoding unpacks the 2x2-packed latents,
undoes the per-channel latent mean and std, and runs the causal 3-D VAE on one frame.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from mlflow_energy.families._adapter import denoise_to_latents, to_unit_images
from mlflow_energy.families._base import Family
from mlflow_energy.families._tokenizers import word_tokenizer

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig

# The pipeline warns on every call that precomputed embeddings come without a mask; an
# all-ones mask is exactly what it turns into None itself, so the warning is noise here.
_PIPELINE_LOGGER = "diffusers.pipelines.qwenimage.pipeline_qwenimage"


@contextmanager
def _quiet_pipeline():
    logger = logging.getLogger(_PIPELINE_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class QwenImageAdapter:
    def tokenizers(self, family: Family) -> dict[str, Any]:
        return {
            "tokenizer": word_tokenizer(
                family.text_lengths["text_encoder"], pad="<|endoftext|>", eos=None, fixed_length=True
            )
        }

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]:
        device = pipe._execution_device
        prompt_embeds, prompt_mask = pipe.encode_prompt([cfg.prompt] * cfg.batch_size, device=device)
        embeds = {"prompt_embeds": prompt_embeds, "prompt_embeds_mask": prompt_mask}
        if cfg.cfg:
            negative, negative_mask = pipe.encode_prompt([""] * cfg.batch_size, device=device)
            embeds.update(negative_prompt_embeds=negative, negative_prompt_embeds_mask=negative_mask)
        return embeds

    def denoise(self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator) -> torch.Tensor:
        with _quiet_pipeline():
            return denoise_to_latents(pipe, cfg, generator, true_cfg_scale=cfg.guidance_scale, **embeds)

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        vae = pipe.vae
        latents = pipe._unpack_latents(latents, cfg.height, cfg.width, pipe.vae_scale_factor).to(vae.dtype)
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std + mean
        image = vae.decode(latents, return_dict=False)[0][:, :, 0]
        return to_unit_images(image)


ADAPTER = QwenImageAdapter()
