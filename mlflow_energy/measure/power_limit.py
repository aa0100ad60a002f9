"""The GPU power limit as a config dimension: set through NVML for one measurement, always restored.

The power limit is Zeus's main lever: a lower limit trades latency for energy. A config with
``power_limit_w`` set measures under that limit; this module sets it through Zeus's GPU API
(NVML underneath) before the first warm-up run and puts the previous limit back afterwards.
Before it changes anything it writes the previous limit to a small journal file (written to a
temporary file, fsynced, renamed), so a crash, Ctrl-C or ``kill -9`` in between leaves a record:
the next measurement on that GPU restores it first (or call :func:`restore_pending`). Where the driver or the permissions refuse, the error is one line that says
what to do.

Journal files live in ``$MLFLOW_ENERGY_STATE_DIR`` (default ``~/.local/state/mlflow-energy``),
one per GPU: ``power-limit-gpu<N>.json``.

Example:
    >>> from mlflow_energy.measure.power_limit import applied_power_limit
    >>> with applied_power_limit("cuda:0", 250.0) as limit:  # doctest: +SKIP
    ...     limit.watts, limit.previous_w
    (250.0, 700.0)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_energy.errors import ConfigError, MlflowEnergyError

STATE_DIR_ENV = "MLFLOW_ENERGY_STATE_DIR"


class PowerLimitError(MlflowEnergyError):
    """The GPU's power limit cannot be set or restored here (driver, permissions, another process)."""


@dataclass(frozen=True)
class AppliedLimit:
    """A power limit in force: ``watts`` set on GPU ``index`` (``name``), ``previous_w`` to restore."""

    index: int
    name: str
    watts: float
    previous_w: float


