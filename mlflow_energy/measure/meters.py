"""Energy meters: one small interface over Zeus (NVML, RAPL) and a labelled estimate.

A meter measures named windows; several may be open at once (the runner nests the three
phase windows inside one window over the whole inference)::

    meter.begin_window("whole")
    ...
    energy_j, time_s = meter.end_window("whole")

Meters never synchronise the device: the runner does that at every window boundary.

Which meter measures what (the ``energy_source`` tag of every run):

``zeus:nvml``
    :class:`ZeusMeter` on an NVIDIA GPU: the NVML total-energy counter (Volta and newer)
    read at each window boundary; windows shorter than the counter period are approximated
    as instantaneous power x duration (Zeus ``approx_instant_energy``).
``zeus:rapl``
    :class:`ZeusMeter` on a CPU whose RAPL counters are readable (package energy).
``estimate:cpu-tdp``
    :class:`EstimateMeter` where no counter exists (no GPU, no readable RAPL: containers,
    VMs, CI). Power = TDP x CPU utilisation of this process, CodeCarbon's process-mode model;
    see :class:`EstimateMeter` for the constants and their source. An estimate, labelled as
    such, never a silent zero.

Scope (the ``energy_scope`` tag): Zeus meters read the whole GPU board or CPU package, idle
power included (``total``); the estimate attributes power to this process's CPU work only,
so it holds no idle share (``dynamic``).

Example:
    >>> from mlflow_energy.measure.meters import EstimateMeter
    >>> meter = EstimateMeter(tdp_w=85.0)
    >>> meter.begin_window("work")
    >>> _ = sum(i * i for i in range(100_000))
    >>> energy_j, time_s = meter.end_window("work")
    >>> meter.source, energy_j >= 0.0, time_s > 0.0
    ('estimate:cpu-tdp', True, True)
"""

from __future__ import annotations

import abc
import os
import resource
import threading
import time
from typing import Any

from mlflow_energy import schema
from mlflow_energy.errors import MlflowEnergyError
from mlflow_energy.measure._cpuclock import cpu_clocks, window_user_cpu_s
from mlflow_energy.measure.cpu import cpu_model_name, omp_wait_policy

# --------------------------------------------------------------------------- constants
#: CPU power when the CPU model's TDP is unknown: CodeCarbon's ``POWER_CONSTANT = 85`` (W),
#: codecarbon/external/hardware.py, used by CodeCarbon when the CPU model is not in its
#: TDP table. Override with ``EstimateMeter(tdp_w=...)`` or ``MLFLOW_ENERGY_CPU_TDP_W``.
DEFAULT_CPU_TDP_W = 85.0
#: Environment variable that sets the CPU TDP (W) of the estimate.
ENV_CPU_TDP = "MLFLOW_ENERGY_CPU_TDP_W"
#: Label of the estimate (the ``energy_source`` tag).
SOURCE_ESTIMATE_CPU_TDP = schema.SOURCE_ESTIMATE_PREFIX + "cpu-tdp"
#: Seconds between two power samples of the GPU power timeline.
TIMELINE_PERIOD_S = 0.1


