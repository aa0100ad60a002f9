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
from typing import Any, Protocol

import torch

from mlflow_energy.config import InferenceConfig
from mlflow_energy.families._base import Family


class PhaseAdapter(Protocol):
    def tokenizers(self, family: Family) -> dict[str, Any]: ...

    def encode(self, pipe: Any, cfg: InferenceConfig) -> dict[str, Any]: ...

    def denoise(
        self, pipe: Any, embeds: dict[str, Any], cfg: InferenceConfig, generator: torch.Generator
    ) -> torch.Tensor: ...

    def decode(self, pipe: Any, latents: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor: ...


def get_adapter(name: str) -> PhaseAdapter:
    """The adapter called ``name``: ``mlflow_energy.families._<name>.ADAPTER``."""
    return importlib.import_module(f"mlflow_energy.families._{name}").ADAPTER
