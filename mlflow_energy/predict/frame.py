"""Predictions for a DataFrame of configs: per-phase energy, the interval, carbon."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import J_PER_KWH
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import FIT_PHASES, EnergyModel
from mlflow_energy.fit.features import log_jpf, log_peak
from mlflow_energy.fit.model import pair_codes
from mlflow_energy.fit.validation import LEVELS
from mlflow_energy.flops.frame import flops_columns
from mlflow_energy.predict.calibrate import LEVEL_UNSEEN_SETUP, Calibration, unseen_setup_half
from mlflow_energy.predict.inputs import FLOPS_EXTRAPOLATION, _fail, input_columns


def predict_frame(model: EnergyModel, df: pd.DataFrame, *, interval_level: str = "auto",
                  calibrations: dict[str, Calibration] | None = None) -> pd.DataFrame:
    """Predict the output columns for the input rows (see the module docstring).

    The interval of each row follows its ``setup`` column (see :func:`row_levels`): empty or
    missing, an unseen setup (``unseen_setup``, calibrated by leaving setups out); a training source, the level
    of its family and GPU (``known``, ``unseen_hardware``, ``unseen_family``); a calibration in
    ``calibrations``, that calibration's corrected value and interval (``calibrated``, or
    ``calibrated_setup`` for a family it has no measurement of). ``interval_level`` other than
    ``auto`` forces one of the model's levels for every row.

    Raises:
        ConfigError: for a bad input row, or FLOPs far outside what the model was fitted on.
    """
    allowed_levels = LEVELS
    if interval_level != "auto" and interval_level not in allowed_levels:
        raise ConfigError("interval_level", interval_level, "auto or one of " + ", ".join(allowed_levels))
    calibrations = calibrations or {}
    cols, extra = input_columns(model, df)
    setup = cols.pop("setup")
    hardware = {**model.hardware, **extra} if extra else model.hardware
    flops = flops_columns(cols)
    # one frame, built once: inputs, FLOPs and each GPU's best-case J/FLOP
    # a row names a training source: that setup's own saturation and levels (a saturating law)
    source = np.where(np.isin(setup, list(model.sources)), setup, "").astype(object)
    flopped = pd.DataFrame({**cols, **flops, "log_jpf": log_jpf(cols["hardware"], hardware),
                            "log_peak": log_peak(cols["hardware"], hardware), "energy_source": source})
    rows = flopped
    lo, hi = model.flops_range
    ft = flopped["flops_total"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(ft) & (ft >= lo / FLOPS_EXTRAPOLATION) & (ft <= hi * FLOPS_EXTRAPOLATION))
    if bad.any():
        i = int(np.argmax(bad))
        r = rows.iloc[i]
        raise _fail(
            i, "FLOPs per image", f"{ft[i]:.3g} ({r['model']} {r['height']}x{r['width']}, {r['steps']} steps)",
            f"within a factor {FLOPS_EXTRAPOLATION:g} of the fitted range {lo:.3g} to {hi:.3g}",
        )
    work = dataclasses.replace(model, hardware=hardware) if extra else model
    logs, law_logs = work.log_predict_both(flopped)
    total = np.exp(logs[schema.PHASE_TOTAL])
    phases = [p for p in FIT_PHASES if p != schema.PHASE_TOTAL]
    if all(p in logs for p in phases):
        parts = np.stack([np.exp(logs[p]) for p in phases])
        parts = parts * (total / parts.sum(axis=0))
    else:  # runs carried a total only: split it by each phase's share of the FLOPs
        flops = np.stack([flopped[f"flops_{p}"].to_numpy(dtype=float) for p in phases])
        parts = flops / flops.sum(axis=0) * total
    levels, half, shift = row_levels(model, rows, setup, calibrations)
    if interval_level != "auto":
        levels = np.full(len(rows), interval_level, dtype=object)
        width = unseen_setup_half(model) if interval_level == LEVEL_UNSEEN_SETUP else \
            model.interval.get(interval_level, unseen_setup_half(model))
        half = np.full(len(rows), width)
    factor = np.exp(shift)
    total, parts = total * factor, parts * factor
    cols = {f"energy_{p}_j": values for p, values in zip(phases, parts, strict=True)}
    cols.update({
        "energy_total_j": total, "energy_total_wh": total / 3600.0,
        "energy_total_j_low": total * np.exp(-half), "energy_total_j_high": total * np.exp(half),
        "co2e_g": total / J_PER_KWH * rows["carbon_intensity_g_per_kwh"].to_numpy(dtype=float),
        "interval_level": levels, "energy_total_j_law": np.exp(law_logs[schema.PHASE_TOTAL]) * factor,
        "energy_scope": np.full(len(rows), model.energy_scope, dtype=object),
    })
    out = pd.DataFrame({c: cols[c] for c in schema.PREDICTOR_OUTPUTS})
    out.attrs["flops_total"] = ft  # for calibration: x of each row
    out.attrs["hardware"] = list(rows["hardware"].unique())
    return out


def row_levels(model: EnergyModel, rows: pd.DataFrame, setup: np.ndarray, calibrations: dict[str, Calibration]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(interval level, log half-width, log shift)`` of every row from its ``setup``.

    Raises:
        ConfigError: a ``setup`` that names neither a training source nor a calibration.
    """
    n = len(rows)
    levels = np.full(n, LEVEL_UNSEEN_SETUP, dtype=object)
    half = np.full(n, unseen_setup_half(model))
    shift = np.zeros(n)
    given = setup != ""
    if not given.any():
        return levels, half, shift
    known_sources = set(model.sources)
    bad = given & ~np.isin(setup, [*known_sources, *calibrations])
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(i, "setup", setup[i], "empty (an unseen setup), a training source ("
                    + ", ".join(sorted(known_sources)) + ") or a calibration of this model ("
                    + (", ".join(sorted(calibrations)) or "none yet: mlflow-energy calibrate") + ")")
    src = np.isin(setup, list(known_sources)) & given
    if src.any():
        codes, uniq = pair_codes(rows["model"], rows["hardware"])
        levels = np.where(src, np.array([source_level(model, m, h) for m, h in uniq], dtype=object)[codes], levels)
        half = np.where(src, pd.Series(levels).map(model.interval).fillna(unseen_setup_half(model))
                        .to_numpy(dtype=float), half)
    fams = rows["model"].to_numpy(dtype=str)
    x = np.log(rows["flops_total"].to_numpy(dtype=float))
    lb = np.log(rows["batch_size"].to_numpy(dtype=float))
    for name, cal in calibrations.items():
        m = setup == name
        if m.any():
            s_, h_, l_ = cal.apply(fams[m], x[m], lb[m])
            shift[m], half[m], levels[m] = s_, h_, l_
    return levels, half, shift


def source_level(model: EnergyModel, family: str, hardware: str) -> str:
    """Level of a row of a training source: ``known`` (the family measured on this GPU),
    ``unseen_family`` (a family the model has never seen) or ``unseen_hardware`` (a known family on
    a GPU it was never measured on)."""
    if model.level_of(family, hardware) == "known":
        return "known"
    return "unseen_hardware" if family in model.families else "unseen_family"
