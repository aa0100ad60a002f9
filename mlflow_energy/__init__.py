"""mlflow-energy: measure, predict and cut the energy of diffusion-model image generation.

Example:
    >>> import mlflow_energy
    >>> from mlflow_energy import InferenceConfig
    >>> InferenceConfig(model="tiny-sd2").validate().steps
    4
"""

from importlib.metadata import PackageNotFoundError, version

from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError, MlflowEnergyError

try:
    __version__ = version("mlflow-energy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["ConfigError", "InferenceConfig", "MlflowEnergyError", "__version__"]
