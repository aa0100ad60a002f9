"""The saturating law: energy per FLOP falls with the call's size until the GPU is full, then stays at a floor.

On one call of ``f`` FLOP on a GPU of peak ``P`` FLOP/s (spec table)::

    log e_call = level + log f + softplus(c · (log(τ · P) - log f)) + w_attn · s_attn + w_conv · s_conv
                 + w_int · log(I / I_ref)

``τ · P`` is the call size at which the GPU saturates (``τ`` in seconds: a call shorter than ``τ`` at
peak leaves the GPU partly idle); far above it energy is proportional to FLOPs (the floor, ``level``
J/FLOP), far below it energy per call falls only as ``f^(1-c)``. ``s_attn`` and ``s_conv`` are the
attention and convolution shares of the call's FLOPs (:func:`mlflow_energy.flops.optypes.op_fractions`),
so the three op types need not cost the same; they apply to the denoiser call (phases ``denoise`` and
``total``) and the VAE decode, not to text encoders. ``I`` is the denoiser call's arithmetic intensity,
FLOPs over the bytes it moves (:mod:`mlflow_energy.flops.memory`, closed form per family): a call that
moves many bytes per FLOP (small images, batch 1: the weights read once for few samples) costs more per
FLOP. ``w_int`` runs from 0 (bound by compute) to -1 (bound by memory: energy follows the bytes).

Fitting, on the rows of one phase:

1. For each intensity weight on its grid, ``τ`` and ``c`` on a grid from variation *within* each
   (family, GPU) (the level profiled out), then the op-type weights from variation across families on
   each GPU; the intensity weight kept is the one whose residuals vary least within each GPU, across
   families too (the term must explain both how a family scales and how families differ).
2. Levels: per (family, GPU), per GPU, and for a GPU never seen a level linear in log(TDP / peak)
   over the seen GPUs.
3. Per setup (an energy source on one GPU: one harness, runtime and energy scope) its own ``τ`` and
   levels: a harness that keeps the GPU busy saturates at smaller calls. A row of a known setup
   uses them; any other row the shared ones (an unseen setup).

:func:`mlflow_energy.fit.result.fit_energy_model` fits it next to the plain power law and keeps,
per phase, the one that predicts held-out families, GPUs, sources and setups better (grouped CV).

Example:
    >>> import numpy as np
    >>> from mlflow_energy.fit.saturation import fit_saturating
    >>> f = np.logspace(11, 15, 9); peak = np.log(1e15)
    >>> y = np.log(2e-12) + np.log(f) + np.logaddexp(0, np.log(1e-3) + peak - np.log(f))  # c = 1
    >>> law = fit_saturating(np.log(f), y, models=np.array(["m"] * 9), hardware=np.array(["H100"] * 9),
    ...                      log_peak=np.full(9, peak))
    >>> round(float(np.exp(law.log_tau)), 4), law.c
    (0.001, 1.0)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy.fit.law import MIN_LOG_SPREAD, MIN_POINTS

LOG_TAU_GRID = np.linspace(math.log(1e-7), 0.0, 57)  # 0.1 µs .. 1 s, 4 points per decade
C_GRID = (0.5, 0.75, 1.0, 1.5, 2.0)
INTENSITY_GRID = (0.0, -0.25, -0.5, -0.75, -1.0)  # 0: bound by compute .. -1: by memory
INTENSITY_REF = 250.0  # FLOP/byte: the intensity term is zero here (a mid-size call of the public data)
OP_WEIGHT_BOUND = 1.0  # |weight| in log J/FLOP per unit share: beyond it an op type is not what the data say


def softplus(t: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, t)


def _demean(v: np.ndarray, codes: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``v`` minus its weighted mean within each group of ``codes``."""
    sw = np.bincount(codes, weights=w)
    return v - (np.bincount(codes, weights=w * v) / np.where(sw > 0, sw, 1.0))[codes]


def _means(v: np.ndarray, keys: np.ndarray, w: np.ndarray) -> dict[str, float]:
    codes, names = pd.factorize(keys)
    sw = np.bincount(codes, weights=w)
    return {str(k): float(m) for k, m in zip(names, np.bincount(codes, weights=w * v) / sw, strict=True)}


