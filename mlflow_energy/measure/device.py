"""The device a config runs on: is it there."""

from __future__ import annotations

from mlflow_energy.errors import ConfigError


def check_device(device: str) -> None:
    """Raise :class:`ConfigError` for a device this machine does not have."""
    import torch

    kind = device.split(":", 1)[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", device, "a device this machine has (no CUDA GPU here: use cpu)")
        _, _, idx = device.partition(":")
        if idx and (not idx.isdigit() or int(idx) >= torch.cuda.device_count()):
            raise ConfigError("device", device, f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device", device, "a device this machine has (no MPS here: use cpu)")
