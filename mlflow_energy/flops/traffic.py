"""What one call costs beside its FLOPs, counted from its trace: ops launched and bytes moved.

The closed forms count FLOPs only. Part of a call's energy does not grow with its FLOPs: every op
the GPU runs is one kernel launch (a fixed cost per launch), and memory-bound ops (norms,
activations, the weights read once per call) cost by the bytes they move. This module traces one
forward call on the meta device (no memory, no compute) with a dispatch mode that sees every aten
op and counts, beside the FLOPs of ``FlopCounterMode``:

- ``ops``: aten ops that would launch a kernel. Views and metadata ops (``view``, ``t``,
  ``expand``, ``empty``, ``detach`` ...) launch none and are not counted. Each counted op is one
  kernel without fusion: a proxy for kernel launches (a fused or CUDA-graph runtime launches fewer).
- ``bytes``: the sum over counted ops of the bytes of their tensor inputs and outputs: the memory
  traffic without fusion and without cache reuse (an upper bound on what DRAM sees).

``scaled_dot_product_attention`` counts as one op reading q, k, v and writing its output, as the
fused attention kernel a GPU runs (on meta it decomposes into matmuls over materialised scores).

:func:`denoiser_call_counts` counts one denoiser call of a family (both CFG samples in the batch
when the pipeline runs CFG, as in :func:`mlflow_energy.fit.features.call_terms`), floating-point
tensors at the run's precision. The packaged table ``data/denoiser_call_counts.csv`` holds the
counts at the public data's sizes (:func:`call_counts_frame` reads it, counting what it lacks).

Example:
    >>> import torch
    >>> from mlflow_energy.flops.traffic import count_call
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU()).to("meta")
    >>> c = count_call(net, torch.zeros(2, 4, device="meta"))
    >>> c.flops, c.ops, c.bytes  # addmm: 2*2*4*3 FLOP; addmm (3+8+12 in, 6 out) + gelu (6 in, 6 out): 41 floats
    (48.0, 2, 164.0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

__all__ = ["CallCounts", "bytes_coefficients", "call_counts_frame", "count_call", "denoiser_call_counts",
           "write_bytes_table"]

TABLE = Path(__file__).parents[1] / "data" / "denoiser_call_counts.csv"
_aten = torch.ops.aten
# Ops that allocate or relabel memory without running a kernel (views are found by their schema).
_NO_KERNEL = {
    _aten.empty.memory_format, _aten.empty_strided.default, _aten.empty_like.default, _aten._unsafe_view.default,
    _aten.lift_fresh.default, _aten.detach.default, _aten.alias.default, _aten.resize_.default,
}


@dataclass(frozen=True)
class CallCounts:
    """FLOPs, kernel-launching ops and bytes read + written by one call."""

    flops: float
    ops: int
    bytes: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte moved (without fusion)."""
        return self.flops / self.bytes if self.bytes > 0 else float("nan")


def _launches(func: Any) -> bool:
    return not (func in _NO_KERNEL or getattr(func, "is_view", False))


class _TrafficMode(TorchDispatchMode):
    """Counts kernel-launching aten ops and the bytes of their tensor inputs and outputs."""

    def __init__(self, float_bytes: int | None = None) -> None:
        super().__init__()
        self.ops = 0
        self.bytes = 0
        self.float_bytes = float_bytes
        self.fused = 0  # > 0 inside a call counted as one fused kernel

    def _size(self, t: torch.Tensor) -> int:
        per = self.float_bytes if (self.float_bytes and t.is_floating_point()) else t.element_size()
        return t.numel() * per

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self.fused and _launches(func):
            self.ops += 1
            leaves = tree_leaves((args, kwargs or {}, out))
            self.bytes += sum(self._size(t) for t in leaves if isinstance(t, torch.Tensor))
        return out


