"""The energy predictor as an MLflow pyfunc model, and its registration.

Input columns (the predictor contract, :data:`mlflow_energy.schema.PREDICTOR_INPUTS`): ``model``,
``height``, ``width``, ``steps``, ``guidance_scale``, ``precision``, ``batch_size``, ``hardware``;
optional ``carbon_intensity_g_per_kwh`` (default: world average, 475) and, for a GPU neither in
the training data nor in the spec table, ``hardware_tdp_w``, ``hardware_tflops`` (dense FP16
TFLOP/s) and ``hardware_mem_bw_gb_s``. Output columns: ``energy_text_encode_j``,
``energy_denoise_j``, ``energy_decode_j``, ``energy_total_j``, ``energy_total_wh``,
``energy_total_j_low``, ``energy_total_j_high`` (a 90% prediction interval from cross-validated
residuals), ``co2e_g``. Values are per image. FLOPs are counted inside, by the analytical module.

Phase columns come from the phase laws, scaled to sum to ``energy_total_j``. When the training
runs carried only a whole-pipeline total (the ML.ENERGY data), there are no phase laws: the phase
columns then split the total by each phase's share of the FLOPs (an apportionment, not a fit).

Example:
    >>> import mlflow, pandas as pd
    >>> model = mlflow.pyfunc.load_model("models:/energy@champion")            # doctest: +SKIP
    >>> model.predict(pd.DataFrame([{"model": "sdxl", "height": 1024, "width": 1024, "steps": 30,
    ...     "guidance_scale": 5.0, "precision": "fp16", "batch_size": 1, "hardware": "H100"}]))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.carbon import J_PER_KWH, WORLD_AVERAGE_G_PER_KWH
from mlflow_energy.config import PRECISIONS
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import FIT_PHASES, EnergyModel, FitResult, compute_flops

ARTIFACT_KEY = "energy_model"
MAX_STEPS = 1000
MAX_SIDE = 8192
MAX_BATCH = 1024
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


class EnergyPredictor(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: loads the fitted state from the model's artifact, answers ``predict``.

    Bad input raises :class:`mlflow.exceptions.MlflowException` with ``INVALID_PARAMETER_VALUE``,
    so ``mlflow models serve`` answers HTTP 400 with the message.
    """

    def load_context(self, context: Any) -> None:
        self._model = EnergyModel.from_json(Path(context.artifacts[ARTIFACT_KEY]).read_text())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return predict_frame(self._model, model_input)
        except ConfigError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


def model_signature() -> Any:
    """The pyfunc signature: the contract's columns, the optional ones marked not required."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    types = {"model": "string", "height": "long", "width": "long", "steps": "long", "guidance_scale": "double",
             "precision": "string", "batch_size": "long", "hardware": "string"}
    inputs = [ColSpec(types[c], c) for c in schema.PREDICTOR_INPUTS]
    inputs += [ColSpec("double", c, required=False)
               for c in (*schema.PREDICTOR_OPTIONAL_INPUTS, *schema.PREDICTOR_HARDWARE_INPUTS)]
    outputs = [ColSpec("double", c) for c in schema.PREDICTOR_OUTPUTS]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(result: FitResult) -> pd.DataFrame:
    """Two training configs as the logged input example."""
    f = result.frame.head(2)
    ex = pd.DataFrame({
        "model": f["model"].astype(str), "height": f["height"].astype("int64"), "width": f["width"].astype("int64"),
        "steps": f["steps"].astype("int64"), "guidance_scale": f["guidance_scale"].astype(float),
        "precision": f["precision"].astype(str), "batch_size": f["batch_size"].astype("int64"),
        "hardware": f["hardware_raw"].astype(str),
    })
    ex["guidance_scale"] = ex["guidance_scale"].fillna(7.5)
    return ex.reset_index(drop=True)


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model (the package itself is needed to load it)."""
    from importlib.metadata import version

    reqs = []
    for pkg in ("mlflow-energy", "mlflow", "lightgbm", "pandas", "numpy", "scipy", "torch", "diffusers",
                "transformers"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except Exception:  # pragma: no cover - a package missing from this environment
            reqs.append(pkg)
    return reqs


def log_and_register(result: FitResult, registered_model: str, *, alias: str = schema.REGISTERED_ALIAS_CHAMPION
                     ) -> Any:
    """Log the fitted model into the active run as a pyfunc, register it and point ``alias`` at it.

    Returns the :class:`mlflow.entities.model_registry.ModelVersion`.

    Example:
        >>> with mlflow.start_run():                                           # doctest: +SKIP
        ...     mv = log_and_register(fit_energy_model(runs_frame("exp")), "energy")
        >>> mlflow.pyfunc.load_model(f"models:/energy@champion")              # doctest: +SKIP
    """
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "energy_model.json"
        state.write_text(result.model.to_json())
        info = mlflow.pyfunc.log_model(
            name="energy_model",
            python_model=EnergyPredictor(),
            artifacts={ARTIFACT_KEY: str(state)},
            signature=model_signature(),
            input_example=input_example(result),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model,
        )
    version = info.registered_model_version
    client = MlflowClient()
    client.set_registered_model_alias(registered_model, alias, str(version))
    return client.get_model_version(registered_model, str(version))
