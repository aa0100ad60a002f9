"""Predicting energy: the registered pyfunc model, its input checks, an analytic stand-in.

Owns: the predictor contract (:data:`mlflow_energy.schema.PREDICTOR_INPUTS` ->
``PREDICTOR_OUTPUTS``), from Python, from ``mlflow.pyfunc.load_model`` and over REST.
Modules:
    inputs    input checks: one clear line per bad value, upper limits, the FLOP range
    frame     :func:`predict_frame`: per-phase energy, the interval and carbon for a DataFrame
    pyfunc    :class:`EnergyPredictor` (``mlflow.pyfunc.PythonModel``), signature, registration
    calibration  a setup's fitted correction (levels, slopes learned within families) and how it applies
    calibrate a setup's corrections from a few measurements (shrunk levels, checked slopes, honest interval)
    seen      what a model may answer: rows outside its training data are refused or extrapolated
    serve     ``mlflow-energy serve``: MLflow's scoring protocol behind strict payload checks (4xx, one line)
    connections  the serve front's deadlines, connection cap and quiet log for hostile clients
    analytic  :class:`AnalyticPredictor`: ``a * FLOPs^b`` with round constants, for tests and benchmarks
May import: the shared ground, ``flops``, ``fit``.

Example:
    >>> import pandas as pd
    >>> from mlflow_energy.predict import AnalyticPredictor
    >>> row = {"model": "sd2", "height": 512, "width": 512, "steps": 20, "guidance_scale": 7.5,
    ...        "precision": "fp16", "batch_size": 1, "hardware": "H100"}
    >>> bool(AnalyticPredictor().predict(pd.DataFrame([row]))["energy_total_j"][0] > 0)
    True
"""

from mlflow_energy._imports import lazy_exports

__all__ = ["AnalyticPredictor", "Calibration", "EnergyPredictor", "calibrate", "fit_calibration", "load_predictor",
           "log_and_register", "predict_frame", "prepare_inputs"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AnalyticPredictor": "analytic",
        "EnergyPredictor": "pyfunc",
        "Calibration": "calibration",
        "calibrate": "calibrate",
        "fit_calibration": "calibrate",
        "load_predictor": "pyfunc",
        "log_and_register": "pyfunc",
        "predict_frame": "frame",
        "prepare_inputs": "inputs",
    },
)
