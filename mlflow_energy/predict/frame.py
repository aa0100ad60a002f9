"""Predictions for a DataFrame of configs: per-phase energy, dynamic energy, time, the intervals, carbon."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import J_PER_KWH
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import FIT_PHASES, EnergyModel
from mlflow_energy.fit.features import log_jpf, log_peak
from mlflow_energy.fit.frame import distinct_rows
from mlflow_energy.fit.model import pair_codes
from mlflow_energy.fit.saturation import call_shapes
from mlflow_energy.fit.scope import idle_of, seen_summary
from mlflow_energy.fit.validation import LEVEL_UNSEEN_SETUP, LEVELS, unseen_setup_width, widest_width
from mlflow_energy.flops.frame import flops_columns
from mlflow_energy.predict.calibration import Calibration, slope_values
from mlflow_energy.predict.inputs import FLOPS_EXTRAPOLATION, _fail, input_columns
from mlflow_energy.predict.seen import LEVEL_EXTRAPOLATED, outside_rows

#: The smallest share of the total a dynamic prediction keeps (idle x time never takes it all).
MIN_DYNAMIC_SHARE = 0.02


def predict_frame(model: EnergyModel, df: pd.DataFrame, *, interval_level: str = "auto",
                  calibrations: dict[str, Calibration] | None = None, allow_extrapolation: bool = False
                  ) -> pd.DataFrame:
    """Predict the output columns for the input rows (see :mod:`mlflow_energy.predict.pyfunc`).

    The interval of each row follows its setup (see :func:`row_levels`): a calibration named in
    the ``setup`` column, or, with none named, the one calibration of the row's hardware (several:
    none applies, and ``note`` says so); else an unseen setup (``unseen_setup``, calibrated by
    leaving setups out). A training source named in ``setup`` gets the level of its family and GPU
    (``known``, ``unseen_hardware``). ``interval_level`` other than ``auto`` forces one of the
    model's levels for every row.

    A row outside what the model (or its calibration) has seen (:mod:`mlflow_energy.predict.seen`)
    is refused, unless ``allow_extrapolation``: then its level is ``extrapolated`` and its interval
    no narrower than the widest the grouped CV measured.

    Raises:
        ConfigError: for a bad input row, or one outside what the model has seen (naming what it has).
    """
    if interval_level != "auto" and interval_level not in LEVELS:
        raise ConfigError("interval_level", interval_level, "auto or one of " + ", ".join(LEVELS))
    calibrations = calibrations or {}
    cols, extra = input_columns(model, df)
    inverse, row_of = _distinct(cols)
    if row_of is not None:  # the rest runs on the distinct rows; the answer is spread back at the end
        cols = {k: v[row_of] for k, v in cols.items()}
    hardware = {**model.hardware, **extra} if extra else model.hardware
    setup, notes = resolve_setups(model, cols.pop("setup"), cols["hardware"], calibrations)
    flops = flops_columns(cols)
    # one frame, built once: inputs, FLOPs and each GPU's best-case J/FLOP
    # a row names a training source: that setup's own saturation and levels (a saturating law)
    source = np.where(np.isin(setup, list(model.sources)), setup, "").astype(object)
    data = {**cols, **flops, "log_jpf": log_jpf(cols["hardware"], hardware),
            "log_peak": log_peak(cols["hardware"], hardware), "energy_source": source}
    if _saturating(model):  # the call's op shares and intensity, once for the energy and the time laws
        data.update(call_shapes(data))
    rows = numpy_frame(data)
    ft = rows["flops_total"].to_numpy(dtype=float)
    lo, hi = model.flops_range
    with np.errstate(invalid="ignore"):
        far = ~(np.isfinite(ft) & (ft >= lo / FLOPS_EXTRAPOLATION) & (ft <= hi * FLOPS_EXTRAPOLATION))
    cal_setup = np.where(np.isin(setup, list(calibrations)), setup, "")
    outside, why = outside_rows(model.seen, cols, cal_setup, calibrations, hardware)
    if not allow_extrapolation:
        _refuse(model, rows, outside, why, far, ft, df, row_of)
    outside = outside | far
    work = dataclasses.replace(model, hardware=hardware) if extra else model
    logs, law_logs = work.log_predict_both(rows)
    total = np.exp(logs[schema.PHASE_TOTAL])
    phases = [p for p in FIT_PHASES if p != schema.PHASE_TOTAL]
    if all(p in logs for p in phases):
        parts = np.stack([np.exp(logs[p]) for p in phases])
        parts = parts * (total / parts.sum(axis=0))
    else:  # runs carried a total only: split it by each phase's share of the FLOPs
        split = np.stack([rows[f"flops_{p}"].to_numpy(dtype=float) for p in phases])
        parts = split / split.sum(axis=0) * total
    levels, half, shift = row_levels(model, rows, setup, calibrations)
    if interval_level != "auto":
        levels = np.full(len(rows), interval_level, dtype=object)
        width = unseen_setup_width(model.interval) if interval_level == LEVEL_UNSEEN_SETUP else \
            model.interval.get(interval_level, unseen_setup_width(model.interval))
        half = np.full(len(rows), width)
    if outside.any():
        levels, half = levels.copy(), half.copy()
        levels[outside] = LEVEL_EXTRAPOLATED
        half[outside] = np.maximum(half[outside], widest_width(model.interval))
        notes = notes.copy()
        for i in np.flatnonzero(outside):
            w = why[i]
            notes[i] = (f"extrapolated: {w[0]}={w[1]} outside {w[2]}" if w is not None else
                        f"extrapolated: FLOPs per image {ft[i]:.3g} beyond the fitted {lo:.3g} to {hi:.3g}")
    factor = np.exp(shift)
    total, parts = total * factor, parts * factor
    low, high = total * np.exp(-half), total * np.exp(half)
    time, t_low, t_high = predict_time(work, rows, levels)
    share = dynamic_share(work, rows, total, time)
    cols_out: dict[str, Any] = {f"energy_{p}_j": values for p, values in zip(phases, parts, strict=True)}
    cols_out.update({
        "energy_total_j": total, "energy_total_wh": total / 3600.0, "energy_total_j_low": low,
        "energy_total_j_high": high,
        "energy_dynamic_j": total * share, "energy_dynamic_j_low": low * share, "energy_dynamic_j_high": high * share,
        "time_total_s": time, "time_total_s_low": t_low, "time_total_s_high": t_high,
        "co2e_g": total / J_PER_KWH * rows["carbon_intensity_g_per_kwh"].to_numpy(dtype=float),
        "setup": setup, "interval_level": levels, "energy_total_j_law": np.exp(law_logs[schema.PHASE_TOTAL]) * factor,
        "energy_scope": np.full(len(rows), model.energy_scope, dtype=object), "note": notes,
    })
    rows_hardware = rows["hardware"].to_numpy()
    if inverse is not None:
        cols_out = {c: np.asarray(cols_out[c])[inverse] for c in schema.PREDICTOR_OUTPUTS}
        ft, rows_hardware = ft[inverse], rows_hardware[inverse]
    out = pd.DataFrame({c: cols_out[c] for c in schema.PREDICTOR_OUTPUTS})
    out.attrs["flops_total"] = ft  # for calibration: x of each row
    out.attrs["hardware"] = list(pd.unique(rows_hardware))
    out.attrs["rows_hardware"] = rows_hardware
    return out


#: From this many rows on, a request with at most :data:`DISTINCT_SHARE` of them distinct is
#: predicted once per distinct row (every output depends on the row's own inputs alone).
DISTINCT_MIN_ROWS = 1000
DISTINCT_SHARE = 0.5


def _distinct(cols: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(distinct row of each row, first row of each distinct row)`` when predicting the distinct
    rows alone pays, else ``(None, None)``."""
    n = len(cols["model"])
    if n < DISTINCT_MIN_ROWS:
        return None, None
    inverse, first = distinct_rows(*(pd.Series(v, dtype=object, copy=False) if v.dtype == object else v
                                     for v in cols.values()))
    return (inverse, first) if len(first) <= DISTINCT_SHARE * n else (None, None)


