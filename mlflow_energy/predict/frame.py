"""Predictions for a DataFrame of configs: per-phase energy, the interval, carbon."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import J_PER_KWH
from mlflow_energy.fit import FIT_PHASES, EnergyModel, compute_flops
from mlflow_energy.predict.inputs import FLOPS_EXTRAPOLATION, _fail, prepare_inputs


def predict_frame(model: EnergyModel, df: pd.DataFrame) -> pd.DataFrame:
    """Predict the output columns for the input rows (see the module docstring).

    Raises:
        ConfigError: for a bad input row, or FLOPs far outside what the model was fitted on.
    """
    rows = prepare_inputs(model, df)
    extra = rows.attrs.get("extra_hardware", {})
    rows["energy_source"] = ""
    rows["config_hash"] = ""
    flopped = compute_flops(rows)
    lo, hi = model.flops_range
    ft = flopped["flops_total"].to_numpy(dtype=float)
    for i, f in enumerate(ft):
        if not (math.isfinite(f) and lo / FLOPS_EXTRAPOLATION <= f <= hi * FLOPS_EXTRAPOLATION):
            r = rows.iloc[i]
            raise _fail(
                i, "FLOPs per image", f"{f:.3g} ({r['model']} {r['height']}x{r['width']}, {r['steps']} steps)",
                f"within a factor {FLOPS_EXTRAPOLATION:g} of the fitted range {lo:.3g} to {hi:.3g}",
            )
    work = EnergyModel(model.phases, {**model.hardware, **extra}, model.families, model.flops_range,
                       model.interval, model.sources)
    logs, _ = work.log_predict(flopped)
    total = np.exp(logs[schema.PHASE_TOTAL])
    out = pd.DataFrame(index=range(len(rows)))
    phases = [p for p in FIT_PHASES if p != schema.PHASE_TOTAL]
    if all(p in logs for p in phases):
        parts = np.stack([np.exp(logs[p]) for p in phases])
        parts = parts * (total / parts.sum(axis=0))
    else:  # runs carried a total only: split it by each phase's share of the FLOPs
        flops = np.stack([flopped[f"flops_{p}"].to_numpy(dtype=float) for p in phases])
        parts = flops / flops.sum(axis=0) * total
    for p, values in zip(phases, parts, strict=True):
        out[f"energy_{p}_j"] = values
    out["energy_total_j"] = total
    out["energy_total_wh"] = total / 3600.0
    levels = [model.level_of(m, h) for m, h in zip(rows["model"], rows["hardware"], strict=True)]
    half = np.array([model.interval.get(level, model.interval.get("unseen_hardware", math.log(2.0)))
                     for level in levels])
    out["energy_total_j_low"] = total * np.exp(-half)
    out["energy_total_j_high"] = total * np.exp(half)
    out["co2e_g"] = total / J_PER_KWH * rows["carbon_intensity_g_per_kwh"].to_numpy(dtype=float)
    return out[list(schema.PREDICTOR_OUTPUTS)]
