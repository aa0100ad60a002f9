"""Measuring one inference config: energy meters, hardware, the phase-split runner.

Owns: turning an :class:`~mlflow_energy.config.InferenceConfig` into a
:class:`Measurement` (energy, time and FLOPs per phase), on any device.
Modules:
    device    whether the machine has the device a config asks for
    cpu       the CPU model name and the OpenMP wait policy (what the CPU estimate depends on)
    meters    :class:`EnergyMeter` and its kinds: Zeus (NVML, RAPL) and the labelled CPU estimate
    hardware  GPU spec table (peak FLOP/s, memory bandwidth, TDP) and hardware-name lookup
    protocol  warm-up until stable, repeats until the 95% interval is tight, robust summary, idle power
    runner    builds the pipeline, times and meters each phase, repeats, returns a Measurement
May import: the shared ground (``config``, ``errors``, ``schema``, ``carbon``), ``families``, ``flops``.
Never imports MLflow: logging a measurement is :mod:`mlflow_energy.tracking`'s job.

Example:
    >>> from mlflow_energy.config import InferenceConfig
    >>> from mlflow_energy.measure import measure
    >>> m = measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=2, repeats=1, warmup=0))
    >>> m.energy_j["total"] > 0, m.energy_source.split(":")[0] in ("zeus", "estimate")
    (True, True)
"""

from mlflow_energy._imports import lazy_exports

__all__ = [
    "EnergyMeter",
    "EstimateMeter",
    "GpuSpec",
    "Measurement",
    "PipelineCache",
    "Protocol",
    "ZeusMeter",
    "auto_meter",
    "build_pipeline",
    "check_device",
    "canonical_hardware",
    "cpu_model_name",
    "find_gpu",
    "gpu_specs",
    "idle_power",
    "lookup_gpu",
    "measure",
    "omp_wait_policy",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "EnergyMeter": "meters",
        "EstimateMeter": "meters",
        "ZeusMeter": "meters",
        "auto_meter": "meters",
        "build_pipeline": "runner",
        "check_device": "device",
        "cpu_model_name": "cpu",
        "omp_wait_policy": "cpu",
        "GpuSpec": "hardware",
        "canonical_hardware": "hardware",
        "find_gpu": "hardware",
        "gpu_specs": "hardware",
        "lookup_gpu": "hardware",
        "Protocol": "protocol",
        "idle_power": "protocol",
        "Measurement": "runner",
        "PipelineCache": "runner",
        "measure": "runner",
    },
)
