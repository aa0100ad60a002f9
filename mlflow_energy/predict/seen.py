"""What a model may answer: rows outside what its training data, or the row's calibration, covers.

A model records what its training runs covered (:func:`mlflow_energy.fit.scope.seen_of`): the
hardware and its kind, the precisions, the families and the ranges of height, width, steps and
batch size. A calibration records the same of its measurements, and widens what a row of its
setup may ask. A row is *outside* when its family, its precision class (fp32 against fp16/bf16)
or its hardware kind (a GPU for a CPU-fitted model) was never seen, when its hardware was never
seen and the model saw fewer than two of that kind (no leave-one-GPU-out evidence), or when a
size, the steps or the batch lies outside the seen range. The predictor refuses such a row in one
line naming what the model has seen, or, with ``allow_extrapolation``, answers it with level
``extrapolated`` and an interval no narrower than the widest the grouped CV measured.

Example:
    >>> import numpy as np
    >>> seen = {"families": ["sd2"], "precision_classes": ["half"], "hardware": ["A100"], "hardware_kinds": ["gpu"],
    ...         "height": [512, 1024], "width": [512, 1024], "steps": [20, 50], "batch_size": [1, 4]}
    >>> cols = {"model": np.array(["sd2", "sd2"]), "precision": np.array(["fp16", "fp32"]),
    ...         "hardware": np.array(["A100", "A100"]), "height": np.array([512, 512]), "width": np.array([512, 512]),
    ...         "steps": np.array([20, 4]), "batch_size": np.array([1, 1])}
    >>> outside_rows(seen, cols, np.array(["", ""]), {}, {})[1]
    [None, ('precision', 'fp32', 'precisions fp16/bf16')]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlflow_energy.fit.frame import distinct_rows
from mlflow_energy.fit.scope import RANGE_COLUMNS, hardware_kind, precision_class

if TYPE_CHECKING:
    from mlflow_energy.predict.calibration import Calibration

__all__ = ["LEVEL_EXTRAPOLATED", "merged_seen", "outside_rows"]

LEVEL_EXTRAPOLATED = "extrapolated"
_CLASS_NAMES = {"half": "fp16/bf16", "fp32": "fp32"}


def merged_seen(seen: dict[str, Any], cal: Calibration | None) -> dict[str, Any]:
    """What a row may ask: the model's seen scope, widened by its calibration's measurements."""
    if cal is None or not cal.seen:
        return seen
    out = dict(seen)
    for key in ("families", "precision_classes", "hardware", "hardware_kinds"):
        out[key] = sorted(set(seen.get(key, [])) | set(cal.seen.get(key, [])))
    for col in RANGE_COLUMNS:
        a, b = seen.get(col) or [], cal.seen.get(col) or []
        both = [*a, *b]
        out[col] = [min(both), max(both)] if both else []
    return out


def _class_why(seen: dict[str, Any], row: dict[str, Any], descriptors: dict[str, float] | None
               ) -> tuple[str, Any, str] | None:
    """``(field, value, what the model has seen)`` when the family, the precision class or the
    hardware of ``row`` lies outside, else None (the ranges are checked by :func:`outside_rows`)."""
    if row["model"] not in seen.get("families", []):
        return "model", row["model"], "families " + ", ".join(seen.get("families", []))
    classes = seen.get("precision_classes", [])
    if classes and precision_class(row["precision"]) not in classes:
        return "precision", row["precision"], "precisions " + ", ".join(_CLASS_NAMES.get(c, c) for c in classes)
    kinds = seen.get("hardware_kinds", [])
    hw = row["hardware"]
    if kinds and hw not in seen.get("hardware", []):
        kind = hardware_kind(hw, descriptors)
        same = [h for h in seen.get("hardware", []) if hardware_kind(h) == kind]
        if kind not in kinds:
            return "hardware", hw, f"{'/'.join(k.upper() for k in kinds)} hardware, namely " + ", ".join(
                seen.get("hardware", []))
        if len(same) < 2:
            return "hardware", hw, "hardware " + ", ".join(seen.get("hardware", [])) + " (one " + kind.upper() + \
                ": no evidence of how another one differs)"
    return None


def outside_rows(seen: dict[str, Any], cols: dict[str, np.ndarray], setups: np.ndarray,
                 calibrations: dict[str, Calibration], hardware: dict[str, dict[str, float]]
                 ) -> tuple[np.ndarray, list[tuple[str, Any, str] | None]]:
    """Per row: outside or not, and why: ``(field, value, what the model has seen)``, the family,
    precision class and hardware first, then the ranges in the order of ``RANGE_COLUMNS``.
    ``setups``: each row's calibration name ("" for none). Every row is inside when ``seen`` is
    empty (a model stored before it recorded what it had seen).

    Family, precision, hardware and setup are checked once per distinct combination of the four
    (a request has a handful); the ranges are compared a column at a time over all rows."""
    n = len(cols["model"])
    if not seen:
        return np.zeros(n, dtype=bool), [None] * n
    setups = np.asarray(setups, dtype=object)
    keys = ("model", "precision", "hardware")
    # object Series: a plain array would be inferred as pandas 3 strings, copied into Arrow
    inverse, first = distinct_rows(*(pd.Series(v, dtype=object, copy=False)
                                     for v in (*(cols[k] for k in keys), setups)))
    class_why, ranges = [], []
    for i in first:
        row = {k: (v.item() if isinstance(v := cols[k][i], np.generic) else v) for k in keys}
        merged = merged_seen(seen, calibrations.get(setups[i]))
        class_why.append(_class_why(merged, row, hardware.get(str(row["hardware"]))))
        ranges.append([r if len(r := merged.get(col) or []) == 2 else None for col in RANGE_COLUMNS])
    bad = np.array([w is not None for w in class_why], dtype=bool)[inverse]
    first_out = np.full(n, -1)  # index in RANGE_COLUMNS of the first range a row lies outside
    for j in reversed(range(len(RANGE_COLUMNS))):
        lo = np.array([-np.inf if r[j] is None else r[j][0] for r in ranges], dtype=float)[inverse]
        hi = np.array([np.inf if r[j] is None else r[j][1] for r in ranges], dtype=float)[inverse]
        values = np.asarray(cols[RANGE_COLUMNS[j]])
        first_out[(values < lo) | (values > hi)] = j
    bad |= first_out >= 0
    if not bad.any():
        return bad, [None] * n
    why: list[tuple[str, Any, str] | None] = [None] * n
    for i in np.flatnonzero(bad).tolist():
        g = inverse[i]
        if class_why[g] is not None:
            why[i] = class_why[g]
        else:
            col = RANGE_COLUMNS[first_out[i]]
            rng = ranges[g][first_out[i]]
            why[i] = (col, int(cols[col][i]), f"{col} {rng[0]} to {rng[1]}")
    return bad, why
