"""Bytes one denoiser call moves, in closed form per family: the weights once, then per sample and per pixel.

A call reads its weights once, whatever the batch, and moves activations that grow with the
samples it runs and, per sample, with the latent pixels (attention counted as one fused kernel,
so linear in the tokens; the text tokens are fixed per family)::

    bytes(call) = weights + samples x (per_sample + per_latent_pixel x latent pixels)

at two bytes per floating-point element (fp16/bf16: the bytes say how the call's shape moves
memory; what a precision costs beside is the law's precision offset). The three coefficients of
each family are fitted to traced calls (:func:`mlflow_energy.flops.traffic.bytes_coefficients`,
two sizes x three call batches) and shipped in ``data/denoiser_bytes.csv`` with their worst
relative error on those traces, so predicting needs no torch.

Arithmetic intensity, FLOP per byte, is what the saturating law reads
(:func:`mlflow_energy.fit.saturation.call_intensity`): a call of low intensity is bound by memory
and costs more energy per FLOP than its FLOPs alone say.

Example:
    >>> import numpy as np
    >>> from mlflow_energy.flops.memory import denoiser_call_bytes
    >>> b = denoiser_call_bytes("sdxl", latent_pixels=np.array([64 * 64, 128 * 128]), samples=np.array([2, 2]))
    >>> [round(float(v) / 1e9, 1) for v in b]  # GB: 512 and 1024 px, one CFG call
    [14.9, 43.6]
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

__all__ = ["TABLE", "denoiser_call_bytes", "known_families"]

TABLE = Path(__file__).parents[1] / "data" / "denoiser_bytes.csv"
COLUMNS = ("model", "weight_bytes", "bytes_per_sample", "bytes_per_latent_pixel", "max_rel_error")


@functools.cache
def _coefficients() -> dict[str, tuple[float, float, float]]:
    import csv

    if not TABLE.exists():
        return {}
    with TABLE.open(newline="") as fh:
        return {r["model"]: (float(r["weight_bytes"]), float(r["bytes_per_sample"]),
                             float(r["bytes_per_latent_pixel"])) for r in csv.DictReader(fh)}


def known_families() -> frozenset[str]:
    """Families whose bytes per call the shipped table has."""
    return frozenset(_coefficients())


def denoiser_call_bytes(model: str, *, latent_pixels: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Bytes read and written by one denoiser call of ``model`` on ``samples`` latents of
    ``latent_pixels`` each (latent height x width); NaN for a family the table does not have."""
    pixels, n = np.asarray(latent_pixels, dtype=float), np.asarray(samples, dtype=float)
    coef = _coefficients().get(model)
    if coef is None:
        return np.full(np.broadcast(pixels, n).shape, np.nan)
    weights, per_sample, per_pixel = coef
    return np.maximum(weights + n * (per_sample + per_pixel * pixels), 1.0)
