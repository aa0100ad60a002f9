"""Analytical FLOPs per inference phase, for every model family, without building a model.

Closed forms walk each component's architecture config (text encoders, UNet or DiT, VAE
decoder) and count what the forward pass the pipeline calls computes, with the convention of
``torch.utils.flop_counter.FlopCounterMode``: one FLOP is one multiply or one add, so a matmul
``(m, k) @ (k, n)`` is ``2 m k n``. Matmuls, convolutions and attention are counted; norms,
softmax, activations, RoPE and scheduler arithmetic are not. The tests check every family
against the meta-device counter.

Per image: ``text_encode`` (the negative prompt too when the pipeline runs classifier-free
guidance), ``denoise`` = denoiser calls (= steps; steps + 1 for SD 1.5's PNDM) x passes (``cfg_passes``: 2 with CFG, else 1;
by default what ``pipe(prompt)`` does: one for Qwen-Image and FLUX.1, whose true CFG needs a negative prompt) x one call,
``decode`` (one VAE decode), ``total`` and ``denoise_per_step``. Every term is linear in the
batch size, so per-image values do not depend on it.

Example:
    >>> from mlflow_energy.config import InferenceConfig
    >>> from mlflow_energy.flops.count import config_flops
    >>> f = config_flops(InferenceConfig(model="sd2", height=768, width=768, steps=50))
    >>> round(f["total"] / 1e12)
    221
    >>> f["denoise"] == 50 * f["denoise_per_step"]
    True
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlflow_energy.config import SCHEDULER_DEFAULT
from mlflow_energy.errors import ConfigError
from mlflow_energy.families import Family, get_family
from mlflow_energy.flops.decoders import DECODERS, DecodeFn
from mlflow_energy.flops.denoisers import DENOISERS, DenoiseFn
from mlflow_energy.flops.text_encoders import TEXT_ENCODERS

if TYPE_CHECKING:

    from mlflow_energy.config import InferenceConfig

PHASES: tuple[str, ...] = ("text_encode", "denoise", "decode", "total", "denoise_per_step")
FRAME_INPUTS: tuple[str, ...] = ("model", "height", "width", "steps", "guidance_scale", "batch_size", "cfg_passes")
FRAME_OUTPUTS: tuple[str, ...] = tuple(f"flops_{p}" for p in PHASES)

# Qwen-Image: the chat-template prefix the pipeline runs through the encoder and then drops.
_QWEN_TEMPLATE_TOKENS = 34


def _denoiser_text_tokens(family: Family) -> int:
    """Text tokens the denoiser attends to for one prompt, as the family's pipeline builds them."""
    lengths = family.text_lengths
    pipe = family.pipeline_class
    if pipe.startswith("StableDiffusion3"):
        # CLIP-L and CLIP-G (77, concatenated on channels) then T5, concatenated on the sequence.
        return int(lengths.get("transformer_joint", lengths["text_encoder"] + lengths["text_encoder_3"]))
    if pipe.startswith("Flux"):
        return int(lengths["text_encoder_2"])  # T5 sequence; CLIP gives only the pooled vector
    if pipe.startswith("QwenImage"):
        return int(lengths.get("transformer_text_tokens", lengths["text_encoder"] - _QWEN_TEMPLATE_TOKENS))
    return int(lengths["text_encoder"])  # SD, SDXL (both CLIPs at 77), PixArt, Sana


@dataclass(frozen=True)
class _Plan:
    """Per-family constants: what each phase runs, with its closed form."""

    family: Family
    text_per_prompt: float  # every text encoder, one prompt
    denoise_fn: DenoiseFn
    denoise_cfg: Mapping[str, Any]
    denoise_text: int
    decode_fn: DecodeFn
    decode_cfg: Mapping[str, Any]


def _component_fn(family: Family, component: str) -> tuple[str, Any, Mapping[str, Any]]:
    spec = family.components[component]
    cls, cfg = spec["class"], spec["config"]
    for role, table in (("text", TEXT_ENCODERS), ("denoise", DENOISERS), ("decode", DECODERS)):
        if cls in table:
            return role, table[cls], cfg
    raise NotImplementedError(f"no closed-form FLOPs for {cls} ({family.name}.{component})")


@functools.cache
def _plan(name: str) -> _Plan:
    family = get_family(name)
    text = 0.0
    denoise = decode = None
    for comp in sorted(family.components):
        role, fn, cfg = _component_fn(family, comp)
        if role == "text":
            text += float(fn(cfg, family.text_lengths[comp], 1))
        elif role == "denoise":
            denoise = (fn, cfg)
        else:
            decode = (fn, cfg)
    if denoise is None or decode is None:
        raise NotImplementedError(f"{name}: a denoiser and a VAE are needed for phase FLOPs")
    return _Plan(family, text, denoise[0], denoise[1], _denoiser_text_tokens(family), decode[0], decode[1])


def _check_size(family: Family, field: str, value: Any) -> int:
    multiple = family.pixel_multiple
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < multiple or value % multiple:
        raise ConfigError(field, value, f"a positive multiple of {multiple} for {family.name}")
    return int(value)


