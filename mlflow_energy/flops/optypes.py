"""FLOPs of one call split by operation type: attention, convolution and GEMM (every other matmul).

The closed forms count three primitives (:mod:`mlflow_energy.flops.blocks`): ``attention``
(``QK^T`` and ``PV``), ``conv`` and ``linear``. This module evaluates each closed form again with
one primitive counting nothing; the difference from the full count is that primitive's share.
The closed forms are rebound to private copies of their modules' globals, so nothing is patched
and concurrent callers of the ordinary counter are unaffected. Terms written inline (SANA's
linear attention, the DC-AE's ReLU attention) are matmuls outside the ``attention`` primitive
and count as GEMM.

Example:
    >>> from mlflow_energy.flops.optypes import call_op_flops
    >>> ops = call_op_flops("sd2", height=768, width=768)
    >>> sorted(ops)
    ['attention', 'conv', 'gemm', 'total']
    >>> abs(ops["attention"] + ops["conv"] + ops["gemm"] - ops["total"]) < 1e-6 * ops["total"]
    True
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from mlflow_energy.flops import blocks, decoders, denoisers
from mlflow_energy.flops.count import _plan

OP_TYPES: tuple[str, ...] = ("attention", "conv", "gemm")
_PRIMITIVE = {"attention": "attention", "conv": "conv"}
_MODULES = (blocks, denoisers, decoders)


def _nothing(*args: Any, **kwargs: Any) -> float:
    return 0.0


@functools.cache
def _without(primitive: str) -> dict[str, dict[str, Any]]:
    """Copies of the closed-form modules' globals in which ``primitive`` counts nothing."""
    spaces = {m.__name__: dict(vars(m)) for m in _MODULES}
    for space in spaces.values():
        for name, obj in list(space.items()):
            if isinstance(obj, types.FunctionType) and obj.__module__ in spaces:
                copy = types.FunctionType(obj.__code__, spaces[obj.__module__], obj.__name__, obj.__defaults__,
                                          obj.__closure__)
                copy.__kwdefaults__ = obj.__kwdefaults__
                space[name] = copy
        space[primitive] = _nothing
    return spaces


def _rebound(fn: Any, primitive: str) -> Any:
    return _without(primitive)[fn.__module__][fn.__name__]


def call_op_flops(model: str, *, height: Any, width: Any, batch_size: Any = 1,
                  component: str = "denoiser") -> dict[str, Any]:
    """FLOPs of one denoiser call (``component="denoiser"``) or one VAE decode (``"decode"``), by op type.

    ``height``, ``width`` and ``batch_size`` may be numbers or numpy arrays (one value per
    configuration). Returns ``{"attention", "conv", "gemm", "total"}``; ``total`` equals the
    ordinary closed form (one pass: CFG's second pass is another call of the same split).

    Raises:
        ConfigError: for an unknown family.
    """
    plan = _plan(model)
    fam = plan.family
    lh = np.asarray(height) // fam.latent_downsample
    lw = np.asarray(width) // fam.latent_downsample
    batch = np.asarray(batch_size, dtype=float)
    if component == "denoiser":
        fn, cfg = plan.denoise_fn, plan.denoise_cfg

        def run(f: Any) -> Any:
            return f(cfg, lh, lw, plan.denoise_text, batch)
    elif component == "decode":
        fn, cfg = plan.decode_fn, plan.decode_cfg

        def run(f: Any) -> Any:
            return f(cfg, lh, lw, batch)
    else:
        raise ValueError(f"component must be 'denoiser' or 'decode', not {component!r}")
    total = np.asarray(run(fn), dtype=float)
    out: dict[str, Any] = {"total": total}
    for op, primitive in _PRIMITIVE.items():
        out[op] = total - np.asarray(run(_rebound(fn, primitive)), dtype=float)
    out["gemm"] = total - out["attention"] - out["conv"]
    if np.ndim(total) == 0:
        return {k: float(v) for k, v in out.items()}
    return out


def op_fractions(frame: Mapping[str, Any], component: str = "denoiser") -> dict[str, np.ndarray]:
    """Per row of ``frame`` (columns ``model``, ``height``, ``width``): each op type's share of one call.

    One evaluation per distinct (model, height, width). The shares do not depend on the batch
    size (every term is linear in it).

    Example:
        >>> import pandas as pd
        >>> f = op_fractions(pd.DataFrame({"model": ["sd2", "flux.1-dev"], "height": [512, 1024],
        ...                                "width": [512, 1024]}))
        >>> [round(float(v), 2) for v in f["attention"]]
        [0.16, 0.2]
    """
    import pandas as pd

    df = pd.DataFrame({k: np.asarray(frame[k]) for k in ("model", "height", "width")})
    out = {op: np.zeros(len(df)) for op in OP_TYPES}
    for (model, h, w), idx in df.groupby(["model", "height", "width"]).indices.items():
        ops = call_op_flops(str(model), height=int(h), width=int(w), component=component)
        for op in OP_TYPES:
            out[op][idx] = ops[op] / ops["total"] if ops["total"] > 0 else 0.0
    return out
