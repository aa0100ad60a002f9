"""Shared checks for the family tests: meta parameter counts and traced tiny runs.

Every tiny run uses the real diffusers pipeline class with random weights on CPU and
records, through forward hooks, the sequence lengths each text encoder ran at and the
batch and text length of every denoiser call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from mlflow_energy.config import InferenceConfig
from mlflow_energy.families import Family, get_family
from mlflow_energy.families._adapter import get_adapter
from mlflow_energy.families._build import build_on_meta, build_pipeline


@dataclass
class Trace:
    family: Family
    cfg: InferenceConfig
    pipe: Any
    embeds: dict[str, Any]
    latents: torch.Tensor
    images: torch.Tensor
    text_lengths: dict[str, set[int]] = field(default_factory=dict)
    denoiser_calls: list[tuple[int, int]] = field(default_factory=list)  # (batch, text tokens)
    denoiser_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword inputs of the first call

    @property
    def samples_per_image(self) -> float:
        """Denoiser samples per image over the whole loop: calls x (2 with CFG, 1 without)."""
        return sum(b for b, _ in self.denoiser_calls) / self.cfg.batch_size


@functools.cache
def _meta_counts(name: str) -> dict[str, int]:
    fam = get_family(name)
    return {
        comp: sum(p.numel() for p in build_on_meta(spec["class"], dict(spec["config"])).parameters())
        for comp, spec in fam.components.items()
    }


@functools.cache
def _tiny_pipeline(name: str) -> Any:
    fam = get_family(name)
    return build_pipeline(fam, tokenizers=get_adapter(fam.adapter).tokenizers(fam))


def _first_tensor(args: tuple, kwargs: dict, *names: str) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    for n in names:
        if isinstance(kwargs.get(n), torch.Tensor):
            return kwargs[n]
    raise AssertionError(f"no tensor among {names}")


def trace_run(name: str, **fields: Any) -> Trace:
    """Run encode -> denoise -> decode of a tiny family once, hooks on every component."""
    fam = get_family(name)
    adapter = get_adapter(fam.adapter)
    pipe = _tiny_pipeline(name)
    cfg = InferenceConfig(model=name, **{"height": 64, "width": 64, "steps": 2, **fields}).validate()
    seen: dict[str, set[int]] = {te: set() for te in fam.text_encoders}
    calls: list[tuple[int, int]] = []
    first_kwargs: dict[str, Any] = {}
    handles = []
    for te in fam.text_encoders:
        def hook(_m, args, kwargs, te=te):
            seen[te].add(_first_tensor(args, kwargs, "input_ids").shape[1])
        handles.append(getattr(pipe, te).register_forward_pre_hook(hook, with_kwargs=True))

    def denoiser_hook(_m, args, kwargs):
        x = _first_tensor(args, kwargs, "hidden_states", "sample")
        calls.append((x.shape[0], kwargs["encoder_hidden_states"].shape[1]))
        if not first_kwargs:
            first_kwargs.update(kwargs)

    handles.append(getattr(pipe, fam.denoiser).register_forward_pre_hook(denoiser_hook, with_kwargs=True))
    try:
        embeds = adapter.encode(pipe, cfg)
        latents = adapter.denoise(pipe, embeds, cfg, torch.Generator().manual_seed(cfg.seed))
        images = adapter.decode(pipe, latents, cfg)
    finally:
        for h in handles:
            h.remove()
    return Trace(fam, cfg, pipe, embeds, latents, images, seen, calls, first_kwargs)


def assert_images(trace: Trace) -> None:
    cfg = trace.cfg
    assert trace.images.shape == (cfg.batch_size, 3, cfg.height, cfg.width)
    assert torch.isfinite(trace.images).all()
    assert trace.images.min() >= 0 and trace.images.max() <= 1
    assert trace.images.std() > 0  # not a constant image


@pytest.fixture
def meta_counts():
    """``name -> {component: parameter count}`` of the family built on the meta device."""
    return _meta_counts


@pytest.fixture
def traced():
    """``traced(name, **config fields) -> Trace`` of one tiny three-phase run."""
    return trace_run


@pytest.fixture
def check_images():
    return assert_images