class EnergyMeter(abc.ABC):
    """Measures energy and time over named, possibly overlapping, windows.

    Attributes:
        source: the ``energy_source`` label (``zeus:nvml``, ``zeus:rapl``, ``estimate:...``).
        hardware: what is measured, as its driver names it (GPU name or CPU model name).
    """

    source: str
    hardware: str
    #: What the energy of a window holds: ``total`` (idle power included) or ``dynamic``.
    scope: str = "total"
    #: Idle power the meter's model implies (W), or ``None`` when it must be measured.
    idle_power_model_w: float | None = None

    @abc.abstractmethod
    def begin_window(self, name: str) -> None:
        """Open the window ``name`` (unique among the open windows)."""

    @abc.abstractmethod
    def end_window(self, name: str) -> tuple[float, float]:
        """Close the window ``name``; return ``(energy_j, time_s)`` over it."""

    def timeline(self) -> Any | None:
        """Power samples since the last :meth:`reset_timeline` (a DataFrame), or ``None``."""
        return None

    def reset_timeline(self) -> None:
        """Forget the power samples taken so far."""
        return None

    def tags(self) -> dict[str, str]:
        """Extra run tags about the hardware (driver version, power limit, ...)."""
        return {}

    def close(self) -> None:
        """Release background resources (sampling threads)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, hardware={self.hardware!r})"


# --------------------------------------------------------------------------- hardware names
def _gpu_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


def _device_kind(device: str) -> str:
    return device.split(":", 1)[0]


# --------------------------------------------------------------------------- estimate
def user_cpu_seconds() -> float:
    """User-mode CPU seconds of every thread of this process (``getrusage``, microsecond resolution).

    Example:
        >>> user_cpu_seconds() > 0
        True
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


class EstimateMeter(EnergyMeter):
    """Energy estimated as time x a power model, where no energy counter exists.

    The model is CodeCarbon's CPU "process" mode (codecarbon/external/hardware.py,
    ``_get_power_from_cpu_load`` with ``tracking_mode="process"``), counting user-mode CPU
    time only::

        power_w   = tdp_w * utilisation
        utilisation = user CPU seconds of this process in the window / (wall seconds x logical cores)

    clipped to [0, 1]. User CPU seconds are ``getrusage(RUSAGE_SELF).ru_utime`` (every
    thread of this process; a window shorter than the kernel's tick-sampled split reads the
    nanosecond process clock times the user share, see :func:`window_user_cpu_s`); logical cores are ``os.cpu_count()``. So the estimate is
    ``tdp_w / cores x user CPU seconds``: it measures work, not waiting. Two things keep
    waiting out of it. Importing :mod:`mlflow_energy` before torch sets
    ``OMP_WAIT_POLICY=PASSIVE`` (unless set already), so idle OpenMP threads sleep instead
    of spinning; the run tag ``estimate_omp_wait_policy`` records the policy in force. And
    kernel-mode time is left out: with sleeping threads it is the thread pool's futex waits
    and wake-ups (a second intra-op thread on a small model added about 11% of system time
    and 6% of user time in ``benchmarks/cpu_estimate.py``'s configs), not the kernels'
    arithmetic. The estimate holds no idle power (scope ``dynamic``): a process that waits
    costs nothing here. ``tdp_w`` is, in order: the
    ``tdp_w`` argument, the ``MLFLOW_ENERGY_CPU_TDP_W`` environment variable, or
    :data:`DEFAULT_CPU_TDP_W` = 85 W, CodeCarbon's ``POWER_CONSTANT`` for a CPU whose TDP
    it does not know. The estimate counts neither DRAM nor the rest of the machine, and is
    only as good as the TDP: set the TDP of your CPU for better numbers. Runs carry the
    source ``estimate:cpu-tdp``.

    Example:
        >>> meter = EstimateMeter(tdp_w=100.0, cores=4)
        >>> meter.tdp_w, meter.cores
        (100.0, 4)
    """

    source = SOURCE_ESTIMATE_CPU_TDP
    scope = "dynamic"
    idle_power_model_w = 0.0

    def __init__(self, *, tdp_w: float | None = None, cores: int | None = None, hardware: str | None = None) -> None:
        if tdp_w is None:
            env = os.environ.get(ENV_CPU_TDP)
            if env:
                try:
                    tdp_w = float(env)
                except ValueError:
                    from mlflow_energy.errors import ConfigError

                    raise ConfigError(ENV_CPU_TDP, env, "a CPU TDP in watts (a number > 0)") from None
            else:
                tdp_w = DEFAULT_CPU_TDP_W
        if not tdp_w > 0:
            from mlflow_energy.errors import ConfigError

            raise ConfigError("tdp_w", tdp_w, "a CPU TDP in watts (a number > 0)")
        self.tdp_w = float(tdp_w)
        self.cores = int(cores or os.cpu_count() or 1)
        self.hardware = hardware or cpu_model_name()
        self._open: dict[str, tuple[float, tuple[float, float, float]]] = {}

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise ValueError(f"measurement window {name!r} is already open")
        self._open[name] = (time.perf_counter(), cpu_clocks())

    def end_window(self, name: str) -> tuple[float, float]:
        try:
            wall0, cpu0 = self._open.pop(name)
        except KeyError:
            raise ValueError(f"measurement window {name!r} is not open") from None
        wall = time.perf_counter() - wall0
        cpu = window_user_cpu_s(cpu0, cpu_clocks())
        utilisation = min(1.0, max(0.0, cpu / (wall * self.cores))) if wall > 0 else 0.0
        return self.tdp_w * utilisation * wall, wall

    def tags(self) -> dict[str, str]:
        return {schema.T_ESTIMATE_TDP: f"{self.tdp_w:g}", schema.T_ESTIMATE_OMP_WAIT: omp_wait_policy()}



