"""The installed distribution's version, importable from any layer without a cycle."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlflow-energy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
