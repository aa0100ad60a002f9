"""The power law ``log E = log a + b log FLOPs``: least squares, bootstrap slope intervals, per-family offsets.

Every fit takes optional per-run weights ``w`` (weighted least squares): the measurement
protocol's noisy runs come in down-weighted (:func:`mlflow_energy.fit.frame.weigh_noisy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_POINTS = 3
MIN_LOG_SPREAD = 0.05  # a group whose log-FLOPs span less than this has no slope to fit


# ============================================================================ power laws
@dataclass
class PowerLaw:
    """``log E = log_a + b log FLOPs`` (natural logs) with its fit statistics."""

    log_a: float
    b: float
    n: int
    r2: float = float("nan")
    mape: float = float("nan")
    b_low: float = float("nan")
    b_high: float = float("nan")
    offsets: dict[str, float] = field(default_factory=dict)  # per-family offsets (pooled fits)
    slope_from: str = "fit"
    roofline: bool = False  # energy was divided by the GPU's J/FLOP at TDP before the fit

    def log_predict(self, log_flops: np.ndarray, family: str | None = None) -> np.ndarray:
        return self.log_a + self.offsets.get(family, 0.0) + self.b * np.asarray(log_flops, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PowerLaw:
        d = {k: (float("nan") if v is None else v) for k, v in d.items()}
        return cls(**d)


def _weights(w: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if w is None else np.asarray(w, dtype=float)


def _ols(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    w = _weights(w, len(x))
    sw = w.sum()
    xm, ym = (w * x).sum() / sw, (w * y).sum() / sw
    sxx = (w * (x - xm) ** 2).sum()
    b = float((w * (x - xm) * (y - ym)).sum() / sxx) if sxx > 0 else 0.0
    return float(ym - b * xm), b


def _bootstrap_slope(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator,
                     weights: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile 95% interval of the (weighted) least-squares slope over case-resampling, vectorised."""
    n = len(x)
    if n_boot <= 0 or n < MIN_POINTS:
        return float("nan"), float("nan")
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float) * _weights(weights, n)
    sw = w.sum(axis=1)
    xm = (w * x).sum(axis=1) / sw
    ym = (w * y).sum(axis=1) / sw
    sxx = (w * (x - xm[:, None]) ** 2).sum(axis=1)
    sxy = (w * (x - xm[:, None]) * (y - ym[:, None])).sum(axis=1)
    ok = sxx > 1e-12
    if ok.sum() < 10:
        return float("nan"), float("nan")
    b = sxy[ok] / sxx[ok]
    return float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))


def _stats(law: PowerLaw, x: np.ndarray, y: np.ndarray, fams: np.ndarray | None = None) -> None:
    pred = law.log_a + law.b * x
    if fams is not None:
        pred = pred + np.array([law.offsets.get(f, 0.0) for f in fams])
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    law.r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    law.mape = float(np.mean(np.abs(np.exp(pred - y) - 1.0)))


def fit_line(x: np.ndarray, y: np.ndarray, *, n_boot: int = 0, rng: np.random.Generator | None = None,
             w: np.ndarray | None = None) -> PowerLaw:
    """Least squares of ``y`` (log energy) on ``x`` (log FLOPs), weighted by ``w``, with a bootstrap slope interval.

    Example:
        >>> import numpy as np
        >>> from mlflow_energy.fit import fit_line
        >>> x = np.log([1e12, 2e12, 4e12, 8e12]); law = fit_line(x, np.log(3e-12) + 0.9 * x)
        >>> round(law.b, 3), round(law.r2, 3)
        (0.9, 1.0)
    """
    log_a, b = _ols(x, y, w)
    law = PowerLaw(log_a, b, len(x))
    law.b_low, law.b_high = _bootstrap_slope(x, y, n_boot, rng or np.random.default_rng(0), w)
    _stats(law, x, y)
    return law


def fit_offsets(x: np.ndarray, y: np.ndarray, fams: np.ndarray, *, cross: PowerLaw, n_boot: int = 0,
                rng: np.random.Generator | None = None, w: np.ndarray | None = None) -> PowerLaw:
    """Pooled law with a per-family offset: the slope comes from within-family variation of FLOPs.

    When no family's FLOPs vary, the slope is the cross-family one (``slope_from="cross_family"``)
    and the offsets are each family's mean residual from it. ``w`` weighs the runs.
    """
    weights = _weights(w, len(x))
    x_c = x.copy()
    y_c = y.copy()
    within = 0.0
    for fam in np.unique(fams):
        m = fams == fam
        xm = np.average(x[m], weights=weights[m])
        within += float(((x[m] - xm) ** 2).sum())
        x_c[m] -= xm
        y_c[m] -= np.average(y[m], weights=weights[m])
    if within > MIN_LOG_SPREAD**2:
        b = float((weights * x_c * y_c).sum() / (weights * x_c**2).sum())
        slope_from = "within_family"
    else:
        b = cross.b
        slope_from = "cross_family"
    # intercept: the cross-family intercept; offsets: each family's mean residual around it
    log_a = float(np.average(y - b * x, weights=weights))
    offsets = {str(f): float(np.average(y[fams == f] - b * x[fams == f], weights=weights[fams == f]) - log_a)
               for f in np.unique(fams)}
    law = PowerLaw(log_a, b, len(x), offsets=offsets, slope_from=slope_from)
    if n_boot > 0 and slope_from == "within_family":
        rng = rng or np.random.default_rng(0)
        w = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=n_boot).astype(float) * weights
        slopes = []
        for wi in w:
            xc = x.copy()
            yc = y.copy()
            for fam in np.unique(fams):
                m = fams == fam
                sw = wi[m].sum()
                if sw == 0:
                    continue
                xc[m] -= (wi[m] * x[m]).sum() / sw
                yc[m] -= (wi[m] * y[m]).sum() / sw
            sxx = (wi * xc**2).sum()
            if sxx > 1e-12:
                slopes.append((wi * xc * yc).sum() / sxx)
        if len(slopes) >= 10:
            law.b_low, law.b_high = float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))
    _stats(law, x, y, fams)
    return law
