"""The energy predictor as an MLflow pyfunc model, and its registration.

Input columns (the predictor contract, :data:`mlflow_energy.schema.PREDICTOR_INPUTS`): ``model``,
``height``, ``width``, ``steps``, ``guidance_scale``, ``precision``, ``batch_size``, ``hardware``;
optional ``carbon_intensity_g_per_kwh`` (default: world average, 475) and, for a GPU neither in
the training data nor in the spec table, ``hardware_tdp_w``, ``hardware_tflops`` (dense FP16
TFLOP/s) and ``hardware_mem_bw_gb_s``. Output columns: ``energy_text_encode_j``,
``energy_denoise_j``, ``energy_decode_j``, ``energy_total_j``, ``energy_total_wh``,
``energy_total_j_low``, ``energy_total_j_high`` (a 90% conformal prediction interval from
grouped cross-validated residuals), ``co2e_g``, ``interval_level`` (the calibration the interval
used: ``known``, ``unseen_family``, ``unseen_hardware``), ``energy_total_j_law`` (the law alone,
before the corrector) and ``energy_scope`` (what the joules count: ``total`` or
``dynamic``). Values are per image. Numeric inputs accept any integer or float dtype where
the value fits (``30.0`` steps, guidance ``7``); ``30.5`` steps or a boolean are refused. The
``interval_level`` param (``auto`` by default) picks one calibration for every row, e.g.
``params={"interval_level": "unseen_source"}`` when the caller's runtime or energy scope differs
from the training data's. FLOPs are counted inside, by the analytical module.

Beside the energy: ``energy_dynamic_j`` (+ ``_low``, ``_high``), the GPU energy with idle power x
time subtracted; ``time_total_s`` (+ ``_low``, ``_high``), seconds per image from the time law;
``setup``, the calibration or training source the row used (empty: none); ``note``, why a row is
extrapolated or which calibrations compete. A row outside what the model has seen (families,
precisions, hardware kind, size/steps/batch ranges: the model's metadata ``seen`` and its
version tags ``mlflow_energy.seen.*``) is refused unless the param ``allow_extrapolation`` is true.

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

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import EnergyModel, FitResult
from mlflow_energy.predict.calibration import Calibration, calibrations_from_json, calibrations_to_json
from mlflow_energy.predict.frame import predict_frame
from mlflow_energy.predict.inputs import INPUT_RULES

ARTIFACT_KEY = "energy_model"
CALIBRATIONS_KEY = "calibrations"  # optional artifact: the setups calibrated on this model (JSON)
PARAM_INTERVAL_LEVEL = "interval_level"  # predict param: auto, or one calibration level for every row
PARAM_ALLOW_EXTRAPOLATION = "allow_extrapolation"  # predict param: answer rows outside what the model has seen


class EnergyPredictor(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: loads the fitted state from the model's artifact, answers ``predict``.

    Bad input raises :class:`mlflow.exceptions.MlflowException` with ``INVALID_PARAMETER_VALUE``,
    so ``mlflow models serve`` answers HTTP 400 with the message.
    """

    def load_context(self, context: Any) -> None:
        self._model = EnergyModel.from_json(Path(context.artifacts[ARTIFACT_KEY]).read_text())
        cal = context.artifacts.get(CALIBRATIONS_KEY)
        self._calibrations = calibrations_from_json(Path(cal).read_text()) if cal else {}

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        level = str((params or {}).get(PARAM_INTERVAL_LEVEL, "auto"))
        allow = (params or {}).get(PARAM_ALLOW_EXTRAPOLATION, False)
        if isinstance(allow, str):
            allow = allow.strip().lower() in ("true", "1", "yes")
        try:
            out = predict_frame(self._model, model_input, interval_level=level,
                                calibrations=getattr(self, "_calibrations", {}), allow_extrapolation=bool(allow))
        except ConfigError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        except Exception as exc:  # any other bad payload: one line, a 400, never a stack trace
            line = " ".join(f"{type(exc).__name__}: {exc}".split())[:480]
            raise MlflowException(f"invalid input: {line}", error_code=INVALID_PARAMETER_VALUE) from None
        # the per-row arrays predict_frame leaves for calibration: pandas deep-copies attrs into every
        # frame or column derived from this one (each column read, the server's JSON answer)
        out.attrs.clear()
        return out


