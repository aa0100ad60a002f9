"""Closed-form FLOPs of one VAE decode (AutoencoderKL, the Qwen-Image 3D VAE, the deep-compression AutoencoderDC)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlflow_energy.flops.blocks import Config, Num, as_list, attention, conv, linear, resnet

DecodeFn = Callable[[Config, Num, Num, Num], Num]


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
    out = out + 2 * resnet(px, top, top, None, batch)
    if cfg.get("mid_block_add_attention", True):
        out = out + 4 * linear(px, top, top) + attention(px, lh * lw, 1, top)
    rboc = boc[::-1]
    c_out = rboc[0]
    scale = 1
    for i in range(len(cfg.get("up_block_types", boc))):
        prev, c_out = c_out, rboc[i]
        for j in range(per_block):
            out = out + resnet(px * scale * scale, prev if j == 0 else c_out, c_out, None, batch)
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
    layers = as_list(cfg.get("decoder_layers_per_block", 2), n)
    kinds = as_list(cfg.get("decoder_block_types", "ResBlock"), n)
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


DECODERS: dict[str, DecodeFn] = {
    "diffusers.AutoencoderKL": autoencoder_kl_decode,
    "diffusers.AutoencoderKLQwenImage": autoencoder_kl_qwen_image_decode,
    "diffusers.AutoencoderDC": autoencoder_dc_decode,
}