def _identifiable(x: np.ndarray, codes: np.ndarray) -> bool:
    """At least one group has enough points with spread in log FLOPs to show a curvature."""
    return any((codes == k).sum() >= MIN_POINTS and np.ptp(x[codes == k]) >= MIN_LOG_SPREAD for k in np.unique(codes))


def _grid(r: np.ndarray, x: np.ndarray, log_peak: np.ndarray, codes: np.ndarray, w: np.ndarray,
          cs: tuple[float, ...]) -> tuple[float, float]:
    """``(log τ, c)`` minimising the weighted within-group squared error of ``r = log e - log f``."""
    rd = _demean(r, codes, w)
    best = (math.inf, 0.0, 1.0)
    for lt in LOG_TAU_GRID:
        for c in cs:
            e = rd - _demean(softplus(c * (log_peak + lt - x)), codes, w)
            sse = float((w * e * e).sum())
            if sse < best[0] - 1e-12:
                best = (sse, float(lt), float(c))
    return best[1], best[2]


@dataclass
class SaturatingLaw:
    """One phase's saturating law (see the module docstring); levels in natural-log J/FLOP."""

    log_tau: float
    c: float
    w_attention: float = 0.0
    w_conv: float = 0.0
    w_intensity: float = 0.0  # log J/FLOP per unit log arithmetic intensity (FLOP/byte) around INTENSITY_REF
    group: dict[str, float] = field(default_factory=dict)  # "family|hardware"
    hardware: dict[str, float] = field(default_factory=dict)
    gpu_intercept: float = 0.0  # level of an unseen GPU: intercept + slope x log(TDP / peak)
    gpu_slope: float = 0.0
    setup_log_tau: dict[str, float] = field(default_factory=dict)  # "source|hardware"
    setup_group: dict[str, float] = field(default_factory=dict)  # "source|family|hardware"
    setup_hardware: dict[str, float] = field(default_factory=dict)  # "source|hardware"
    n: int = 0
    mape: float = float("nan")  # in sample, shared levels

    def log_predict(self, x: np.ndarray, *, models: np.ndarray, hardware: np.ndarray, log_peak: np.ndarray,
                    attention: np.ndarray | None = None, conv: np.ndarray | None = None,
                    log_jpf: np.ndarray | None = None, sources: np.ndarray | None = None,
                    intensity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(log energy per call, level of each row)`` for calls of ``exp(x)`` FLOP.

        ``sources`` (the energy source of each row, "" for none) selects a known setup's own
        ``τ`` and levels; any other row gets the shared ones.
        """
        n = len(x)
        src = np.full(n, "", dtype=object) if sources is None else np.asarray(sources, dtype=object)
        jpf = np.full(n, np.nan) if log_jpf is None else np.asarray(log_jpf, dtype=float)
        # one lookup per distinct (source, family, GPU); a GPU has one J/FLOP
        from mlflow_energy.fit.frame import distinct_rows

        models, hardware = np.asarray(models, dtype=object), np.asarray(hardware, dtype=object)
        codes, first = distinct_rows(src, models, hardware)
        per = [self._level(str(src[i]), str(models[i]), str(hardware[i]), float(jpf[i])) for i in first]
        level = np.array([p[0] for p in per], dtype=float)[codes]
        lt = np.array([p[1] for p in per], dtype=float)[codes]
        c = np.array([p[2] for p in per], dtype=float)[codes]
        names = np.array([p[3] for p in per], dtype=object)[codes]
        ops = 0.0
        if attention is not None:
            ops = ops + self.w_attention * np.asarray(attention, dtype=float)
        if conv is not None:
            ops = ops + self.w_conv * np.asarray(conv, dtype=float)
        if intensity is not None and self.w_intensity:
            ops = ops + self.w_intensity * np.asarray(intensity, dtype=float)
        return level + x + softplus(c * (np.asarray(log_peak, dtype=float) + lt - x)) + ops, names

    def _level(self, source: str, model: str, hardware: str, log_jpf: float) -> tuple[float, float, float, str]:
        """``(level, log τ, c, level name)`` of one (source, family, GPU)."""
        setup = f"{source}|{hardware}"
        if setup in self.setup_hardware:
            lt, c = self.setup_log_tau.get(setup, self.log_tau), self.c
            if f"{source}|{model}|{hardware}" in self.setup_group:
                return self.setup_group[f"{source}|{model}|{hardware}"], lt, c, "setup_group"
            return self.setup_hardware[setup], lt, c, "setup_hardware"
        if f"{model}|{hardware}" in self.group:
            return self.group[f"{model}|{hardware}"], self.log_tau, self.c, "group"
        if hardware in self.hardware:
            return self.hardware[hardware], self.log_tau, self.c, "hardware"
        j = log_jpf if math.isfinite(log_jpf) else 0.0
        return self.gpu_intercept + self.gpu_slope * j, self.log_tau, self.c, "overall"

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SaturatingLaw:
        return cls(**{k: (float("nan") if v is None else v) for k, v in d.items()})


def _op_weights(res: np.ndarray, hcodes: np.ndarray, attention: np.ndarray | None, conv: np.ndarray | None,
                models: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Attention and convolution weights from variation across families on one GPU (levels per GPU
    profiled out); a share that does not vary within any GPU says nothing (weight 0)."""
    weights = {"a": 0.0, "c": 0.0}
    shares = [(k, d) for k, v in (("a", attention), ("c", conv)) if v is not None
              and np.ptp(d := _demean(np.asarray(v, dtype=float), hcodes, w)) > 1e-9]
    if shares and len(np.unique(models)) > len(shares):
        sw = np.sqrt(w)
        X = np.column_stack([d for _, d in shares]) * sw[:, None]
        if np.linalg.matrix_rank(X) == len(shares):
            theta = np.linalg.lstsq(X, _demean(res, hcodes, w) * sw, rcond=None)[0]
            for (k, _), t in zip(shares, np.clip(theta, -OP_WEIGHT_BOUND, OP_WEIGHT_BOUND), strict=True):
                weights[k] = float(t)
    return weights["a"], weights["c"]


def _ops(wa: float, wc: float, attention: np.ndarray | None, conv: np.ndarray | None) -> np.ndarray | float:
    return (wa * np.asarray(attention, dtype=float) if attention is not None else 0.0) + \
        (wc * np.asarray(conv, dtype=float) if conv is not None else 0.0)


def fit_saturating(x: np.ndarray, y: np.ndarray, *, models: np.ndarray, hardware: np.ndarray,
                   log_peak: np.ndarray, attention: np.ndarray | None = None, conv: np.ndarray | None = None,
                   log_jpf: np.ndarray | None = None, sources: np.ndarray | None = None,
                   w: np.ndarray | None = None, intensity: np.ndarray | None = None) -> SaturatingLaw | None:
    """Fit :class:`SaturatingLaw` to log energy per call ``y`` against log FLOPs per call ``x``.

    Returns None where the law cannot be fitted: a GPU without a peak FLOP/s in the spec table
    (a CPU, say), or no (family, GPU) whose call size varies enough to show where it saturates.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    log_peak = np.asarray(log_peak, dtype=float)
    if n < MIN_POINTS or not np.isfinite(log_peak).all():
        return None
    w = np.ones(n) if w is None else np.asarray(w, dtype=float)
    models, hardware = np.asarray(models, dtype=str), np.asarray(hardware, dtype=str)
    groups = np.char.add(np.char.add(models, "|"), hardware)
    # levels are profiled out per (source, family, GPU): two harnesses on one GPU are two levels
    src = None if sources is None else np.asarray(sources, dtype=str)
    gcodes = pd.factorize(groups if src is None else np.char.add(np.char.add(src, "|"), groups))[0]
    if not _identifiable(x, gcodes):
        return None
    r = y - x
    hcodes = pd.factorize(hardware)[0]
    li = np.zeros(n) if intensity is None else np.asarray(intensity, dtype=float)
    # the intensity weight: each candidate fits its own saturation (within groups) and op weights (across
    # families); the one whose residuals vary least within each GPU, across families too, is kept
    cands = INTENSITY_GRID if intensity is not None and np.ptp(_demean(li, gcodes, w)) > 1e-9 else (0.0,)
    best = (math.inf, 0.0, 0.0, 1.0, 0.0, 0.0)
    for g in cands:
        lt_g, c_g = _grid(r - g * li, x, log_peak, gcodes, w, C_GRID)
        res_g = r - g * li - softplus(c_g * (log_peak + lt_g - x))
        wa_g, wc_g = _op_weights(res_g, hcodes, attention, conv, models, w)
        e = _demean(res_g - _ops(wa_g, wc_g, attention, conv), hcodes, w)
        sse = float((w * e * e).sum())
        if sse < best[0] - 1e-12:
            best = (sse, g, lt_g, c_g, wa_g, wc_g)
    _, wi, lt, c, wa, wc = best
    r = r - wi * li
    ops = _ops(wa, wc, attention, conv)
    res = r - softplus(c * (log_peak + lt - x)) - ops
    law = SaturatingLaw(lt, c, wa, wc, wi, group=_means(res, groups, w), hardware=_means(res, hardware, w), n=n)
    # an unseen GPU: its level from its best-case J/FLOP (TDP / peak), over the seen GPUs
    jpf = np.full(n, np.nan) if log_jpf is None else np.asarray(log_jpf, dtype=float)
    per_hw = pd.DataFrame({"h": hardware, "j": jpf}).groupby("h")["j"].first()
    lv = np.array([law.hardware[h] for h in per_hw.index])
    ok = np.isfinite(per_hw.to_numpy())
    if ok.sum() >= 2 and np.ptp(per_hw.to_numpy()[ok]) > 0:
        law.gpu_slope, law.gpu_intercept = (float(v) for v in np.polyfit(per_hw.to_numpy()[ok], lv[ok], 1))
    else:
        law.gpu_slope, law.gpu_intercept = 0.0, float(np.average(res, weights=w))
    law.mape = float(np.mean(np.abs(np.exp(law.log_predict(x, models=models, hardware=hardware, log_peak=log_peak,
                                                           attention=attention, conv=conv, log_jpf=jpf,
                                                           intensity=intensity)[0] - y) - 1)))
    # each setup's own saturation point and levels
    if src is not None:
        setup = np.char.add(np.char.add(src, "|"), hardware)
        lts = np.full(n, lt)
        for s in np.unique(setup):
            m = setup == s
            codes = pd.factorize(groups[m])[0]
            if _identifiable(x[m], codes):
                law.setup_log_tau[str(s)] = _grid(r[m], x[m], log_peak[m], codes, w[m], (c,))[0]
                lts[m] = law.setup_log_tau[str(s)]
        res_s = r - softplus(c * (log_peak + lts - x)) - ops
        law.setup_group = _means(res_s, np.char.add(np.char.add(src, "|"), groups), w)
        law.setup_hardware = _means(res_s, setup, w)
    return law


# ============================================================================ inputs per row
@functools.lru_cache(maxsize=4096)
def _shares(model: str, height: int, width: int, component: str) -> tuple[float, float]:
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.flops.optypes import call_op_flops

    try:
        ops = call_op_flops(model, height=height, width=width, component=component)
    except (ConfigError, KeyError, ValueError):
        return 0.0, 0.0
    total = ops["total"]
    return (ops["attention"] / total, ops["conv"] / total) if total > 0 else (0.0, 0.0)


#: The columns of :func:`call_shapes`. A frame that carries them is read, not recomputed: the
#: predictor adds them once per request, for the energy law and the time law alike.
SHAPE_COLUMNS = ("share_attention_denoiser", "share_conv_denoiser", "share_attention_decode", "share_conv_decode",
                 "log_intensity")


def op_shares(frame: pd.DataFrame, phase: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Attention and convolution shares of each row's call in ``phase`` (None, None for text encoders)."""
    component = {"total": "denoiser", "denoise": "denoiser", "decode": "decode"}.get(phase)
    if component is None:
        return None, None
    if f"share_attention_{component}" in frame.columns:
        return (frame[f"share_attention_{component}"].to_numpy(dtype=float),
                frame[f"share_conv_{component}"].to_numpy(dtype=float))
    from mlflow_energy.fit.frame import distinct_rows

    model = frame["model"].to_numpy(dtype=object)
    height, width = frame["height"].to_numpy(dtype=np.int64), frame["width"].to_numpy(dtype=np.int64)
    codes, first = distinct_rows(model, height, width)  # once per distinct (model, height, width)
    pairs = np.array([_shares(str(model[i]), int(height[i]), int(width[i]), component) for i in first],
                     dtype=float).reshape(-1, 2)
    return pairs[codes, 0], pairs[codes, 1]


@functools.lru_cache(maxsize=4096)
def _per_sample(model: str, height: int, width: int) -> tuple[float, float]:
    """``(FLOPs of one denoiser call on one sample, latent pixels)``; NaN where they cannot be counted."""
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.families import get_family
    from mlflow_energy.flops.frame import size_flops
    from mlflow_energy.flops.memory import known_families

    if model not in known_families():
        return math.nan, math.nan
    try:
        ld = get_family(model).latent_downsample
        lh, lw = np.array([height // ld]), np.array([width // ld])
        return float(size_flops(model, lh, lw)[0][0]), float(lh[0] * lw[0])
    except (ConfigError, KeyError, ValueError):
        return math.nan, math.nan


def call_shapes(frame: pd.DataFrame | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The :data:`SHAPE_COLUMNS` of every row: the attention and convolution shares of the denoiser
    call and of the decode, and the denoiser call's log intensity (see :func:`call_intensity`).

    One pass per distinct (family, height, width); ``frame`` (a DataFrame or a dict of columns)
    needs ``model``, ``height``, ``width``, ``batch_size`` and ``flops_denoise_per_step``.
    """
    from mlflow_energy.fit.frame import distinct_rows
    from mlflow_energy.flops.memory import denoiser_call_bytes

    model = np.asarray(frame["model"], dtype=object)
    height, width = np.asarray(frame["height"], dtype=np.int64), np.asarray(frame["width"], dtype=np.int64)
    codes, first = distinct_rows(model, height, width)
    per = np.array([(*_shares(str(model[i]), int(height[i]), int(width[i]), "denoiser"),
                     *_shares(str(model[i]), int(height[i]), int(width[i]), "decode"),
                     *_per_sample(str(model[i]), int(height[i]), int(width[i]))) for i in first],
                   dtype=float).reshape(-1, 6)[codes]
    out = {name: per[:, j] for j, name in enumerate(SHAPE_COLUMNS[:4])}
    # the call's samples (batch x CFG passes) are its FLOPs over one sample's
    x = np.log(np.clip(np.asarray(frame["flops_denoise_per_step"], dtype=float), 1.0, None)
               * np.asarray(frame["batch_size"], dtype=float))
    intensity = np.zeros(len(model))
    counted = np.isfinite(per[:, 4])
    for name in pd.unique(model[counted]):
        m = counted & (model == name)
        samples = np.maximum(np.rint(np.exp(x[m]) / per[m, 4]), 1.0)
        nbytes = denoiser_call_bytes(str(name), latent_pixels=per[m, 5], samples=samples)
        intensity[m] = x[m] - np.log(nbytes) - math.log(INTENSITY_REF)
    out["log_intensity"] = np.where(np.isfinite(intensity), intensity, 0.0)
    return out


def call_intensity(frame: pd.DataFrame, phase: str) -> np.ndarray | None:
    """Log arithmetic intensity of each row's denoiser call, ``log(FLOP / byte) - log(INTENSITY_REF)``
    (:mod:`mlflow_energy.flops.memory`), for phases ``denoise`` and ``total``; None for the others.

    The call's samples (batch x CFG passes) are its FLOPs over one sample's closed-form FLOPs. A row
    whose family the bytes table lacks, or whose FLOPs the closed forms cannot count, gets 0 (no term).
    A ``log_intensity`` column (:func:`call_shapes`), when present, is read as it is.
    """
    if phase not in ("total", "denoise"):
        return None
    if "log_intensity" in frame.columns:
        return frame["log_intensity"].to_numpy(dtype=float)
    return call_shapes(frame)["log_intensity"]
