"""What a fitted model has seen, and what it predicts beside energy: time per image and idle power.

* **Seen**: the hardware (and its kind, GPU or CPU), precisions, families and the ranges of
  height, width, steps and batch size of the training runs (:func:`seen_of`). The predictor
  refuses a question outside them unless asked to extrapolate.
* **Time**: a law of the seconds per image, fitted like the energy law (per family and GPU,
  pooled across families, one per GPU, overall) on the runs that carry ``time/total_s``
  (:func:`fit_time`), with its own grouped cross-validation and 90% intervals.
* **Idle power** per hardware (:func:`idle_powers`): the median of the runs' measured
  ``power/idle_w`` where they carry it, else :data:`IDLE_FRACTION_OF_TDP` of the board's TDP
  (spec sheets do not state idle power). Dynamic energy = total - idle power x time.

Example:
    >>> import pandas as pd
    >>> f = pd.DataFrame({"model": ["sd2", "sd2"], "hardware": ["A100 SXM4 40GB/80GB"] * 2,
    ...                   "precision": ["fp16", "bf16"], "height": [512, 1024], "width": [512, 1024],
    ...                   "steps": [20, 50], "batch_size": [1, 4]})
    >>> s = seen_of(f)
    >>> s["hardware_kinds"], s["precision_classes"], s["height"]
    (['gpu'], ['half'], [512, 1024])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema

__all__ = ["IDLE_FRACTION_OF_TDP", "RANGE_COLUMNS", "hardware_kind", "idle_of", "idle_powers", "precision_class",
           "seen_of", "seen_summary", "time_frame"]

#: Idle power as a fraction of TDP where no run measured it: NVML reads about 50-60 W on a
#: 400 W A100 and 70-90 W on a 700 W H100 at idle (P0 after a job), about 12-15%.
IDLE_FRACTION_OF_TDP = 0.12
#: The input columns whose training range bounds the questions the model answers.
RANGE_COLUMNS: tuple[str, ...] = ("height", "width", "steps", "batch_size")
_PRECISION_CLASS = {"fp32": "fp32", "fp16": "half", "bf16": "half"}


def precision_class(precision: str) -> str:
    """``fp32`` or ``half`` (fp16 and bf16 run the same tensor cores at the same width)."""
    return _PRECISION_CLASS.get(str(precision), str(precision))


def hardware_kind(name: str, descriptors: dict[str, float] | None = None) -> str:
    """``gpu`` for a GPU of the spec table, a name that says so, or one given with GPU specs; else ``cpu``.

    Example:
        >>> hardware_kind("NVIDIA H100 80GB HBM3"), hardware_kind("cpu: Intel(R) Xeon(R) CPU @ 2.20GHz")
        ('gpu', 'cpu')
    """
    from mlflow_energy.measure.hardware import find_gpu

    text = str(name).lower()
    if text.startswith("cpu"):
        return "cpu"
    if find_gpu(str(name)) is not None or any(w in text for w in ("nvidia", "geforce", "radeon", "instinct", "gpu")):
        return "gpu"
    if descriptors and math.isfinite(float(descriptors.get("hw_tflops", float("nan")))):
        return "gpu"
    return "cpu"


def seen_of(frame: pd.DataFrame) -> dict[str, Any]:
    """What the training runs cover: hardware and kinds, precisions and classes, families, ranges."""
    hardware = sorted(set(frame["hardware"].astype(str)))
    precisions = sorted(set(frame["precision"].astype(str)))
    seen: dict[str, Any] = {
        "hardware": hardware,
        "hardware_kinds": sorted({hardware_kind(h) for h in hardware}),
        "precisions": precisions,
        "precision_classes": sorted({precision_class(p) for p in precisions}),
        "families": sorted(set(frame["model"].astype(str))),
    }
    for col in RANGE_COLUMNS:
        values = pd.to_numeric(frame[col], errors="coerce").dropna()
        seen[col] = [int(values.min()), int(values.max())] if len(values) else []
    return seen


def seen_summary(seen: dict[str, Any], *, limit: int = 6) -> str:
    """One line of what a model has seen (for refusals and the ``predict`` command).

    Example:
        >>> seen_summary({"families": ["sd2"], "precisions": ["fp16"], "hardware": ["A100"],
        ...               "height": [512, 1024], "width": [512, 1024], "steps": [20, 50], "batch_size": [1, 4]})
        'families sd2; precisions fp16; hardware A100; height 512-1024, width 512-1024, steps 20-50, batch 1-4'
    """
    def names(key: str) -> str:
        items = list(seen.get(key, []))
        more = f" and {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    ranges = ", ".join(f"{'batch' if c == 'batch_size' else c} {seen[c][0]}-{seen[c][1]}" for c in RANGE_COLUMNS
                       if len(seen.get(c, [])) == 2)
    return f"families {names('families')}; precisions {names('precisions')}; hardware {names('hardware')}; {ranges}"


def idle_powers(frame: pd.DataFrame, hardware: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, str]]:
    """Idle watts per canonical hardware and where each comes from (``measured (n runs)`` or the TDP rule).

    ``frame`` may carry ``idle_w`` (the runs' ``power/idle_w``)."""
    watts: dict[str, float] = {}
    source: dict[str, str] = {}
    measured = frame.get("idle_w")
    for hw, desc in hardware.items():
        if measured is not None:
            m = pd.to_numeric(measured[frame["hardware"] == hw], errors="coerce")
            m = m[m > 0]
            if len(m):
                watts[hw], source[hw] = float(m.median()), f"measured ({len(m)} runs)"
                continue
        rule = _idle_by_tdp(desc)
        if rule is not None:
            watts[hw], source[hw] = rule, f"{IDLE_FRACTION_OF_TDP:.0%} of TDP"
    return watts, source


def _idle_by_tdp(descriptors: dict[str, float]) -> float | None:
    """:data:`IDLE_FRACTION_OF_TDP` of the board's TDP (None without a TDP)."""
    tdp = float(descriptors.get("hw_tdp_w", float("nan")))
    return IDLE_FRACTION_OF_TDP * tdp if math.isfinite(tdp) and tdp > 0 else None


def idle_of(names: np.ndarray, idle: dict[str, float], hardware: dict[str, dict[str, float]]) -> np.ndarray:
    """Idle watts of each row's hardware (the TDP rule for hardware the fit never saw; 0 without a TDP)."""
    out = np.zeros(len(names))
    for hw in set(names):
        w = idle.get(hw)
        if w is None:
            w = _idle_by_tdp(hardware.get(hw, {})) or 0.0
        out[names == hw] = w
    return out


def time_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs that carry a time per image, with it in the energy columns the law fits.

    The time law is fitted by the energy law's own machinery on this frame: ``energy_total``
    holds seconds per image, the phase columns are empty."""
    if "time_total" not in frame.columns:
        return frame.iloc[:0]
    t = pd.to_numeric(frame["time_total"], errors="coerce")
    out = frame.loc[t > 0].copy()
    out["energy_total"] = t[t > 0]
    for phase in schema.PHASES:
        out[f"energy_{phase}"] = np.nan
    return out.reset_index(drop=True)
