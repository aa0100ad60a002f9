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

from collections.abc import Mapping, Sequence
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


def resnet(px: Num, c_in: int, c_out: int, temb: int | None, batch: Num) -> Num:
    """diffusers ``ResnetBlock2D``: two 3x3 convolutions, time projection, 1x1 shortcut when channels change."""
    out = conv(px, c_in, c_out, 3) + conv(px, c_out, c_out, 3)
    if temb:
        out = out + linear(batch, temb, c_out)
    if c_in != c_out:
        out = out + conv(px, c_in, c_out, 1)
    return out


def as_list(value: Any, n: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n
