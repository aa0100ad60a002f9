"""Input checks for the predictor: one clear line per bad value (row, column, value, what is allowed).

Numbers are accepted in any integer or float dtype where the value fits: an integral float for
``height``, ``width``, ``steps`` and ``batch_size`` (``30.0`` is 30 steps), an integer for
``guidance_scale``. A non-integral value for an integer column, a boolean, a string or a
missing value (except ``guidance_scale``, which then takes the family default) is refused,
naming the row, the column and the value. Every check is vectorised: no Python per row.

Example:
    >>> import numpy as np, pandas as pd
    >>> integral_column(pd.Series([30.0, 50]), "steps", 1, 1000).tolist()
    [30, 50]
    >>> integral_column(pd.Series([30.5]), "steps", 1, 1000)
    Traceback (most recent call last):
    ...
    mlflow_energy.errors.ConfigError: row 0: steps=30.5 is not allowed: expected an integer between 1 and 1000
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import WORLD_AVERAGE_G_PER_KWH
from mlflow_energy.config import MAX_BATCH, MAX_GUIDANCE, MAX_SIDE, MAX_STEPS, PRECISIONS
from mlflow_energy.errors import ConfigError, MissingColumnError
from mlflow_energy.fit import EnergyModel

FLOPS_EXTRAPOLATION = 100.0  # predict up to this factor outside the fitted FLOP range
#: Upper bounds of the caller's numbers that are not configs (beyond any real board or grid).
MAX_CARBON_G_PER_KWH = 3000.0
HARDWARE_LIMITS: dict[str, tuple[float, str]] = {
    "hardware_tdp_w": (5000.0, "W"), "hardware_tflops": (100000.0, "dense FP16 TFLOP/s"),
    "hardware_mem_bw_gb_s": (100000.0, "GB/s"),
}

#: What each numeric input accepts (also written into the logged model's metadata).
INPUT_RULES: dict[str, str] = {
    "height": f"integral number (any int or float dtype; 1024.0 is 1024), a multiple of the family's pixel "
              f"multiple, at most {MAX_SIDE}",
    "width": f"integral number (any int or float dtype), a multiple of the family's pixel multiple, at most {MAX_SIDE}",
    "steps": f"integral number (any int or float dtype; 30.5 is refused), 1 to {MAX_STEPS}",
    "batch_size": f"integral number (any int or float dtype), 1 to {MAX_BATCH}",
    "guidance_scale": f"real number (any int or float dtype), 0 to {MAX_GUIDANCE:g}; missing: the family default",
    "carbon_intensity_g_per_kwh": f"real number 0 to {MAX_CARBON_G_PER_KWH:g} (gCO2e per kWh); missing: the world "
                                  "average",
    "hardware_tdp_w": "real number > 0 up to 5000 (W), with hardware_tflops and hardware_mem_bw_gb_s, for a GPU "
                      "outside the spec table",
    "cfg_passes": "1 or 2 denoiser passes per step; missing: what pipe(prompt) does for the family",
    "setup": "a training source or a calibration of this model; missing: an unseen setup (its leave-one-setup-out interval)",
    "booleans": "refused in every numeric column",
}


def _fail(row: int, field: str, value: Any, allowed: str) -> ConfigError:
    exc = ConfigError(field, value, allowed)
    exc.args = (f"row {row}: {exc}",)
    return exc


def _first_bad(bad: np.ndarray, series: pd.Series, field: str, allowed: str) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        value = series.iloc[i]
        raise _fail(i, field, value.item() if isinstance(value, np.generic) else value, allowed)


def _as_float(series: pd.Series, field: str, allowed: str) -> np.ndarray:
    """A numeric column as float64 (NaN where missing); booleans and strings refused, naming the first."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        _first_bad(np.ones(len(series), dtype=bool), series, field, allowed)
    if pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype=float, na_value=np.nan)
    # object columns (mixed JSON values, None): refuse booleans, strings and anything not a number
    not_number = series.map(
        lambda v: v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)))
    ).to_numpy(dtype=bool)
    _first_bad(not_number, series, field, allowed)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def integral_column(series: pd.Series, field: str, low: float, high: float, allowed: str | None = None) -> np.ndarray:
    """An integer column from any int or float dtype; non-integral, missing or out-of-range values refused."""
    allowed = allowed or f"an integer between {low:g} and {high:g}"
    values = _as_float(series, field, allowed)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < low) | (values > high)
    _first_bad(bad, series, field, allowed)
    return values.astype(np.int64)