def state_dir() -> Path:
    """Where the power-limit journal files live (``$MLFLOW_ENERGY_STATE_DIR`` or ``~/.local/state/mlflow-energy``)."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path.home() / ".local" / "state" / "mlflow-energy"


def journal_path(index: int) -> Path:
    """The journal file of GPU ``index``."""
    return state_dir() / f"power-limit-gpu{index}.json"


def _gpu_index(device: str) -> int:
    _, _, rest = device.partition(":")
    return int(rest) if rest.isdigit() else 0


def _gpus() -> Any:
    import zeus.monitor.energy as zeus_energy

    return zeus_energy.get_gpus()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_journal(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically and durably (temp file, fsync, rename, fsync the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        data = json.dumps(record, sort_keys=True).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_journal(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        raise PowerLimitError(
            f"the power-limit journal {path} is unreadable: check the GPU's limit with nvidia-smi -q -d POWER, "
            "set it back by hand if needed, then delete the file"
        ) from None
    return record if isinstance(record, dict) else None


def _nvml_error(exc: BaseException, action: str, index: int, name: str) -> PowerLimitError:
    from zeus.device.gpu.common import ZeusGPUNoPermissionError, ZeusGPUNotSupportedError

    if isinstance(exc, ZeusGPUNoPermissionError):
        why = ("the driver refused: no permission. Setting a power limit needs root or CAP_SYS_ADMIN "
               "(run the sweep as root, or leave power_limit_w unset)")
    elif isinstance(exc, ZeusGPUNotSupportedError):
        why = "this GPU or driver does not support setting a power limit (leave power_limit_w unset)"
    else:
        why = f"NVML said: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return PowerLimitError(f"cannot {action} the power limit of GPU {index} ({name}): {why}")


def restore_pending(device: str = "cuda") -> AppliedLimit | None:
    """Restore a limit left behind by a measurement that died (crash, Ctrl-C, ``kill -9``).

    Returns what was restored, or ``None`` when nothing was pending. A journal written by a
    process that is still running is left alone: that process restores its own limit.

    Raises:
        PowerLimitError: when another live process holds the GPU's limit, or NVML refuses.
    """
    index = _gpu_index(device)
    path = journal_path(index)
    record = _read_journal(path)
    if record is None:
        return None
    pid = int(record.get("pid", -1))
    same_host = record.get("host") == socket.gethostname()
    if same_host and pid != os.getpid() and _alive(pid):
        raise PowerLimitError(
            f"GPU {index}'s power limit is held by process {pid} (set to {record.get('set_w')} W at "
            f"{record.get('time')}): wait for it to finish, or if it is gone delete {path}"
        )
    gpus = _gpus()
    name = str(gpus.get_name(index))
    previous_mw = int(round(float(record["previous_w"]) * 1000))
    try:
        gpus.set_power_management_limit(index, previous_mw, True)
    except Exception as exc:
        raise _nvml_error(exc, "restore", index, name) from None
    path.unlink(missing_ok=True)
    return AppliedLimit(index, name, float(record.get("set_w", float("nan"))), float(record["previous_w"]))


def check_power_limit(device: str, watts: float) -> tuple[int, str, float]:
    """``(index, GPU name, current limit in W)`` after checking ``watts`` against the GPU's constraints.

    Raises:
        ConfigError: ``power_limit_w`` outside what the GPU allows (the message gives the range).
        PowerLimitError: no such GPU, or the driver cannot tell.
    """
    from zeus.device.gpu.common import ZeusGPUInitError

    index = _gpu_index(device)
    try:
        gpus = _gpus()
        count = len(gpus)
    except ZeusGPUInitError:
        count = 0
    if index >= count:
        raise PowerLimitError(
            f"cannot set power_limit_w={watts:g} on {device!r}: NVML sees {count} GPU(s) "
            "(check the NVIDIA driver with nvidia-smi, and CUDA_VISIBLE_DEVICES)"
        )
    name = str(gpus.get_name(index))
    try:
        low_mw, high_mw = gpus.get_power_management_limit_constraints(index)
        current_mw = gpus.get_power_management_limit(index)
    except Exception as exc:
        raise _nvml_error(exc, "read", index, name) from None
    if not low_mw <= watts * 1000 <= high_mw:
        raise ConfigError("power_limit_w", watts, f"watts from {low_mw / 1000:g} to {high_mw / 1000:g} on GPU {index} ({name})")
    return index, name, current_mw / 1000.0


@contextlib.contextmanager
def applied_power_limit(device: str, watts: float | None) -> Iterator[AppliedLimit | None]:
    """Set GPU ``device``'s power limit to ``watts`` for the ``with`` block, then restore it.

    ``watts=None`` changes nothing (yields ``None``). The previous limit is journaled before the
    change and the journal is removed once the limit is restored; a limit left behind by a dead
    process is restored first (:func:`restore_pending`).

    Raises:
        ConfigError: ``watts`` outside the GPU's allowed range.
        PowerLimitError: the driver or the permissions refuse (one line, what to do).
    """
    if watts is None:
        yield None
        return
    restore_pending(device)
    index, name, previous_w = check_power_limit(device, watts)
    gpus = _gpus()
    path = journal_path(index)
    if previous_w == watts:
        yield AppliedLimit(index, name, watts, previous_w)
        return
    _write_journal(path, {
        "gpu_index": index, "gpu_name": name, "previous_w": previous_w, "set_w": watts,
        "pid": os.getpid(), "host": socket.gethostname(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    try:
        gpus.set_power_management_limit(index, int(round(watts * 1000)), True)
    except Exception as exc:
        path.unlink(missing_ok=True)  # nothing was changed
        raise _nvml_error(exc, "set", index, name) from None
    try:
        yield AppliedLimit(index, name, watts, previous_w)
    finally:
        try:
            gpus.set_power_management_limit(index, int(round(previous_w * 1000)), True)
        except Exception as exc:
            # The journal stays: the next measurement on this GPU (restore_pending) retries.
            raise _nvml_error(exc, "restore", index, name) from None
        path.unlink(missing_ok=True)