class _FusedAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` as one kernel reading q, k, v (and a mask) and writing the output.

    On meta (and on CPU) it decomposes into matmuls and a softmax over the materialised scores; a GPU
    runs it as one fused (flash or memory-efficient) kernel that never writes the scores.
    """

    def __init__(self, traffic: _TrafficMode) -> None:
        super().__init__()
        self.traffic = traffic

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is not torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        t = self.traffic
        t.fused += 1
        try:
            out = func(*args, **kwargs)
        finally:
            t.fused -= 1
        t.ops += 1
        t.bytes += sum(t._size(x) for x in tree_leaves((args, kwargs, out)) if isinstance(x, torch.Tensor))
        return out


def count_call(fn: Callable[..., Any], *args: Any, float_bytes: int | None = None, **kwargs: Any) -> CallCounts:
    """Trace ``fn(*args, **kwargs)`` once (no grad) and count its FLOPs, ops and bytes.

    ``float_bytes``: count floating-point tensors at this many bytes per element (2 for fp16/bf16)
    instead of their own dtype's, so a trace in fp32 on meta speaks for a half-precision run.
    """
    traffic = _TrafficMode(float_bytes)
    with FlopCounterMode(display=False) as flop_mode, torch.no_grad(), traffic, _FusedAttention(traffic):
        fn(*args, **kwargs)
    return CallCounts(float(flop_mode.get_total_flops()), traffic.ops, float(traffic.bytes))


_PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@functools.cache
def _denoiser(model: str) -> tuple[Any, str, dict[str, Any], Any]:
    from mlflow_energy.families._build import build_on_meta
    from mlflow_energy.flops.count import _plan

    fam = _plan(model).family
    name = next(c for c in fam.components if c in ("unet", "transformer"))
    spec = fam.components[name]
    return fam, spec["class"], dict(spec["config"]), build_on_meta(spec["class"], dict(spec["config"]))


def denoiser_call_counts(model: str, *, height: int, width: int, batch: int = 1, precision: str = "fp16") -> CallCounts:
    """Counts of one denoiser call of family ``model`` on ``batch`` latents (the GPU's batch: with
    CFG, twice the images), floating-point tensors at ``precision`` (fp32, fp16 or bf16).

    The first call per family builds its denoiser on meta (seconds for the largest).
    """
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.flops.count import _denoiser_text_tokens
    from mlflow_energy.flops.reference import _denoiser_call

    if precision not in _PRECISION_BYTES:
        raise ConfigError("precision", precision, "one of " + ", ".join(_PRECISION_BYTES))
    fam, class_path, cfg, net = _denoiser(model)
    lh, lw = height // fam.latent_downsample, width // fam.latent_downsample
    return count_call(_denoiser_call, net, class_path.rpartition(".")[2], cfg, lh, lw, _denoiser_text_tokens(fam),
                      batch, float_bytes=_PRECISION_BYTES[precision])


_KEY = ["model", "height", "width", "call_batch", "precision"]


def call_counts_frame(keys: pd.DataFrame, *, table: Path | None = TABLE, save: bool = False) -> pd.DataFrame:
    """``keys`` (columns model, height, width, call_batch, precision) joined with ``flops``, ``ops`` and
    ``bytes`` of one denoiser call: read from ``table`` where it has them, traced on meta otherwise
    (``save``: then written back to ``table``, sorted)."""
    import pandas as pd

    have = pd.read_csv(table) if table is not None and table.exists() else pd.DataFrame(columns=[*_KEY, "flops",
                                                                                                   "ops", "bytes"])
    want = keys[_KEY].drop_duplicates()
    known = set(map(tuple, have[_KEY].astype(str).to_numpy()))
    new = []
    for row in want.itertuples(index=False):
        if tuple(map(str, row)) in known:
            continue
        c = denoiser_call_counts(row.model, height=int(row.height), width=int(row.width), batch=int(row.call_batch),
                                 precision=row.precision)
        new.append({**row._asdict(), "flops": c.flops, "ops": c.ops, "bytes": c.bytes})
    if new:
        have = pd.concat([have, pd.DataFrame(new)], ignore_index=True)
    have = have.astype({"height": int, "width": int, "call_batch": int, "ops": int, "flops": float, "bytes": float})
    if new and save and table is not None:
        have.sort_values(_KEY).to_csv(table, index=False)
    found = keys[_KEY].astype(str).merge(have.astype(dict.fromkeys(_KEY, str)), on=_KEY, how="left")
    return keys.assign(**{c: found[c].to_numpy() for c in ("flops", "ops", "bytes")})


# sizes as fractions of the family's default resolution, and call batches, that the closed form is fitted to
_FIT_SIZES = (1.0, 0.5)
_FIT_BATCHES = (1, 2, 4)


def bytes_coefficients(model: str) -> tuple[float, float, float, float]:
    """``(weights, per sample, per latent pixel, worst relative error)`` of the closed form of
    :mod:`mlflow_energy.flops.memory`, fitted to traced calls of ``model`` at two sizes and three
    call batches (least squares on relative error, coefficients kept >= 0)."""
    import numpy as np
    from scipy.optimize import nnls

    from mlflow_energy.families import get_family

    fam = get_family(model)
    rows, target = [], []
    for frac in _FIT_SIZES:
        side = max(fam.pixel_multiple, int(fam.default_resolution * frac) // fam.pixel_multiple * fam.pixel_multiple)
        pixels = (side // fam.latent_downsample) ** 2
        for batch in _FIT_BATCHES:
            rows.append([1.0, batch, batch * pixels])
            target.append(denoiser_call_counts(model, height=side, width=side, batch=batch, precision="fp16").bytes)
    a, b = np.array(rows), np.array(target)
    scale = np.array([1.0, 1.0, 1.0]) / np.abs(a).max(axis=0)
    coef, _ = nnls(a * scale / b[:, None], np.ones(len(b)))
    coef = coef * scale
    return float(coef[0]), float(coef[1]), float(coef[2]), float(np.max(np.abs(a @ coef / b - 1)))


def write_bytes_table(models: list[str] | None = None, path: Path | None = None) -> Path:
    """Fit :func:`bytes_coefficients` for ``models`` (default: every registered family) and write
    the table :mod:`mlflow_energy.flops.memory` reads (a minute or two on a CPU)."""
    import csv

    from mlflow_energy.families import family_names
    from mlflow_energy.flops.memory import COLUMNS, TABLE

    path = path or TABLE
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(COLUMNS)
        for model in sorted(models or family_names()):
            out.writerow([model, *(f"{v:.6g}" for v in bytes_coefficients(model))])
    return path
