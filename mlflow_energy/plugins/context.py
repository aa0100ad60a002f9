"""A run-context provider: every ``mlflow.start_run()`` is tagged with what would measure its energy.

Tags (``mlflow_energy.*``): ``hardware`` (GPU name from NVML, else the CPU model),
``energy_source`` (``zeus:nvml``, ``zeus:rapl`` or ``estimate:cpu-tdp``: the meter
:func:`~mlflow_energy.measure.meters.auto_meter` would pick), ``driver_version`` (NVIDIA driver,
when there is one). Found once per process, without importing torch or Zeus (NVML through
``pynvml``, RAPL by its sysfs file), so starting a run stays cheap. Tags you pass to
``start_run`` win over these. Opt out with ``MLFLOW_ENERGY_RUN_CONTEXT=false`` (or ``0``, ``no``, ``off``).

Example:
    >>> import mlflow
    >>> with mlflow.start_run() as run:  # doctest: +SKIP
    ...     print(run.data.tags["mlflow_energy.energy_source"])
    estimate:cpu-tdp
"""

from __future__ import annotations

import functools
import glob
import os

from mlflow.tracking.context.abstract_context import RunContextProvider

from mlflow_energy import schema

#: Environment variable that turns the run-context tags off (``false``, ``0``, ``no``, ``off``).
ENV_RUN_CONTEXT = "MLFLOW_ENERGY_RUN_CONTEXT"
_OFF = ("0", "false", "no", "off")
_RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"


def _nvml() -> tuple[str, str] | None:
    """``(gpu 0 name, driver version)`` from NVML, or ``None`` without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() < 1:
            return None
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        driver = pynvml.nvmlSystemGetDriverVersion()
        as_str = [v.decode() if isinstance(v, bytes) else str(v) for v in (name, driver)]
        return as_str[0], as_str[1]
    except Exception:
        return None


def _rapl_readable() -> bool:
    for path in glob.glob(_RAPL_GLOB):
        try:
            with open(path, encoding="ascii") as fh:
                fh.read()
            return True
        except OSError:
            continue
    return False


@functools.lru_cache(maxsize=1)
def machine_tags() -> dict[str, str]:
    """The tags of this machine (computed once per process).

    Example:
        >>> machine_tags()["mlflow_energy.energy_source"] in ("zeus:nvml", "zeus:rapl", "estimate:cpu-tdp")
        True
    """
    from mlflow_energy.measure.meters import SOURCE_ESTIMATE_CPU_TDP, cpu_model_name

    gpu = _nvml()
    if gpu is not None:
        return {schema.T_HARDWARE: gpu[0], schema.T_ENERGY_SOURCE: schema.SOURCE_ZEUS_NVML, schema.T_DRIVER: gpu[1]}
    source = schema.SOURCE_ZEUS_RAPL if _rapl_readable() else SOURCE_ESTIMATE_CPU_TDP
    return {schema.T_HARDWARE: cpu_model_name(), schema.T_ENERGY_SOURCE: source}


class EnergyRunContext(RunContextProvider):
    """MLflow's run-context plugin: adds :func:`machine_tags` to runs started with ``mlflow.start_run``."""

    def in_context(self) -> bool:
        return os.environ.get(ENV_RUN_CONTEXT, "true").strip().lower() not in _OFF

    def tags(self) -> dict[str, str]:
        return dict(machine_tags())