def model_signature() -> Any:
    """The pyfunc signature: the contract's columns, the optional ones marked not required."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    # Numbers are declared AnyType: MLflow's own enforcement refuses int64 for a double column and
    # an integral float for a long one; the predictor's checks accept any int or float dtype where
    # the value fits and refuse the rest with one line naming the column (see INPUT_RULES, also
    # logged as the model's metadata).
    inputs = [ColSpec("string", c) if c in ("model", "precision", "hardware") else ColSpec(AnyType(), c)
              for c in schema.PREDICTOR_INPUTS]
    inputs += [ColSpec(AnyType(), c, required=False)
               for c in (*schema.PREDICTOR_OPTIONAL_INPUTS, *schema.PREDICTOR_HARDWARE_INPUTS)]
    outputs = [ColSpec("string" if c in schema.PREDICTOR_STRING_OUTPUTS else "double", c)
               for c in schema.PREDICTOR_OUTPUTS]
    params = ParamSchema([ParamSpec(PARAM_INTERVAL_LEVEL, "string", "auto"),
                          ParamSpec(PARAM_ALLOW_EXTRAPOLATION, "boolean", False)])
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)


def input_example(result: FitResult) -> pd.DataFrame:
    """Two training configs as the logged input example.

    Numbers are floats (``512.0``): the predictor takes integral floats, and MLflow infers an
    integer column as one that cannot hold a missing value (and warns about it).
    """
    f = result.frame.head(2)
    ex = pd.DataFrame({
        "model": f["model"].astype(str), "height": f["height"].astype(float), "width": f["width"].astype(float),
        "steps": f["steps"].astype(float), "guidance_scale": f["guidance_scale"].astype(float),
        "precision": f["precision"].astype(str), "batch_size": f["batch_size"].astype(float),
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


class _NoPickleNotice(logging.Filter):
    """MLflow's CloudPickle notice: the pickled object is an empty :class:`EnergyPredictor` (the
    fitted state is the JSON artifact), so loading it runs this package's code, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "serialized using CloudPickle" not in record.getMessage()


def log_and_register(result: FitResult, registered_model: str, *, alias: str = schema.REGISTERED_ALIAS_CHAMPION,
                     description: str | None = None, tags: dict[str, str] | None = None) -> Any:
    """Log the fitted model into the active run as a pyfunc, register it and point ``alias`` at it.

    The version gets ``description`` (markdown) and ``tags`` (see
    :func:`mlflow_energy.fit.version_card`).

    Returns the :class:`mlflow.entities.model_registry.ModelVersion`.

    Example:
        >>> with mlflow.start_run():                                           # doctest: +SKIP
        ...     mv = log_and_register(fit_energy_model(runs_frame("exp")), "energy")
        >>> mlflow.pyfunc.load_model(f"models:/energy@champion")              # doctest: +SKIP
    """
    return register_model(result.model, input_example(result), registered_model, alias=alias,
                          description=description, tags=tags)


def register_model(model: EnergyModel, example: pd.DataFrame, registered_model: str, *,
                   calibrations: dict[str, Calibration] | None = None,
                   alias: str = schema.REGISTERED_ALIAS_CHAMPION,
                   description: str | None = None, tags: dict[str, str] | None = None) -> Any:
    """Log ``model`` (and its calibrations) into the active run as a pyfunc, register it, set ``alias``.

    The version gets ``description`` (markdown) and ``tags``; registration goes through the client
    (no MLflow prints), and MLflow's CloudPickle notice is kept off the terminal (see
    :class:`_NoPickleNotice`)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    notice = _NoPickleNotice()
    pyfunc_logger.addFilter(notice)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "energy_model.json"
        state.write_text(model.to_json())
        artifacts = {ARTIFACT_KEY: str(state)}
        if calibrations:
            cal = Path(tmp) / "calibrations.json"
            cal.write_text(calibrations_to_json(calibrations))
            artifacts[CALIBRATIONS_KEY] = str(cal)
        try:
            info = mlflow.pyfunc.log_model(
                name="energy_model",
                python_model=EnergyPredictor(),
                artifacts=artifacts,
                signature=model_signature(),
                input_example=example,
                pip_requirements=pip_requirements(),
                metadata={"input_rules": INPUT_RULES, "energy_scope": model.energy_scope,
                          "corrector_used": model.corrector_used, "calibrations": sorted(calibrations or {}),
                          "seen": model.seen, "idle_w": model.idle_source, "time_law": model.time is not None},
            )
        finally:
            pyfunc_logger.removeFilter(notice)
    tags = {**seen_tags(model, calibrations or {}), **(tags or {})}
    client = MlflowClient()
    try:
        client.get_registered_model(registered_model)
    except MlflowException:
        client.create_registered_model(registered_model)
    mv = client.create_model_version(registered_model, info.model_uri, run_id=info.run_id, tags=tags,
                                     description=description, model_id=info.model_id)
    version = mv.version
    client.set_registered_model_alias(registered_model, alias, str(version))
    return client.get_model_version(registered_model, str(version))


def seen_tags(model: EnergyModel, calibrations: dict[str, Calibration]) -> dict[str, str]:
    """Model-version tags of what the model has seen (families, precisions, hardware, ranges) and its calibrations."""
    seen = model.seen
    tags = {schema.T_SEEN_PREFIX + k: ",".join(map(str, v))[:4900] for k, v in seen.items() if v}
    if calibrations:
        tags[schema.T_CALIBRATED_SETUPS] = ", ".join(
            f"{name} ({', '.join(c.hardware)})" for name, c in sorted(calibrations.items()))[:4900]
    return tags


def load_predictor(model_uri: str) -> tuple[EnergyModel, dict[str, Calibration]]:
    """The fitted model and the calibrations of a logged or registered energy model.

    Raises:
        ConfigError: ``model_uri`` does not load, or is not an mlflow-energy model.
    """
    try:
        loaded = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:
        line = " ".join(str(exc).split())[:200]
        raise ConfigError("model_uri", model_uri, f"a logged or registered energy model ({line})") from None
    inner = loaded.unwrap_python_model()
    if not isinstance(inner, EnergyPredictor):
        raise ConfigError("model_uri", model_uri, "an energy model registered by mlflow-energy fit or calibrate")
    return inner._model, dict(getattr(inner, "_calibrations", {}))
