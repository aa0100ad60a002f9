"""Deprecated import path, kept because the 0.1 README documented it: use :mod:`mlflow_energy.measure`.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     from mlflow_energy.runner import measure
    >>> measure.__module__
    'mlflow_energy.measure.runner'
"""

import warnings

from mlflow_energy.measure.runner import Measurement, PipelineCache, measure

__all__ = ["Measurement", "PipelineCache", "measure"]

warnings.warn(
    "mlflow_energy.runner is deprecated: import from mlflow_energy.measure instead "
    "(from mlflow_energy.measure import measure)",
    DeprecationWarning,
    stacklevel=2,
)
