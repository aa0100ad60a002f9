"""The phase adapter interface: one pipeline split into its three measured phases.

Each pipeline class has one adapter module (``_sd.py``, ``_sd3.py``, ...) exposing an
object with three methods. The runner calls them in order inside measurement windows:

    embeds  = adapter.encode(pipe, cfg)                  # text encoders (negative prompt too with CFG)
    latents = adapter.denoise(pipe, embeds, cfg, gen)    # all steps, CFG included -> latents
    images  = adapter.decode(pipe, latents, cfg)         # VAE decode -> (B, 3, H, W) in [0, 1]

``adapter.tokenizers(family)`` returns the in-memory tokenizers a random-weight pipeline
needs. Nothing here synchronises the device: the runner does that at phase boundaries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

import torch

from mlflow_energy.families._base import Family

if TYPE_CHECKING:  # types only: config imports families, never the other way
    from mlflow_energy.config import InferenceConfig


class PhaseAdapter(Protocol):
    def tokenizers(self, family: Family) -> dict[str, Any]: ...

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]: ...

    def denoise(
        self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator
    ) -> torch.Tensor: ...

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor: ...


def denoise_to_latents(
    pipe: Any, cfg: InferenceConfig, generator: torch.Generator, **pipeline_kwargs: Any
) -> torch.Tensor:
    """Run ``pipe``'s whole denoising loop at ``cfg``'s size and steps; return the final latents.

    ``pipeline_kwargs`` is what differs between pipelines: the embeddings from ``encode()``
    and the guidance argument (``guidance_scale`` or ``true_cfg_scale``), plus any other
    pipeline option. The VAE does not run (``output_type="latent"``).

    Example:
        >>> import torch
        >>>         >>> from mlflow_energy.families import get_family
        >>> from mlflow_energy.families._build import build_pipeline
        >>> fam = get_family("tiny-sd2")
        >>> adapter = get_adapter(fam.adapter)
        >>> pipe = build_pipeline(fam, tokenizers=adapter.tokenizers(fam))
        >>> cfg = InferenceConfig(model="tiny-sd2", height=64, width=64, steps=1, guidance_scale=1.0).validate()
        >>> embeds = adapter.encode(pipe, cfg)
        >>> denoise_to_latents(pipe, cfg, torch.Generator().manual_seed(0), **embeds).shape
        torch.Size([1, 4, 32, 32])
    """
    return pipe(
        height=cfg.height,
        width=cfg.width,
        num_inference_steps=cfg.steps,
        generator=generator,
        output_type="latent",
        **pipeline_kwargs,
    ).images


def to_unit_images(image: torch.Tensor) -> torch.Tensor:
    """VAE output in [-1, 1] (any dtype) -> float32 images in [0, 1], as the pipelines post-process.

    Example:
        >>> to_unit_images(torch.tensor([-2.0, -1.0, 0.0, 1.0]))
        tensor([0.0000, 0.0000, 0.5000, 1.0000])
    """
    return (image.float() / 2 + 0.5).clamp(0, 1)


def get_adapter(name: str) -> PhaseAdapter:
    """The adapter called ``name``: ``mlflow_energy.families._<name>.ADAPTER``."""
    return importlib.import_module(f"mlflow_energy.families._{name}").ADAPTER
