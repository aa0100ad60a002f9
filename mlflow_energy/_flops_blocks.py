"""Closed-form matmul FLOPs of one forward call of each component class.

Counting convention (that of ``torch.utils.flop_counter.FlopCounterMode``): a FLOP is one
multiply or one add, so a matmul ``(m, k) @ (k, n)`` is ``2 m k n``; a convolution is
``2 x output elements x (input channels / groups) x kernel volume``; attention is its two
matmuls, ``QK^T`` and ``PV``: ``4 x queries x keys x heads x head_dim``. Bias adds, norms,
softmax, activations, RoPE and every other elementwise operation are not counted.

Every function walks the component's architecture config (the ``config.json`` keys) and
takes the sizes as numbers or numpy arrays (latent height and width before patchifying,
text lengths, batch size), so one call evaluates many configurations at once. Nothing here
builds a model or imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np

Num = Union[float, np.ndarray]  # noqa: UP007  (a number, or one value per configuration)
Config = Mapping[str, Any]


# ---------------------------------------------------------------------- primitives
def linear(tokens: Num, d_in: int, d_out: int) -> Num:
    """``tokens`` rows through a ``Linear(d_in, d_out)``."""
    return 2.0 * tokens * d_in * d_out


def attention(queries: Num, keys: Num, heads: int, head_dim: int) -> Num:
    """Scaled dot-product attention: ``QK^T`` and ``PV`` (softmax not counted)."""
    return 4.0 * queries * keys * heads * head_dim


def conv(out_pixels: Num, c_in: int, c_out: int, kernel: int | Sequence[int], groups: int = 1) -> Num:
    """A convolution producing ``out_pixels`` output positions (times batch) per channel."""
    volume = int(np.prod(kernel)) if not isinstance(kernel, int) else kernel * kernel
    return 2.0 * out_pixels * c_out * (c_in // groups) * volume


def timestep_embedding(rows: Num, d_in: int, d_out: int) -> Num:
    """diffusers ``TimestepEmbedding(d_in, d_out)``: ``linear_1`` and ``linear_2``."""
    return linear(rows, d_in, d_out) + linear(rows, d_out, d_out)


def feed_forward(tokens: Num, dim: int, inner: int, *, gated: bool = False, dim_out: int | None = None) -> Num:
    """An MLP ``dim -> inner -> dim_out``; ``gated`` (GEGLU, SwiGLU, gated-GELU) doubles the input projection."""
    return linear(tokens, dim, inner * (2 if gated else 1)) + linear(tokens, inner, dim_out or dim)


def ceil_half(size: Num) -> Num:
    """Output size of a 3x3 stride-2 convolution with padding 1: ``ceil(size / 2)``."""
    return (size + 1) // 2


# ---------------------------------------------------------------------- text encoders
def clip_text(cfg: Config, seq: Num, batch: Num, *, projection: bool = False) -> Num:
    """``CLIPTextModel`` (all layers, final norm); ``projection`` adds ``text_projection`` of the pooled token."""
    d, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tokens = batch * seq
    per_layer = 4 * linear(tokens, d, d) + attention(batch * seq, seq, 1, d) + feed_forward(tokens, d, ff)
    out = layers * per_layer
    if projection:
        out = out + linear(batch, d, cfg.get("projection_dim", 512))
    return out


def t5_encoder(cfg: Config, seq: Num, batch: Num) -> Num:
    """``T5EncoderModel``: self-attention (no bias) and the (gated) feed-forward per layer."""
    d, inner, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]
    gated = "gated" in cfg.get("feed_forward_proj", "relu") or bool(cfg.get("is_gated_act", False))
    tokens = batch * seq
    per_layer = (
        3 * linear(tokens, d, inner) + linear(tokens, inner, d)
        + attention(batch * seq, seq, cfg["num_heads"], cfg["d_kv"])
        + feed_forward(tokens, d, ff, gated=gated)
    )
    return cfg["num_layers"] * per_layer


def _decoder_lm(cfg: Config, seq: Num, batch: Num, *, head_dim: int) -> Num:
    """A Llama-style decoder stack: GQA attention, gated MLP (the rotary tables are not counted by torch either)."""
    d, ff = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    tokens = batch * seq
    per_layer = (
        linear(tokens, d, heads * head_dim) + 2 * linear(tokens, d, kv * head_dim)
        + linear(tokens, heads * head_dim, d)
        + attention(batch * seq, seq, heads, head_dim)
        + feed_forward(tokens, d, ff, gated=True)
    )
    return cfg["num_hidden_layers"] * per_layer


def qwen2_5_vl(cfg: Config, seq: Num, batch: Num) -> Num:
    """``Qwen2_5_VLForConditionalGeneration`` on text only: the language model and its ``lm_head`` over every token."""
    text = cfg["text_config"]
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    out = _decoder_lm(text, seq, batch, head_dim=head_dim)
    return out + linear(batch * seq, text["hidden_size"], text["vocab_size"])


def gemma2(cfg: Config, seq: Num, batch: Num) -> Num:
    """``Gemma2Model`` (no language-model head)."""
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return _decoder_lm(cfg, seq, batch, head_dim=head_dim)


# ---------------------------------------------------------------------- UNet
def _resnet(px: Num, c_in: int, c_out: int, temb: int | None, batch: Num) -> Num:
    """diffusers ``ResnetBlock2D``: two 3x3 convolutions, time projection, 1x1 shortcut when channels change."""
    out = conv(px, c_in, c_out, 3) + conv(px, c_out, c_out, 3)
    if temb:
        out = out + linear(batch, temb, c_out)
    if c_in != c_out:
        out = out + conv(px, c_in, c_out, 1)
    return out


def _transformer_2d(hw: Num, channels: int, heads: int, depth: int, text: Num, cross_dim: int, batch: Num) -> Num:
    """diffusers ``Transformer2DModel`` of a UNet: proj in/out and ``depth`` BasicTransformerBlocks (GEGLU)."""
    head_dim = channels // heads
    inner = heads * head_dim
    px, ctx = batch * hw, batch * text
    block = (
        4 * linear(px, inner, inner) + attention(px, hw, heads, head_dim)  # self-attention
        + 2 * linear(px, inner, inner) + 2 * linear(ctx, cross_dim, inner)  # cross-attention q, out; k, v
        + attention(px, text, heads, head_dim)
        + feed_forward(px, inner, 4 * inner, gated=True)
    )
    return linear(px, channels, inner) + depth * block + linear(px, inner, channels)


def _as_list(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def unet_2d_condition(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``UNet2DConditionModel`` (SD 1.x/2.x, SDXL, SSD-1B): walks down, mid and up blocks."""
    boc = list(cfg["block_out_channels"])
    n = len(boc)
    down_types, up_types = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    heads = _as_list(cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8), n)
    layers = _as_list(cfg.get("layers_per_block", 2), n)
    cross = _as_list(cfg.get("cross_attention_dim", 1280), n)
    tlayers = _as_list(cfg.get("transformer_layers_per_block", 1), n)
    rev_tlayers = cfg.get("reverse_transformer_layers_per_block") or list(reversed(tlayers))
    temb = cfg.get("time_embedding_dim") or boc[0] * 4

    # Spatial size per level: 3x3 stride-2 downsamplers give ceil(size / 2); upsamplers return to the skip size.
    sizes = [(lh, lw)]
    for _ in range(n - 1):
        sizes.append((ceil_half(sizes[-1][0]), ceil_half(sizes[-1][1])))
    hws = [h * w for h, w in sizes]
    pix = [batch * hw for hw in hws]

    out = conv(pix[0], cfg.get("in_channels", 4), boc[0], cfg.get("conv_in_kernel", 3))
    out = out + timestep_embedding(batch, boc[0], temb)
    if cfg.get("addition_embed_type") == "text_time":
        out = out + timestep_embedding(batch, cfg["projection_class_embeddings_input_dim"], temb)
    elif cfg.get("addition_embed_type") is not None:
        raise NotImplementedError(f"addition_embed_type {cfg['addition_embed_type']!r}")
    if cfg.get("class_embed_type") is not None or cfg.get("encoder_hid_dim_type") is not None:
        raise NotImplementedError("class or encoder_hid embeddings")

    c_out = boc[0]
    for i, kind in enumerate(down_types):
        c_in, c_out = c_out, boc[i]
        attn = kind.startswith("CrossAttn")
        depth = _as_list(tlayers[i], layers[i])
        for j in range(layers[i]):
            out = out + _resnet(pix[i], c_in if j == 0 else c_out, c_out, temb, batch)
            if attn:
                out = out + _transformer_2d(hws[i], c_out, heads[i], depth[j], text, cross[i], batch)
        if i < n - 1:
            out = out + conv(pix[i + 1], c_out, c_out, 3)

    mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    c = boc[-1]
    if mid == "UNetMidBlock2DCrossAttn":
        num_mid = 1
        mid_depth = _as_list(tlayers[-1], num_mid)
        out = out + _resnet(pix[-1], c, c, temb, batch)
        for j in range(num_mid):
            out = out + _transformer_2d(hws[-1], c, heads[-1], mid_depth[j], text, cross[-1], batch)
            out = out + _resnet(pix[-1], c, c, temb, batch)
    elif mid == "UNetMidBlock2D":  # UNet2DConditionModel builds it with num_layers=0, no attention
        out = out + _resnet(pix[-1], c, c, temb, batch)
    elif mid is not None:
        raise NotImplementedError(f"mid_block_type {mid!r}")

    rboc, rheads, rlayers, rcross = boc[::-1], heads[::-1], layers[::-1], cross[::-1]
    c_out = rboc[0]
    for i, kind in enumerate(up_types):
        level = n - 1 - i
        prev, c_out = c_out, rboc[i]
        c_skip_last = rboc[min(i + 1, n - 1)]
        num = rlayers[i] + 1
        attn = kind.startswith("CrossAttn")
        depth = _as_list(rev_tlayers[i], num)
        for j in range(num):
            skip = c_skip_last if j == num - 1 else c_out
            res_in = prev if j == 0 else c_out
            out = out + _resnet(pix[level], res_in + skip, c_out, temb, batch)
            if attn:
                out = out + _transformer_2d(hws[level], c_out, rheads[i], depth[j], text, rcross[i], batch)
        if i < n - 1:
            out = out + conv(pix[level - 1], c_out, c_out, 3)

    return out + conv(pix[0], boc[0], cfg.get("out_channels", 4), cfg.get("conv_out_kernel", 3))