def _setup_column(df: pd.DataFrame) -> np.ndarray:
    """The ``setup`` column as strings ("" where missing: an unseen setup)."""
    if "setup" not in df.columns:
        return np.full(len(df), "", dtype=object)
    s = df["setup"]
    ok = s.map(lambda v: v is None or isinstance(v, str) or (isinstance(v, float) and np.isnan(v))).to_numpy(bool)
    _first_bad(~ok, s, "setup", "a setup name (a training source or a calibration) or empty")
    return s.map(lambda v: v.strip() if isinstance(v, str) else "").to_numpy(dtype=object)


def prepare_inputs(model: EnergyModel, df: pd.DataFrame) -> pd.DataFrame:
    """Check the input rows and return them with canonical ``hardware`` and filled defaults.

    The frame's ``attrs["extra_hardware"]`` holds the descriptors of GPUs the model was not
    fitted on (from the spec table or the caller's columns).

    Raises:
        ConfigError: naming the row, the column, the value and what is allowed.
    """
    cols, extra_hw = input_columns(model, df)
    out = pd.DataFrame(cols)
    out.attrs["extra_hardware"] = extra_hw
    return out


def input_columns(model: EnergyModel, df: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """:func:`prepare_inputs` as a dict of columns and the extra hardware descriptors (no DataFrame built)."""
    from mlflow_energy.families import family_names, get_family
    from mlflow_energy.measure.hardware import canonical_hardware, find_gpu

    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    missing = [c for c in schema.PREDICTOR_INPUTS if c not in df.columns]
    if missing:
        raise MissingColumnError(missing, "the input columns " + ", ".join(schema.PREDICTOR_INPUTS))
    n = len(df)
    if n == 0:
        raise ConfigError("rows", 0, "at least one input row")
    df = df.reset_index(drop=True)
    known = set(family_names())
    codes, names = pd.factorize(df["model"], use_na_sentinel=False)
    name_ok = np.array([isinstance(m, str) and m in known for m in names], dtype=bool)
    _first_bad(~name_ok[codes], df["model"], "model", "one of " + ", ".join(sorted(known)))
    fams = [get_family(m) for m in names]
    multiple = np.array([f.pixel_multiple for f in fams], dtype=np.int64)[codes]
    default_g = np.array([f.default_guidance_scale for f in fams], dtype=float)[codes]

    cols: dict[str, Any] = {"model": df["model"].astype(str).to_numpy()}
    for side in ("height", "width"):
        values = integral_column(df[side], side, 1, MAX_SIDE, f"a positive multiple of the pixel multiple up to "
                                 f"{MAX_SIDE}")
        bad = (values < multiple) | (values % multiple != 0)
        if bad.any():
            i = int(np.argmax(bad))
            value = df[side].iloc[i]
            raise _fail(i, side, value.item() if isinstance(value, np.generic) else value, f"a multiple of {multiple[i]} between {multiple[i]} and "
                        f"{MAX_SIDE} for {cols['model'][i]}")
        cols[side] = values
    cols["steps"] = integral_column(df["steps"], "steps", 1, MAX_STEPS)
    g_allowed = f"a number between 0 and {MAX_GUIDANCE:g}"
    g = _as_float(df["guidance_scale"], "guidance_scale", g_allowed)
    g = np.where(np.isnan(g), default_g, g)
    _first_bad(~np.isfinite(g) | (g < 0) | (g > MAX_GUIDANCE), df["guidance_scale"], "guidance_scale", g_allowed)
    cols["guidance_scale"] = g
    prec = df["precision"]
    _first_bad(~prec.isin(PRECISIONS).to_numpy(), prec, "precision", "one of " + ", ".join(PRECISIONS))
    cols["precision"] = prec.astype(str).to_numpy()
    cols["batch_size"] = integral_column(df["batch_size"], "batch_size", 1, MAX_BATCH)
    if "cfg_passes" in df.columns:  # NaN: what pipe(prompt) does (the FLOP counter fills it per family)
        cp = _as_float(df["cfg_passes"], "cfg_passes", "1 or 2 (missing: what pipe(prompt) does)")
        _first_bad(~np.isnan(cp) & ~np.isin(cp, (1.0, 2.0)), df["cfg_passes"], "cfg_passes",
                   "1 or 2 (missing: what pipe(prompt) does)")
        cols["cfg_passes"] = cp
    cols["setup"] = _setup_column(df)

    # hardware: each distinct name is resolved once
    hw = df["hardware"]
    hw_codes, hw_raw = pd.factorize(hw, use_na_sentinel=False)
    raw_ok = np.array([isinstance(h, str) and bool(h.strip()) for h in hw_raw], dtype=bool)
    _first_bad(~raw_ok[hw_codes], hw, "hardware", "a GPU name such as 'H100' or 'NVIDIA A100-SXM4-40GB'")
    canonical = [canonical_hardware(h) for h in hw_raw]
    extra_hw: dict[str, dict[str, float]] = {}
    given = {c: np.full(n, np.nan) for c in schema.PREDICTOR_HARDWARE_INPUTS}
    for c, (top, unit) in HARDWARE_LIMITS.items():
        if c in df.columns:
            allowed = f"a number > 0 and at most {top:g} ({unit}), or missing"
            values = _as_float(df[c], c, allowed)
            _first_bad(~np.isnan(values) & ~((values > 0) & (values <= top)), df[c], c, allowed)
            given[c] = values
    for k, (raw, name) in enumerate(zip(hw_raw, canonical, strict=True)):
        if name in model.hardware or name in extra_hw:
            continue
        i = int(np.argmax(hw_codes == k))
        values = [float(given[c][i]) for c in schema.PREDICTOR_HARDWARE_INPUTS]
        if all(np.isfinite(v) and v > 0 for v in values):
            extra_hw[name] = dict(zip(("hw_tdp_w", "hw_tflops", "hw_mem_bw_gb_s"), values, strict=True))
        elif (spec := find_gpu(raw)) is not None:
            extra_hw[name] = spec.descriptors()
        else:
            raise _fail(
                i, "hardware", raw,
                "hardware the model was fitted on (" + ", ".join(sorted(model.hardware)) + "), a GPU of the spec "
                "table, or pass its specs in the columns " + ", ".join(schema.PREDICTOR_HARDWARE_INPUTS),
            )
    cols["hardware"] = np.asarray(canonical, dtype=object)[hw_codes]

    intensity = np.full(n, WORLD_AVERAGE_G_PER_KWH)
    if "carbon_intensity_g_per_kwh" in df.columns:
        ci = df["carbon_intensity_g_per_kwh"]
        allowed = f"a number from 0 to {MAX_CARBON_G_PER_KWH:g} (gCO2e per kWh)"
        vals = _as_float(ci, "carbon_intensity_g_per_kwh", allowed)
        _first_bad(~np.isnan(vals) & ~((vals >= 0) & (vals <= MAX_CARBON_G_PER_KWH)), ci, "carbon_intensity_g_per_kwh",
                   allowed)
        intensity = np.where(np.isnan(vals), WORLD_AVERAGE_G_PER_KWH, vals)
    cols["carbon_intensity_g_per_kwh"] = intensity
    return cols, extra_hw