def _family(family: Family | str) -> Family:
    return get_family(family) if isinstance(family, str) else family


# ---------------------------------------------------------------------- public API
def component_flops(family: Family | str, component: str, *, height: int, width: int, batch_size: int = 1) -> float:
    """FLOPs of one forward call of one component for ``batch_size`` samples.

    Text encoders: ``batch_size`` prompts at the family's text length (``height`` and ``width``
    are checked but do not matter). Denoiser (``unet`` / ``transformer``): one call on
    ``batch_size`` latents of a ``height`` x ``width`` image. ``vae``: one decode.

    Raises:
        ConfigError: unknown family or component, a size that is not a multiple of the
            family's pixel multiple, or a batch size below 1.

    Example:
        >>> round(component_flops("sd2", "text_encoder", height=768, width=768) / 1e9, 1)
        45.1
        >>> a = component_flops("flux.1-dev", "transformer", height=1024, width=1024)
        >>> b = component_flops("flux.1-dev", "transformer", height=1024, width=1024, batch_size=2)
        >>> b == 2 * a
        True
    """
    fam = _family(family)
    if component not in fam.components:
        raise ConfigError("component", component, "one of " + ", ".join(sorted(fam.components)))
    h, w = _check_size(fam, "height", height), _check_size(fam, "width", width)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "an integer >= 1")
    role, fn, cfg = _component_fn(fam, component)
    lh, lw = h // fam.latent_downsample, w // fam.latent_downsample
    if role == "text":
        return float(fn(cfg, fam.text_lengths[component], batch_size))
    if role == "denoise":
        return float(fn(cfg, lh, lw, _denoiser_text_tokens(fam), batch_size))
    return float(fn(cfg, lh, lw, batch_size))


def config_flops(cfg: InferenceConfig) -> dict[str, float]:
    """FLOPs per image of each phase of one inference configuration.

    Returns ``{"text_encode", "denoise", "decode", "total", "denoise_per_step"}``. ``cfg`` is
    validated (family defaults filled in) first.

    Raises:
        ConfigError: from :meth:`InferenceConfig.validate`.

    Example:
        >>> from mlflow_energy.config import InferenceConfig
        >>> f = config_flops(InferenceConfig(model="flux.1-schnell", height=1024, width=1024, steps=4))
        >>> sorted(f)
        ['decode', 'denoise', 'denoise_per_step', 'text_encode', 'total']
        >>> round(f["denoise"] / 1e12)
        278
    """
    cfg = cfg.validate()
    plan = _plan(cfg.model)
    fam = plan.family
    lh, lw = cfg.height // fam.latent_downsample, cfg.width // fam.latent_downsample
    passes = cfg.passes  # 1 or 2: validated against the family; default what pipe(prompt) does
    per_call = float(plan.denoise_fn(plan.denoise_cfg, lh, lw, plan.denoise_text, 1))
    text = plan.text_per_prompt * passes  # the negative prompt is encoded when CFG runs
    per_step = passes * per_call
    scheduler = None if cfg.scheduler == SCHEDULER_DEFAULT else cfg.scheduler
    denoise = _denoiser_calls(cfg.model, cfg.steps, scheduler) * per_step
    decode = float(plan.decode_fn(plan.decode_cfg, lh, lw, 1))
    return {
        "text_encode": text,
        "denoise": denoise,
        "decode": decode,
        "total": text + denoise + decode,
        "denoise_per_step": per_step,
    }


@functools.lru_cache(maxsize=4096)
def _denoiser_calls(model: str, steps: int, scheduler: str | None) -> int:
    """Denoiser evaluations for ``steps`` steps: the scheduler's timesteps (PNDM: steps + 1)."""
    return get_family(model).denoiser_calls(steps, scheduler)


_LINE_PROBES = (2, 11, 37)


@functools.lru_cache(maxsize=256)
def _calls_line(model: str) -> tuple[int, int] | None:
    """``(a, c)``: denoiser calls = a x steps + c from ``_LINE_PROBES[0]`` steps on, else None.

    Every shipped scheduler is linear in the steps there (PNDM: steps + 1, but 1 call at one
    step); probing three step counts once per family keeps the vectorised path free of
    scheduler construction.
    """
    probes = _LINE_PROBES
    calls = [_denoiser_calls(model, n, None) for n in probes]
    a, rem = divmod(calls[1] - calls[0], probes[1] - probes[0])
    c = calls[0] - a * probes[0]
    if rem or any(a * n + c != k for n, k in zip(probes, calls, strict=True)):
        return None
    return a, c


def flops_metrics(cfg: InferenceConfig) -> dict[str, float]:
    """:func:`config_flops` keyed by the run-schema metric names (``flops/<phase>``).

    Example:
        >>> from mlflow_energy.config import InferenceConfig
        >>> sorted(flops_metrics(InferenceConfig(model="tiny-sd2")))[0]
        'flops/decode'
    """
    from mlflow_energy.schema import flops_key

    return {flops_key(phase): value for phase, value in config_flops(cfg).items()}