# ---------------------------------------------------------------------- DiTs
def _joint_block(img: Num, txt: Num, dim: int, heads: int, head_dim: int, batch: Num, *,
                 mod_img: int, mod_txt: int, context_out: bool) -> Num:
    """One MMDiT double-stream block: modulation, joint attention, image and text MLPs."""
    seq = img + txt
    out = linear(batch, dim, mod_img) + linear(batch, dim, mod_txt)
    out = out + 3 * linear(batch * img, dim, heads * head_dim) + 3 * linear(batch * txt, dim, heads * head_dim)
    out = out + attention(batch * seq, seq, heads, head_dim)
    out = out + linear(batch * img, heads * head_dim, dim) + feed_forward(batch * img, dim, 4 * dim)
    if context_out:
        out = out + linear(batch * txt, heads * head_dim, dim) + feed_forward(batch * txt, dim, 4 * dim)
    return out


def sd3_transformer(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``SD3Transformer2DModel`` (SD3, SD3.5 incl. MMDiT-X dual attention layers)."""
    p = cfg.get("patch_size", 2)
    heads, hd = cfg.get("num_attention_heads", 18), cfg.get("attention_head_dim", 64)
    dim = heads * hd
    c_in = cfg.get("in_channels", 16)
    img = (lh // p) * (lw // p)
    cap = cfg.get("caption_projection_dim", 1152)
    out = conv(batch * img, c_in, dim, p)  # PatchEmbed
    out = out + timestep_embedding(batch, 256, dim) + timestep_embedding(batch, cfg.get("pooled_projection_dim", 2048), dim)
    out = out + linear(batch * text, cfg.get("joint_attention_dim", 4096), cap)
    dual = set(cfg.get("dual_attention_layers") or ())
    layers = cfg.get("num_layers", 18)
    for i in range(layers):
        last = i == layers - 1
        out = out + _joint_block(img, text, dim, heads, hd, batch, mod_img=9 * dim if i in dual else 6 * dim,
                                 mod_txt=2 * dim if last else 6 * dim, context_out=not last)
        if i in dual:
            out = out + 4 * linear(batch * img, dim, dim) + attention(batch * img, img, heads, hd)
    out = out + linear(batch, dim, 2 * dim)  # norm_out (AdaLayerNormContinuous)
    return out + linear(batch * img, dim, p * p * (cfg.get("out_channels") or c_in))


def flux_transformer(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``FluxTransformer2DModel``: latents packed 2x2; double-stream then single-stream blocks."""
    heads, hd = cfg.get("num_attention_heads", 24), cfg.get("attention_head_dim", 128)
    dim = heads * hd
    c_in = cfg.get("in_channels", 64)
    p = cfg.get("patch_size", 1)
    img = (lh // 2) * (lw // 2)
    out = linear(batch * img, c_in, dim) + linear(batch * text, cfg.get("joint_attention_dim", 4096), dim)
    out = out + timestep_embedding(batch, 256, dim) + timestep_embedding(batch, cfg.get("pooled_projection_dim", 768), dim)
    if cfg.get("guidance_embeds", False):
        out = out + timestep_embedding(batch, 256, dim)
    out = out + cfg.get("num_layers", 19) * _joint_block(
        img, text, dim, heads, hd, batch, mod_img=6 * dim, mod_txt=6 * dim, context_out=True
    )
    seq = img + text
    mlp = 4 * dim
    single = (
        linear(batch, dim, 3 * dim) + linear(batch * seq, dim, mlp) + 3 * linear(batch * seq, dim, dim)
        + attention(batch * seq, seq, heads, hd) + linear(batch * seq, dim + mlp, dim)
    )
    out = out + cfg.get("num_single_layers", 38) * single
    out = out + linear(batch, dim, 2 * dim)
    return out + linear(batch * img, dim, p * p * (cfg.get("out_channels") or c_in))


def qwen_image_transformer(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``QwenImageTransformer2DModel``: latents packed 2x2; 60 double-stream blocks."""
    heads, hd = cfg.get("num_attention_heads", 24), cfg.get("attention_head_dim", 128)
    dim = heads * hd
    p = cfg.get("patch_size", 2)
    img = (lh // 2) * (lw // 2)
    out = linear(batch * img, cfg.get("in_channels", 64), dim) + linear(batch * text, cfg.get("joint_attention_dim", 3584), dim)
    out = out + timestep_embedding(batch, 256, dim)
    out = out + cfg.get("num_layers", 60) * _joint_block(
        img, text, dim, heads, hd, batch, mod_img=6 * dim, mod_txt=6 * dim, context_out=True
    )
    out = out + linear(batch, dim, 2 * dim)
    return out + linear(batch * img, dim, p * p * (cfg.get("out_channels") or 16))


def pixart_transformer(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``PixArtTransformer2DModel`` (PixArt-alpha/sigma): self-attention, cross-attention, GELU MLP per block."""
    heads, hd = cfg.get("num_attention_heads", 16), cfg.get("attention_head_dim", 72)
    dim = heads * hd
    p = cfg.get("patch_size", 2)
    c_in = cfg.get("in_channels", 4)
    img = (lh // p) * (lw // p)
    tokens = batch * img
    cross = cfg.get("cross_attention_dim") or dim
    out = conv(tokens, c_in, dim, p)
    out = out + timestep_embedding(batch, 256, dim) + linear(batch, dim, 6 * dim)  # AdaLayerNormSingle
    additional = cfg.get("use_additional_conditions")
    if additional is None:
        additional = cfg.get("sample_size", 128) == 128
    if additional:
        size_dim = dim // 3
        out = out + timestep_embedding(2 * batch, 256, size_dim) + timestep_embedding(batch, 256, size_dim)
    if cfg.get("caption_channels") is not None:
        out = out + linear(batch * text, cfg["caption_channels"], dim) + linear(batch * text, dim, dim)
    block = (
        4 * linear(tokens, dim, dim) + attention(tokens, img, heads, hd)
        + 2 * linear(tokens, dim, dim) + 2 * linear(batch * text, cross, dim) + attention(tokens, text, heads, hd)
        + feed_forward(tokens, dim, 4 * dim)
    )
    out = out + cfg.get("num_layers", 28) * block
    return out + linear(tokens, dim, p * p * (cfg.get("out_channels") or c_in))


def sana_transformer(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``SanaTransformer2DModel``: ReLU linear self-attention, cross-attention, GLUMBConv (depthwise 3x3) MLP."""
    heads, hd = cfg.get("num_attention_heads", 70), cfg.get("attention_head_dim", 32)
    dim = heads * hd
    p = cfg.get("patch_size", 1)
    c_in = cfg.get("in_channels", 32)
    img = (lh // p) * (lw // p)
    tokens, ctx = batch * img, batch * text
    x_heads, x_hd = cfg.get("num_cross_attention_heads") or 20, cfg.get("cross_attention_head_dim") or 112
    x_inner = x_heads * x_hd
    cross = cfg.get("cross_attention_dim") or dim
    hidden = int(cfg.get("mlp_ratio", 2.5) * dim)
    out = conv(tokens, c_in, dim, p)
    if cfg.get("guidance_embeds", False):
        out = out + 2 * timestep_embedding(batch, 256, dim)
    else:
        out = out + timestep_embedding(batch, 256, dim)
    out = out + linear(batch, dim, 6 * dim)
    out = out + linear(ctx, cfg.get("caption_channels", 2304), dim) + linear(ctx, dim, dim)
    block = (
        4 * linear(tokens, dim, dim) + 4.0 * tokens * heads * (hd + 1) * hd  # linear attention, value padded by 1
        + linear(tokens, dim, x_inner) + 2 * linear(ctx, cross, x_inner) + attention(tokens, text, x_heads, x_hd)
        + linear(tokens, x_inner, dim)
        + conv(tokens, dim, 2 * hidden, 1) + conv(tokens, 2 * hidden, 2 * hidden, 3, groups=2 * hidden)
        + conv(tokens, hidden, dim, 1)
    )
    out = out + cfg.get("num_layers", 20) * block
    return out + linear(tokens, dim, p * p * (cfg.get("out_channels") or c_in))


# ---------------------------------------------------------------------- VAE decoders
def autoencoder_kl_decode(cfg: Config, lh: Num, lw: Num, batch: Num) -> Num:
    """``AutoencoderKL.decode``: post-quant 1x1 convolution, decoder (mid-block attention, upsamplers)."""
    boc = list(cfg.get("block_out_channels", [64]))
    z = cfg.get("latent_channels", 4)
    per_block = cfg.get("layers_per_block", 1) + 1
    px = batch * lh * lw
    out = conv(px, z, z, 1) if cfg.get("use_post_quant_conv", True) else 0.0
    top = boc[-1]
    out = out + conv(px, z, top, 3)
    # Mid block: resnet, single-head attention over all latent pixels, resnet.
    out = out + 2 * _resnet(px, top, top, None, batch)
    if cfg.get("mid_block_add_attention", True):
        out = out + 4 * linear(px, top, top) + attention(px, lh * lw, 1, top)
    rboc = boc[::-1]
    c_out = rboc[0]
    scale = 1
    for i in range(len(cfg.get("up_block_types", boc))):
        prev, c_out = c_out, rboc[i]
        for j in range(per_block):
            out = out + _resnet(px * scale * scale, prev if j == 0 else c_out, c_out, None, batch)
        if i < len(boc) - 1:
            scale *= 2
            out = out + conv(px * scale * scale, c_out, c_out, 3)
    return out + conv(px * scale * scale, boc[0], cfg.get("out_channels", 3), 3)


def _qwen_res(px: Num, c_in: int, c_out: int) -> Num:
    """``QwenImageResidualBlock`` on one frame: causal 3x3x3 convs see 3 (zero-padded) frames."""
    out = conv(px, c_in, c_out, (3, 3, 3)) + conv(px, c_out, c_out, (3, 3, 3))
    if c_in != c_out:
        out = out + conv(px, c_in, c_out, 1)
    return out


def autoencoder_kl_qwen_image_decode(cfg: Config, lh: Num, lw: Num, batch: Num) -> Num:
    """``AutoencoderKLQwenImage.decode`` of one frame (the first chunk skips the temporal upsample conv)."""
    base, z = cfg.get("base_dim", 96), cfg.get("z_dim", 16)
    mult = list(cfg.get("dim_mult", [1, 2, 4, 4]))
    n_res = cfg.get("num_res_blocks", 2)
    dims = [base * u for u in [mult[-1], *mult[::-1]]]
    px = batch * lh * lw
    out = conv(px, z, z, 1)  # post_quant_conv (1x1x1)
    out = out + conv(px, z, dims[0], (3, 3, 3))
    out = out + 2 * _qwen_res(px, dims[0], dims[0])
    out = out + 4 * linear(px, dims[0], dims[0]) + attention(px, lh * lw, 1, dims[0])  # to_qkv, proj, attention
    scale = 1
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        if i > 0:
            d_in = d_in // 2
        cur = d_in
        for _ in range(n_res + 1):
            out = out + _qwen_res(px * scale * scale, cur, d_out)
            cur = d_out
        if i != len(mult) - 1:
            scale *= 2
            out = out + conv(px * scale * scale, d_out, d_out // 2, 3)
    return out + conv(px * scale * scale, dims[-1], 3, (3, 3, 3))


def _dc_linear_attention(hw: Num, batch: Num, heads: int, head_dim: int) -> Num:
    """Sana multiscale ReLU attention: linear (value padded by 1) above ``head_dim`` pixels, quadratic at or below."""
    linear_path = 4.0 * batch * heads * (head_dim + 1) * head_dim * hw
    quadratic = 4.0 * batch * heads * head_dim * hw * hw
    return np.where(hw > head_dim, linear_path, quadratic) if isinstance(hw, np.ndarray) else (
        linear_path if hw > head_dim else quadratic
    )


def autoencoder_dc_decode(cfg: Config, lh: Num, lw: Num, batch: Num) -> Num:
    """``AutoencoderDC.decode`` (DC-AE): ResBlocks, EfficientViT blocks with multiscale linear attention."""
    boc = list(cfg.get("decoder_block_out_channels", [128, 256, 512, 512, 1024, 1024]))
    n = len(boc)
    layers = _as_list(cfg.get("decoder_layers_per_block", 2), n)
    kinds = _as_list(cfg.get("decoder_block_types", "ResBlock"), n)
    scales = cfg.get("decoder_qkv_multiscales", [[], [], [], [5], [5], [5]])
    hd = cfg.get("attention_head_dim", 32)
    out = conv(batch * lh * lw, cfg.get("latent_channels", 32), boc[-1], 3)
    for i in reversed(range(n)):
        hw = lh * lw * 4 ** (n - 1 - i)
        px = batch * hw
        c = boc[i]
        if i < n - 1 and layers[i] > 0:
            out = out + conv(px, boc[i + 1], c, 3)  # interpolate x2 then conv, or conv then pixel shuffle: same FLOPs
        for _ in range(layers[i]):
            if kinds[i] == "ResBlock":
                out = out + conv(px, c, c, 3) + conv(px, c, c, 3)
            elif kinds[i] == "EfficientViTBlock":
                heads = c // hd
                inner = heads * hd
                ks = list(scales[i])
                out = out + 3 * linear(px, c, inner)
                for k in ks:
                    out = out + conv(px, 3 * inner, 3 * inner, k, groups=3 * inner)
                    out = out + conv(px, 3 * inner, 3 * inner, 1, groups=3 * heads)
                out = out + _dc_linear_attention(hw, batch, heads * (1 + len(ks)), hd)
                out = out + linear(px, inner * (1 + len(ks)), c)
                out = out + conv(px, c, 8 * c, 1) + conv(px, 8 * c, 8 * c, 3, groups=8 * c) + conv(px, 4 * c, c, 1)
            else:
                raise NotImplementedError(f"DC-AE block {kinds[i]!r}")
    if layers[0] > 0:
        return out + conv(batch * lh * lw * 4 ** (n - 1), boc[0], cfg.get("in_channels", 3), 3)
    return out + conv(batch * lh * lw * 4 ** (n - 1), boc[1], cfg.get("in_channels", 3), 3)


# ---------------------------------------------------------------------- dispatch
TextFn = Callable[[Config, Num, Num], Num]
DenoiseFn = Callable[[Config, Num, Num, Num, Num], Num]
DecodeFn = Callable[[Config, Num, Num, Num], Num]

TEXT_ENCODERS: dict[str, TextFn] = {
    "transformers.CLIPTextModel": clip_text,
    "transformers.CLIPTextModelWithProjection": lambda c, s, b: clip_text(c, s, b, projection=True),
    "transformers.T5EncoderModel": t5_encoder,
    "transformers.Qwen2_5_VLForConditionalGeneration": qwen2_5_vl,
    "transformers.Gemma2Model": gemma2,
}
DENOISERS: dict[str, DenoiseFn] = {
    "diffusers.UNet2DConditionModel": unet_2d_condition,
    "diffusers.SD3Transformer2DModel": sd3_transformer,
    "diffusers.FluxTransformer2DModel": flux_transformer,
    "diffusers.QwenImageTransformer2DModel": qwen_image_transformer,
    "diffusers.PixArtTransformer2DModel": pixart_transformer,
    "diffusers.SanaTransformer2DModel": sana_transformer,
}
DECODERS: dict[str, DecodeFn] = {
    "diffusers.AutoencoderKL": autoencoder_kl_decode,
    "diffusers.AutoencoderKLQwenImage": autoencoder_kl_qwen_image_decode,
    "diffusers.AutoencoderDC": autoencoder_dc_decode,
}
