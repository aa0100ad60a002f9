"""Predictions for a DataFrame of configs: per-phase energy, the interval, carbon."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import J_PER_KWH
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import FIT_PHASES, EnergyModel
from mlflow_energy.fit.features import log_jpf
from mlflow_energy.fit.model import pair_codes
from mlflow_energy.fit.validation import LEVELS
from mlflow_energy.flops.frame import flops_columns
from mlflow_energy.predict.inputs import FLOPS_EXTRAPOLATION, _fail, input_columns


def predict_frame(model: EnergyModel, df: pd.DataFrame, *, interval_level: str = "auto") -> pd.DataFrame:
    """Predict the output columns for the input rows (see the module docstring).

    ``interval_level``: ``auto`` (from each row's family and GPU: ``known``, ``unseen_family`` or
    ``unseen_hardware``) or one level for every row, e.g. ``unseen_source`` when the caller's setup
    (runtime, energy scope, measurement) differs from the training data.

    Raises:
        ConfigError: for a bad input row, or FLOPs far outside what the model was fitted on.
    """
    if interval_level != "auto" and interval_level not in LEVELS:
        raise ConfigError("interval_level", interval_level, "auto or one of " + ", ".join(LEVELS))
    cols, extra = input_columns(model, df)
    hardware = {**model.hardware, **extra} if extra else model.hardware
    flops = flops_columns(cols)
    # one frame, built once: inputs, FLOPs and each GPU's best-case J/FLOP
    flopped = pd.DataFrame({**cols, **flops, "log_jpf": log_jpf(cols["hardware"], hardware)})
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
    codes, uniq = pair_codes(rows["model"], rows["hardware"])
    levels = np.array([model.level_of(m, h) for m, h in uniq], dtype=object)[codes]
    if interval_level != "auto":
        levels = np.full(len(rows), interval_level, dtype=object)
    fallback = model.interval.get("unseen_hardware", math.log(2.0))
    half = pd.Series(levels).map(model.interval).fillna(fallback).to_numpy(dtype=float)
    cols = {f"energy_{p}_j": values for p, values in zip(phases, parts, strict=True)}
    cols.update({
        "energy_total_j": total, "energy_total_wh": total / 3600.0,
        "energy_total_j_low": total * np.exp(-half), "energy_total_j_high": total * np.exp(half),
        "co2e_g": total / J_PER_KWH * rows["carbon_intensity_g_per_kwh"].to_numpy(dtype=float),
        "interval_level": levels, "energy_total_j_law": np.exp(law_logs[schema.PHASE_TOTAL]),
        "energy_scope": np.full(len(rows), model.energy_scope, dtype=object),
    })
    return pd.DataFrame({c: cols[c] for c in schema.PREDICTOR_OUTPUTS})