# --------------------------------------------------------------------------- zeus
class _PowerSampler:
    """Samples instantaneous GPU power in a background thread while windows are open."""

    def __init__(self, gpus: Any, index: int, period_s: float) -> None:
        self._gpus = gpus
        self._index = index
        self._period = period_s
        self._rows: list[tuple[float, float, str]] = []
        self._phase = ""
        self._active = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mlflow-energy-power", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._active.wait(timeout=0.5) and not self._stop.is_set():
                try:
                    watts = self._gpus.get_instant_power_usage(self._index) / 1000.0
                except Exception:  # a sample that cannot be read is skipped
                    watts = None
                if watts is not None:
                    with self._lock:
                        self._rows.append((time.time(), watts, self._phase))
                self._stop.wait(self._period)

    def set_state(self, open_windows: list[str]) -> None:
        self._phase = open_windows[-1] if open_windows else ""
        if open_windows:
            self._active.set()
        else:
            self._active.clear()

    def rows(self) -> list[tuple[float, float, str]]:
        with self._lock:
            return list(self._rows)

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()

    def stop(self) -> None:
        self._stop.set()
        self._active.set()
        self._thread.join(timeout=2.0)


class ZeusMeter(EnergyMeter):
    """Energy from Zeus: NVML on an NVIDIA GPU (``zeus:nvml``) or RAPL on a CPU (``zeus:rapl``).

    Wraps one :class:`zeus.monitor.ZeusMonitor` with ``approx_instant_energy=True`` (windows
    shorter than the NVML counter period get power x time instead of zero). Windows never
    synchronise the device themselves (``sync_execution=False``): the runner synchronises
    at every boundary. On a GPU a background thread samples instantaneous power every
    :data:`TIMELINE_PERIOD_S` while a window is open: :meth:`timeline`.

    Args:
        device: ``cuda``/``cuda:N`` measures that GPU; ``cpu`` measures the CPU packages.

    Raises:
        MlflowEnergyError: when Zeus finds nothing to measure on ``device``; use
            :func:`auto_meter`, which falls back to :class:`EstimateMeter`.

    Example:
        >>> from mlflow_energy.measure.meters import ZeusMeter
        >>> meter = ZeusMeter("cuda")  # doctest: +SKIP
        >>> meter.source, meter.hardware  # doctest: +SKIP
        ('zeus:nvml', 'NVIDIA H100 80GB HBM3')
    """

    def __init__(self, device: str = "cuda", *, timeline_period_s: float = TIMELINE_PERIOD_S) -> None:
        import zeus.monitor.energy as zeus_energy
        from zeus.device.gpu.common import ZeusGPUInitError
        from zeus.monitor import ZeusMonitor

        self.device = device
        self._gpu = _device_kind(device) == "cuda"
        if self._gpu:
            index = _gpu_index(device)
            try:
                count = len(zeus_energy.get_gpus())
            except ZeusGPUInitError:
                count = 0
            if index >= count:
                raise MlflowEnergyError(
                    f"Zeus sees {count} GPU(s), so it cannot measure {device!r}: check the NVIDIA driver "
                    "(nvidia-smi) and CUDA_VISIBLE_DEVICES"
                )
            self._monitor = ZeusMonitor(gpu_indices=[index], cpu_indices=[], approx_instant_energy=True)
            self._index = index
            self.source = schema.SOURCE_ZEUS_NVML
            self.hardware = str(self._monitor.gpus.get_name(index))
            self._sampler: _PowerSampler | None = _PowerSampler(self._monitor.gpus, index, timeline_period_s)
        else:
            self._monitor = ZeusMonitor(gpu_indices=[], cpu_indices=None, approx_instant_energy=True)
            if not self._monitor.cpu_indices:
                raise MlflowEnergyError(
                    "Zeus cannot read RAPL energy counters on this CPU (missing, or root-only: "
                    "see /sys/class/powercap/intel-rapl); use auto_meter() for a labelled estimate"
                )
            self._index = -1
            self.source = schema.SOURCE_ZEUS_RAPL
            self.hardware = cpu_model_name()
            self._sampler = None
        self._open: list[str] = []

    def begin_window(self, name: str) -> None:
        self._monitor.begin_window(name, sync_execution=False)
        self._open.append(name)
        if self._sampler is not None:
            self._sampler.set_state(self._open)

    def end_window(self, name: str) -> tuple[float, float]:
        result = self._monitor.end_window(name, sync_execution=False)
        if name in self._open:
            self._open.remove(name)
        if self._sampler is not None:
            self._sampler.set_state(self._open)
        if self._gpu:
            energy = float(result.gpu_energy[self._index])
        else:
            energy = float(sum((result.cpu_energy or {}).values()))
        return energy, float(result.time)

    def timeline(self) -> Any | None:
        if self._sampler is None:
            return None
        import pandas as pd

        rows = self._sampler.rows()
        return pd.DataFrame(rows, columns=["timestamp_s", "power_w", "window"])

    def reset_timeline(self) -> None:
        if self._sampler is not None:
            self._sampler.reset()

    def tags(self) -> dict[str, str]:
        if not self._gpu:
            return {}
        tags: dict[str, str] = {}
        try:
            tags[schema.T_POWER_LIMIT] = f"{self._monitor.gpus.get_power_management_limit(self._index) / 1000.0:g}"
        except Exception:  # not every GPU or driver reports it
            pass
        driver = nvml_driver_version()
        if driver:
            tags[schema.T_DRIVER] = driver
        return tags

    @property
    def gpu_device(self) -> str | None:
        """``cuda:N`` of the GPU this meter measures (whose power limit a config may set), else ``None``."""
        return f"cuda:{self._index}" if self._gpu else None

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def nvml_driver_version() -> str | None:
    """The NVIDIA driver version from NVML, or ``None`` without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None


# --------------------------------------------------------------------------- choice
def auto_meter(device: str = "cpu") -> EnergyMeter:
    """The best meter for ``device``: Zeus where it can measure, else a labelled estimate.

    ``cuda``/``cuda:N``: :class:`ZeusMeter` over NVML (an error if Zeus sees no such GPU).
    ``cpu``: :class:`ZeusMeter` over RAPL where readable, else :class:`EstimateMeter`.
    ``mps`` and anything else: :class:`EstimateMeter`.

    Example:
        >>> meter = auto_meter("cpu")
        >>> meter.source in ("zeus:rapl", "estimate:cpu-tdp")
        True
    """
    kind = _device_kind(device)
    if kind == "cuda":
        return ZeusMeter(device)
    if kind == "cpu":
        try:
            return ZeusMeter("cpu")
        except MlflowEnergyError:
            pass
    return EstimateMeter()
