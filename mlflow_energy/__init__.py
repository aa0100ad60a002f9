"""mlflow-energy: measure, predict and cut the energy of diffusion-model image generation.

Example:
    >>> import mlflow_energy
    >>> from mlflow_energy import InferenceConfig
    >>> InferenceConfig(model="tiny-sd2").validate().steps
    4
"""

from mlflow_energy._version import __version__
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError, MlflowEnergyError

__all__ = ["ConfigError", "InferenceConfig", "MlflowEnergyError", "__version__", "autolog"]


def autolog(**kwargs: object) -> None:
    """Log the energy of every diffusers pipeline call to MLflow: see :func:`mlflow_energy.autologging.autolog`.

    Example:
        >>> import mlflow_energy
        >>> mlflow_energy.autolog(disable=True)
    """
    from mlflow_energy.autologging.patch import autolog as _autolog

    _autolog(**kwargs)  # type: ignore[arg-type]
