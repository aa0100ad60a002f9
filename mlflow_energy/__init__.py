"""mlflow-energy: measure, predict and cut the energy of diffusion-model image generation.

Example:
    >>> import mlflow_energy
    >>> from mlflow_energy import InferenceConfig
    >>> InferenceConfig(model="tiny-sd2").validate().steps
    4
"""

import os as _os
import sys as _sys

# OpenMP threads that spin while waiting burn CPU time that is not inference: the CPU
# estimate (user CPU time x TDP / cores) would count it as energy, and on a shared machine
# the spinning slows everyone down. libgomp reads the policy once, when torch loads it, so it
# is set here, before anything of this package imports torch; a policy set by the user wins.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _OMP_WAIT_POLICY: str | None = _os.environ["OMP_WAIT_POLICY"]
else:  # torch (and its OpenMP runtime) loaded first: the policy in force is unknown
    _OMP_WAIT_POLICY = None

from mlflow_energy._version import __version__  # noqa: E402
from mlflow_energy.config import InferenceConfig  # noqa: E402
from mlflow_energy.errors import ConfigError, MlflowEnergyError  # noqa: E402

__all__ = ["ConfigError", "InferenceConfig", "MlflowEnergyError", "__version__", "autolog", "calibrate", "flush"]


def autolog(**kwargs: object) -> None:
    """Log the energy of every diffusers pipeline call to MLflow: see :func:`mlflow_energy.autologging.autolog`.

    Example:
        >>> import mlflow_energy
        >>> mlflow_energy.autolog(disable=True)
    """
    from mlflow_energy.autologging.patch import autolog as _autolog

    _autolog(**kwargs)  # type: ignore[arg-type]


def flush(timeout: float | None = 60.0) -> bool:
    """Wait until every autologged call is in MLflow: see :func:`mlflow_energy.autologging.background.flush`.

    Autologged calls are logged in the background (a logger process); call this before reading their runs.
    Returns ``True`` when everything reached MLflow (``False``: kept in the journal, logged later).

    Example:
        >>> import mlflow_energy
        >>> mlflow_energy.flush()
        True
    """
    from mlflow_energy.autologging.background import flush as _flush

    return _flush(timeout)


def calibrate(data: object, **kwargs: object) -> object:
    """Calibrate a registered energy model to your setup: see :func:`mlflow_energy.predict.calibrate.calibrate`.

    Example:
        >>> import mlflow_energy
        >>> mv, cal = mlflow_energy.calibrate("runs.csv", model_uri="models:/energy@champion",  # doctest: +SKIP
        ...                                   registered_model="energy", setup="lab")
    """
    from mlflow_energy.predict.calibrate import calibrate as _calibrate

    return _calibrate(data, **kwargs)  # type: ignore[arg-type]
