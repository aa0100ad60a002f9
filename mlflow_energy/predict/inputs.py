"""Input checks for the predictor: one clear line per bad value (row, column, value, what is allowed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import WORLD_AVERAGE_G_PER_KWH
from mlflow_energy.config import MAX_BATCH, MAX_SIDE, MAX_STEPS, PRECISIONS
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import EnergyModel

FLOPS_EXTRAPOLATION = 100.0  # predict up to this factor outside the fitted FLOP range


def _fail(row: int, field: str, value: Any, allowed: str) -> ConfigError:
    exc = ConfigError(field, value, allowed)
    exc.args = (f"row {row}: {exc}",)
    return exc


def _int_value(v: Any) -> int | None:
    if isinstance(v, (bool, np.bool_)) or v is None:
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return int(v)
    return None


def prepare_inputs(model: EnergyModel, df: pd.DataFrame) -> pd.DataFrame:
    """Check the input rows and return them with canonical ``hardware`` and filled defaults.

    Raises:
        ConfigError: naming the row, the column, the value and what is allowed.
    """
    from mlflow_energy.families import family_names, get_family
    from mlflow_energy.measure.hardware import canonical_hardware, find_gpu

    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    missing = [c for c in schema.PREDICTOR_INPUTS if c not in df.columns]
    if missing:
        raise ConfigError("columns", ", ".join(missing), "the input columns " + ", ".join(schema.PREDICTOR_INPUTS))
    if len(df) == 0:
        raise ConfigError("rows", 0, "at least one input row")
    known = set(family_names())
    out = pd.DataFrame(index=range(len(df)))
    models, heights, widths, steps, scales, precs, batches = [], [], [], [], [], [], []
    for i, row in enumerate(df[list(schema.PREDICTOR_INPUTS)].itertuples(index=False)):
        if row.model not in known:
            raise _fail(i, "model", row.model, "one of " + ", ".join(sorted(known)))
        fam = get_family(row.model)
        mult = fam.pixel_multiple
        for name, value, into in (("height", row.height, heights), ("width", row.width, widths)):
            iv = _int_value(value)
            if iv is None or iv < mult or iv > MAX_SIDE or iv % mult:
                raise _fail(i, name, value, f"a multiple of {mult} between {mult} and {MAX_SIDE} for {row.model}")
            into.append(iv)
        s = _int_value(row.steps)
        if s is None or not 1 <= s <= MAX_STEPS:
            raise _fail(i, "steps", row.steps, f"an integer between 1 and {MAX_STEPS}")
        steps.append(s)
        g = row.guidance_scale
        if g is None or (isinstance(g, float) and math.isnan(g)):
            g = fam.default_guidance_scale
        if isinstance(g, (bool, np.bool_)) or not isinstance(g, (int, float, np.number)) or not (0 <= g <= 100):
            raise _fail(i, "guidance_scale", row.guidance_scale, "a number between 0 and 100")
        scales.append(float(g))
        if row.precision not in PRECISIONS:
            raise _fail(i, "precision", row.precision, "one of " + ", ".join(PRECISIONS))
        precs.append(row.precision)
        b = _int_value(row.batch_size)
        if b is None or not 1 <= b <= MAX_BATCH:
            raise _fail(i, "batch_size", row.batch_size, f"an integer between 1 and {MAX_BATCH}")
        batches.append(b)
        models.append(row.model)
    out["model"], out["height"], out["width"], out["steps"] = models, heights, widths, steps
    out["guidance_scale"], out["precision"], out["batch_size"] = scales, precs, batches

    extra_hw: dict[str, dict[str, float]] = {}
    hw_names = []
    given = {c: df[c].to_numpy() if c in df.columns else None for c in schema.PREDICTOR_HARDWARE_INPUTS}
    for i, raw in enumerate(df["hardware"]):
        if not isinstance(raw, str) or not raw.strip():
            raise _fail(i, "hardware", raw, "a GPU name such as 'H100' or 'NVIDIA A100-SXM4-40GB'")
        name = canonical_hardware(raw)
        if name not in model.hardware and name not in extra_hw:
            specs = {c: given[c][i] if given[c] is not None else None for c in given}
            values = [float(v) if v is not None and not pd.isna(v) else None for v in specs.values()]
            if all(v is not None and v > 0 for v in values):
                extra_hw[name] = dict(zip(("hw_tdp_w", "hw_tflops", "hw_mem_bw_gb_s"), values, strict=True))
            elif find_gpu(raw) is not None:
                extra_hw[name] = find_gpu(raw).descriptors()
            else:
                raise _fail(
                    i, "hardware", raw,
                    "hardware the model was fitted on (" + ", ".join(sorted(model.hardware)) + "), a GPU of the spec "
                    "table, or pass its specs in the columns " + ", ".join(schema.PREDICTOR_HARDWARE_INPUTS),
                )
        hw_names.append(name)
    out["hardware"] = hw_names
    out.attrs["extra_hardware"] = extra_hw
    ci = df["carbon_intensity_g_per_kwh"] if "carbon_intensity_g_per_kwh" in df.columns else None
    intensity = np.full(len(df), WORLD_AVERAGE_G_PER_KWH)
    if ci is not None:
        vals = pd.to_numeric(ci, errors="coerce").to_numpy(dtype=float)
        for i, (v, r) in enumerate(zip(vals, ci, strict=True)):
            if r is not None and not (isinstance(r, float) and math.isnan(r)) and not (math.isfinite(v) and v >= 0):
                raise _fail(i, "carbon_intensity_g_per_kwh", r, "a number >= 0 (gCO2e per kWh)")
        intensity = np.where(np.isnan(vals), WORLD_AVERAGE_G_PER_KWH, vals)
    out["carbon_intensity_g_per_kwh"] = intensity
    return out
