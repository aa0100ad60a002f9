"""Closed-form FLOPs of one denoiser call: the UNet and the diffusion transformers (MMDiT, FLUX, Qwen-Image, PixArt, SANA)."""

from __future__ import annotations

from collections.abc import Callable

from mlflow_energy.flops.blocks import (
    Config,
    Num,
    as_list,
    attention,
    ceil_half,
    conv,
    feed_forward,
    linear,
    resnet,
    timestep_embedding,
)

DenoiseFn = Callable[[Config, Num, Num, Num, Num], Num]


# ---------------------------------------------------------------------- UNet
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


def unet_2d_condition(cfg: Config, lh: Num, lw: Num, text: Num, batch: Num) -> Num:
    """``UNet2DConditionModel`` (SD 1.x/2.x, SDXL, SSD-1B): walks down, mid and up blocks."""
    boc = list(cfg["block_out_channels"])
    n = len(boc)
    down_types, up_types = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    heads = as_list(cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8), n)
    layers = as_list(cfg.get("layers_per_block", 2), n)
    cross = as_list(cfg.get("cross_attention_dim", 1280), n)
    tlayers = as_list(cfg.get("transformer_layers_per_block", 1), n)
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
        depth = as_list(tlayers[i], layers[i])
        for j in range(layers[i]):
            out = out + resnet(pix[i], c_in if j == 0 else c_out, c_out, temb, batch)
            if attn:
                out = out + _transformer_2d(hws[i], c_out, heads[i], depth[j], text, cross[i], batch)
        if i < n - 1:
            out = out + conv(pix[i + 1], c_out, c_out, 3)

    mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    c = boc[-1]
    if mid == "UNetMidBlock2DCrossAttn":
        num_mid = 1
        mid_depth = as_list(tlayers[-1], num_mid)
        out = out + resnet(pix[-1], c, c, temb, batch)
        for j in range(num_mid):
            out = out + _transformer_2d(hws[-1], c, heads[-1], mid_depth[j], text, cross[-1], batch)
            out = out + resnet(pix[-1], c, c, temb, batch)
    elif mid == "UNetMidBlock2D":  # UNet2DConditionModel builds it with num_layers=0, no attention
        out = out + resnet(pix[-1], c, c, temb, batch)
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
        depth = as_list(rev_tlayers[i], num)
        for j in range(num):
            skip = c_skip_last if j == num - 1 else c_out
            res_in = prev if j == 0 else c_out
            out = out + resnet(pix[level], res_in + skip, c_out, temb, batch)
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


DENOISERS: dict[str, DenoiseFn] = {
    "diffusers.UNet2DConditionModel": unet_2d_condition,
    "diffusers.SD3Transformer2DModel": sd3_transformer,
    "diffusers.FluxTransformer2DModel": flux_transformer,
    "diffusers.QwenImageTransformer2DModel": qwen_image_transformer,
    "diffusers.PixArtTransformer2DModel": pixart_transformer,
    "diffusers.SanaTransformer2DModel": sana_transformer,
}
