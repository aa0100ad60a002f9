"""The CPU as the estimate sees it: its model name and the OpenMP wait policy torch's threads run with.

Example:
    >>> from mlflow_energy.measure.cpu import cpu_model_name, omp_wait_policy
    >>> isinstance(cpu_model_name(), str), omp_wait_policy() in ("PASSIVE", "ACTIVE", "default", "unknown")
    (True, True)
"""

from __future__ import annotations

import platform


def cpu_model_name() -> str:
    """The CPU model name as the kernel reports it (``/proc/cpuinfo``), else the platform's.

    Example:
        >>> isinstance(cpu_model_name(), str)
        True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def omp_wait_policy() -> str:
    """The OpenMP wait policy torch's threads run with: ``PASSIVE``, ``ACTIVE`` or ``default``.

    ``unknown`` when torch was imported before :mod:`mlflow_energy`: the policy its OpenMP runtime read is not known.

    Example:
        >>> omp_wait_policy() in ("PASSIVE", "ACTIVE", "default", "unknown")
        True
    """
    import mlflow_energy

    value = getattr(mlflow_energy, "_OMP_WAIT_POLICY", None)
    if value is None:
        return "unknown"
    return value.upper() if value.upper() in ("PASSIVE", "ACTIVE") else "default"