def _saturating(model: EnergyModel) -> bool:
    """Whether a law of ``model`` (or of its time law) is the saturating one."""
    return any(pm.saturating is not None for pm in model.phases.values()) or (
        model.time is not None and _saturating(model.time))


def numpy_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """A DataFrame of the predictor's working columns, strings kept as NumPy objects.

    pandas 3 would copy each string column into Arrow, and every later ``to_numpy`` copies it
    back: at 100,000 rows the two copies were a third of the predictor's own time."""
    return pd.DataFrame({k: pd.Series(v, dtype=object, copy=False) if v.dtype == object else v
                         for k, v in ((k, np.asarray(v)) for k, v in columns.items())}, copy=False)


def _refuse(model: EnergyModel, rows: pd.DataFrame, outside: np.ndarray, why: list[Any], far: np.ndarray,
            ft: np.ndarray, given: pd.DataFrame, row_of: np.ndarray | None = None) -> None:
    """Raise for the first row outside what the model has seen, or beyond its FLOP range.

    ``row_of``: the caller's row of each of ``rows`` (when they are its distinct rows)."""
    hint = "; or allow_extrapolation=true (CLI --allow-extrapolation) for an answer with the widest interval"
    number = np.arange(len(rows)) if row_of is None else np.asarray(row_of)

    def first(mask: np.ndarray) -> tuple[int, int]:  # (working row, the caller's row) of the caller's first
        idx = np.flatnonzero(mask)
        i = int(idx[np.argmin(number[idx])])
        return i, int(number[i])

    if outside.any():
        i, row = first(outside)
        field, value, seen = why[i]
        if field == "hardware":  # the name as the caller gave it
            value = pd.DataFrame(given)["hardware"].iloc[row]
        raise _fail(row, field, value, f"{seen}, what the model has seen (all of it: {seen_summary(model.seen)})"
                    f"{hint}")
    if far.any():
        i, row = first(far)
        r = rows.iloc[i]
        lo, hi = model.flops_range
        raise _fail(
            row, "FLOPs per image", f"{ft[i]:.3g} ({r['model']} {r['height']}x{r['width']}, {r['steps']} steps)",
            f"within a factor {FLOPS_EXTRAPOLATION:g} of the fitted range {lo:.3g} to {hi:.3g}{hint}",
        )


