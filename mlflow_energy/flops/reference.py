"""Reference FLOP counts: one forward call of a component on the meta device.

Builds the component from its architecture config with every tensor on ``meta`` (no memory,
no weights) and counts one forward pass with ``torch.utils.flop_counter.FlopCounterMode``,
calling it the way its diffusers pipeline does. This is the ground truth the closed forms in
:mod:`mlflow_energy.flops.count` are tested against, and what ``benchmarks/flops_bench.py`` times.

Counting on ``meta`` matters: on real CPU tensors ``scaled_dot_product_attention`` dispatches
to a kernel with no FLOP formula, so attention would count as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mlflow_energy.families._build import build_on_meta

META = torch.device("meta")


def _ids(batch: int, seq: int) -> torch.Tensor:
    return torch.zeros(batch, seq, dtype=torch.long, device=META)


def _x(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, device=META)


def _text_call(model: torch.nn.Module, class_name: str, seq: int, batch: int) -> None:
    ids = _ids(batch, seq)
    if class_name.startswith("Qwen2_5_VL"):
        # An all-ones attention mask makes the mask helper call .item(): pass None (same FLOPs without padding).
        model(input_ids=ids, attention_mask=None, output_hidden_states=True)
    elif class_name == "Gemma2Model":
        model(input_ids=ids, attention_mask=None)
    elif class_name.startswith("CLIP"):
        model(input_ids=ids, output_hidden_states=True)
    else:
        model(input_ids=ids)


def _denoiser_call(
    model: torch.nn.Module, class_name: str, cfg: Mapping[str, Any], lh: int, lw: int, text: int, batch: int
) -> None:
    t = torch.ones(batch, device=META)
    if class_name == "UNet2DConditionModel":
        cross = cfg.get("cross_attention_dim", 1280)
        cross = cross[0] if isinstance(cross, (list, tuple)) else cross
        kwargs: dict[str, Any] = {}
        if cfg.get("addition_embed_type") == "text_time":
            n_time = 6
            text_embeds = cfg["projection_class_embeddings_input_dim"] - n_time * cfg["addition_time_embed_dim"]
            kwargs["added_cond_kwargs"] = {"text_embeds": _x(batch, text_embeds), "time_ids": _x(batch, n_time)}
        model(_x(batch, cfg.get("in_channels", 4), lh, lw), t, encoder_hidden_states=_x(batch, text, cross), **kwargs)
    elif class_name == "SD3Transformer2DModel":
        model(
            hidden_states=_x(batch, cfg.get("in_channels", 16), lh, lw),
            encoder_hidden_states=_x(batch, text, cfg.get("joint_attention_dim", 4096)),
            pooled_projections=_x(batch, cfg.get("pooled_projection_dim", 2048)),
            timestep=t,
        )
    elif class_name == "FluxTransformer2DModel":
        n = (lh // 2) * (lw // 2)
        model(
            hidden_states=_x(batch, n, cfg.get("in_channels", 64)),
            encoder_hidden_states=_x(batch, text, cfg.get("joint_attention_dim", 4096)),
            pooled_projections=_x(batch, cfg.get("pooled_projection_dim", 768)),
            timestep=t,
            img_ids=_x(n, 3),
            txt_ids=_x(text, 3),
            guidance=t if cfg.get("guidance_embeds", False) else None,
        )
    elif class_name == "QwenImageTransformer2DModel":
        n = (lh // 2) * (lw // 2)
        model(
            hidden_states=_x(batch, n, cfg.get("in_channels", 64)),
            encoder_hidden_states=_x(batch, text, cfg.get("joint_attention_dim", 3584)),
            encoder_hidden_states_mask=None,  # a mask triggers data-dependent indexing on meta
            timestep=t,
            img_shapes=[[(1, lh // 2, lw // 2)]] * batch,
        )
    elif class_name == "PixArtTransformer2DModel":
        model(
            hidden_states=_x(batch, cfg.get("in_channels", 4), lh, lw),
            encoder_hidden_states=_x(batch, text, cfg.get("caption_channels") or 4096),
            timestep=t,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        )
    elif class_name == "SanaTransformer2DModel":
        model(
            hidden_states=_x(batch, cfg.get("in_channels", 32), lh, lw),
            encoder_hidden_states=_x(batch, text, cfg.get("caption_channels", 2304)),
            timestep=t,
            guidance=t if cfg.get("guidance_embeds", False) else None,
        )
    else:
        raise NotImplementedError(f"no meta call for {class_name}")


def _decoder_call(model: torch.nn.Module, class_name: str, cfg: Mapping[str, Any], lh: int, lw: int, batch: int) -> None:
    if class_name == "AutoencoderKLQwenImage":
        model.decode(_x(batch, cfg.get("z_dim", 16), 1, lh, lw))
    elif class_name == "AutoencoderDC":
        model.decode(_x(batch, cfg.get("latent_channels", 32), lh, lw))
    else:
        model.decode(_x(batch, cfg.get("latent_channels", 4), lh, lw))


def count_component(
    class_path: str,
    config: Mapping[str, Any],
    *,
    role: str,
    lh: int = 0,
    lw: int = 0,
    text: int = 0,
    batch: int = 1,
    model: torch.nn.Module | None = None,
) -> int:
    """FLOPs of one forward call, counted on meta; ``role`` is ``text``, ``denoise`` or ``decode``.

    ``lh``, ``lw``: latent height and width (pixels / latent downsample); ``text``: token count of
    the text encoder input (``role="text"``) or of the denoiser's text stream. ``model``: an already
    built meta module, to count several sizes without rebuilding.
    """
    class_name = class_path.rpartition(".")[2]
    if model is None:
        model = build_on_meta(class_path, dict(config))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if role == "text":
            _text_call(model, class_name, text, batch)
        elif role == "denoise":
            _denoiser_call(model, class_name, config, lh, lw, text, batch)
        elif role == "decode":
            _decoder_call(model, class_name, config, lh, lw, batch)
        else:
            raise ValueError(f"role must be text, denoise or decode, not {role!r}")
    return int(counter.get_total_flops())