def predict_time(model: EnergyModel, rows: pd.DataFrame, levels: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seconds per image and its 90% interval from the time law (NaN when the model has none).

    The interval takes the row's level of the time law's own grouped CV; a calibrated or
    extrapolated row, which calibration does not move in time, the widest one."""
    log_t = model.log_predict_time(rows)
    n = len(rows)
    if log_t is None:
        nan = np.full(n, np.nan)
        return nan, nan, nan
    wide = widest_width(model.time_interval)
    half = pd.Series(levels).map(model.time_interval).fillna(wide).to_numpy(dtype=float)
    t = np.exp(log_t)
    return t, t * np.exp(-half), t * np.exp(half)


def dynamic_share(model: EnergyModel, rows: pd.DataFrame, total: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The share of the total that is dynamic energy: ``1 - idle watts x time / total``.

    1 for a model whose energy is already dynamic (the CPU estimate); NaN without a time law.
    The interval of the dynamic energy is the total's, scaled by this share: energy and time
    errors of one config move together, and subtracting the bounds apart would count them twice."""
    if model.energy_scope == schema.SCOPE_DYNAMIC:
        return np.ones(len(rows))
    idle = idle_of(rows["hardware"].to_numpy(dtype=object), model.idle_w, model.hardware)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = 1.0 - idle * time / total
    return np.where(np.isnan(share), np.nan, np.clip(share, MIN_DYNAMIC_SHARE, 1.0))


def resolve_setups(model: EnergyModel, setup: np.ndarray, hardware: np.ndarray, calibrations: dict[str, Calibration]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's setup and note: the one named, else the one calibration of the row's hardware.

    Raises:
        ConfigError: a ``setup`` that names neither a training source nor a calibration.
    """
    setup = np.asarray(setup, dtype=object).copy()
    notes = np.full(len(setup), "", dtype=object)
    given = setup != ""
    known_sources = set(model.sources)
    bad = given & ~np.isin(setup, [*known_sources, *calibrations])
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(i, "setup", setup[i], "empty (the calibration of the row's hardware, else an unseen setup), a "
                    "training source (" + ", ".join(sorted(known_sources)) + ") or a calibration of this model ("
                    + (", ".join(sorted(calibrations)) or "none yet: mlflow-energy calibrate") + ")")
    if not calibrations or given.all():
        return setup, notes
    for hw in pd.unique(hardware[~given]):
        names = sorted(name for name, cal in calibrations.items() if hw in cal.hardware)
        m = ~given & (hardware == hw)
        if len(names) == 1:
            setup[m] = names[0]
        elif len(names) > 1:
            notes[m] = (f"{len(names)} calibrations of {hw} ({', '.join(names)}): name one in the setup column; "
                        "answered as an unseen setup")
    return setup, notes


def row_levels(model: EnergyModel, rows: pd.DataFrame, setup: np.ndarray, calibrations: dict[str, Calibration]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(interval level, log half-width, log shift)`` of every row from its (resolved) setup."""
    n = len(rows)
    unseen = unseen_setup_width(model.interval)
    levels = np.full(n, LEVEL_UNSEEN_SETUP, dtype=object)
    half = np.full(n, unseen)
    shift = np.zeros(n)
    given = setup != ""
    if not given.any():
        return levels, half, shift
    src = np.isin(setup, list(model.sources)) & given
    if src.any():
        codes, uniq = pair_codes(rows["model"], rows["hardware"])
        levels = np.where(src, np.array([source_level(model, m, h) for m, h in uniq], dtype=object)[codes], levels)
        half = np.where(src, pd.Series(levels).map(model.interval).fillna(unseen).to_numpy(dtype=float), half)
    fams = rows["model"].to_numpy(dtype=str)
    values = slope_values(rows["height"], rows["width"], rows["steps"], rows["batch_size"])
    for name, cal in calibrations.items():
        m = setup == name
        if m.any():
            s_, h_, l_ = cal.apply(fams[m], values[m])
            shift[m], half[m], levels[m] = s_, h_, l_
    return levels, half, shift


def source_level(model: EnergyModel, family: str, hardware: str) -> str:
    """Level of a row of a training source: ``known`` (the family measured on this GPU),
    ``unseen_family`` (a family the model has never seen) or ``unseen_hardware`` (a known family on
    a GPU it was never measured on)."""
    if model.level_of(family, hardware) == "known":
        return "known"
    return "unseen_hardware" if family in model.families else "unseen_family"
