"""Shared fixtures: a temporary MLflow tracking store, fake Zeus energy counters, tiny families.

Only hardware counters are faked (an NVML GPU and RAPL CPU packages that Zeus reads):
everything above them, Zeus included, runs for real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(scope="session")
def _empty_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised, empty MLflow SQLite database (creating one runs every migration: slow)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True, scope="session")
def _power_limit_state_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Power-limit journals of the tests go to a temp dir, never to the user's state dir."""
    os.environ["MLFLOW_ENERGY_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))


def _forget_active_experiment() -> None:
    from mlflow.tracking import fluent

    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # mlflow.set_experiment sets it too


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _empty_tracking_db: Path) -> Iterator[str]:
    """A fresh SQLite tracking store in ``tmp_path`` (also the working directory, for artifacts)."""
    import mlflow

    for name in _MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    shutil.copyfile(_empty_tracking_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    _forget_active_experiment()  # an earlier test's mlflow.set_experiment names another store's id
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri("")
        _forget_active_experiment()
        os.environ.pop("MLFLOW_TRACKING_URI", None)


class FakeGPUs:
    """What ``zeus.device.get_gpus()`` returns, for one fake NVIDIA GPU.

    ``mode="power"``: the energy counter grows at ``watts`` with wall time (monotonic).
    ``mode="step"``: each counter read adds ``step_j`` joules (exact, timing-free checks).
    ``interrupt_after``: the N-th counter read raises KeyboardInterrupt (Ctrl-C mid-sweep).
    Power limit (NVML's power management limit, in mW as Zeus passes it): ``limit_w`` now,
    ``limit_range_w`` allowed; ``limit_permission=False`` makes setting it fail as NVML does
    without root. In ``power`` mode the GPU draws ``min(watts, limit)``.
    """

    def __init__(self, watts: float = 150.0, *, mode: str = "power", step_j: float = 1.0,
                 name: str = "NVIDIA Fake GPU 80GB", interrupt_after: int | None = None,
                 limit_w: float = 300.0, limit_range_w: tuple[float, float] = (100.0, 400.0),
                 limit_permission: bool = True) -> None:
        self.limit_mw = int(limit_w * 1000)
        self.limit_range_mw = (int(limit_range_w[0] * 1000), int(limit_range_w[1] * 1000))
        self.limit_permission = limit_permission
        self.limit_history: list[int] = []  # every limit set, in mW
        self.watts = watts
        self.mode = mode
        self.step_mj = int(step_j * 1000)
        self.name = name
        self.interrupt_after = interrupt_after
        self.reads = 0
        self._t0 = time.monotonic()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 1

    def get_name(self, index: int) -> str:
        return self.name

    def supports_get_total_energy_consumption(self, index: int) -> bool:
        return True

    def get_total_energy_consumption(self, index: int) -> int:
        with self._lock:
            self.reads += 1
            if self.interrupt_after is not None and self.reads >= self.interrupt_after:
                raise KeyboardInterrupt
            if self.mode == "step":
                return self.reads * self.step_mj
            return int((time.monotonic() - self._t0) * self.drawn_w * 1000.0)

    @property
    def drawn_w(self) -> float:
        return min(self.watts, self.limit_mw / 1000.0)

    def get_instant_power_usage(self, index: int) -> int:
        return int(self.drawn_w * 1000)

    def get_power_management_limit(self, index: int) -> int:
        return self.limit_mw

    def get_power_management_limit_constraints(self, index: int) -> tuple[int, int]:
        return self.limit_range_mw

    def set_power_management_limit(self, index: int, power_limit_mw: int, block: bool = True) -> None:
        from zeus.device.gpu.common import ZeusGPUInvalidArgError, ZeusGPUNoPermissionError

        if not self.limit_permission:
            raise ZeusGPUNoPermissionError("Insufficient Permissions")
        if not self.limit_range_mw[0] <= power_limit_mw <= self.limit_range_mw[1]:
            raise ZeusGPUInvalidArgError("Invalid Argument")
        self.limit_mw = int(power_limit_mw)
        self.limit_history.append(int(power_limit_mw))


class FakeRAPL:
    """What ``zeus.device.get_cpus()`` returns, for one CPU package drawing ``watts``."""

    def __init__(self, watts: float = 40.0) -> None:
        self.watts = watts
        self._t0 = time.monotonic()

    def __len__(self) -> int:
        return 1

    def get_total_energy_consumption(self, index: int):  # noqa: ANN201 - zeus type
        from zeus.device.cpu.common import CpuDramMeasurement

        return CpuDramMeasurement(cpu_mj=(time.monotonic() - self._t0) * self.watts * 1000.0)

    def supports_get_dram_energy_consumption(self, index: int) -> bool:
        return False


def _no_cpus():
    from zeus.device.cpu.common import ZeusCPUInitError

    raise ZeusCPUInitError("no RAPL in tests")


@pytest.fixture
def no_rapl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zeus sees no RAPL counters (as on most VMs and CI machines)."""
    import zeus.monitor.energy as zeus_energy

    monkeypatch.setattr(zeus_energy, "get_cpus", _no_cpus)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, no_rapl: None) -> FakeGPUs:
    """Zeus sees one NVIDIA GPU whose energy counter grows at 150 W."""
    import zeus.monitor.energy as zeus_energy

    gpus = FakeGPUs()
    monkeypatch.setattr(zeus_energy, "get_gpus", lambda *a, **k: gpus)
    return gpus


@pytest.fixture
def fake_gpu_factory(monkeypatch: pytest.MonkeyPatch, no_rapl: None):
    """Install a :class:`FakeGPUs` built with the given arguments; returns it."""
    import zeus.monitor.energy as zeus_energy

    def install(**kwargs) -> FakeGPUs:
        gpus = FakeGPUs(**kwargs)
        monkeypatch.setattr(zeus_energy, "get_gpus", lambda *a, **k: gpus)
        return gpus

    return install


@pytest.fixture
def fake_rapl(monkeypatch: pytest.MonkeyPatch) -> FakeRAPL:
    """Zeus sees one RAPL CPU package drawing 40 W."""
    import zeus.monitor.energy as zeus_energy

    cpus = FakeRAPL()
    monkeypatch.setattr(zeus_energy, "get_cpus", lambda *a, **k: cpus)
    return cpus


def measurable_tiny_families() -> list[str]:
    """Every tiny family the runner can build and run."""
    from mlflow_energy.families import family_names, get_family

    return [n for n in family_names() if n.startswith("tiny-") and get_family(n).measurable]


def small_config(model: str = "tiny-sd2", **changes):
    """The smallest valid config of a tiny family: 1 step, smallest size, no warm-up."""
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.families import get_family

    fam = get_family(model)
    size = max(fam.pixel_multiple, 32 if fam.pixel_multiple < 32 else fam.pixel_multiple)
    fields = dict(model=model, height=size, width=size, steps=1, repeats=1, warmup=0)
    fields.update(changes)
    return InferenceConfig(**fields)


@pytest.fixture(name="small_config")
def _small_config_fixture():
    """:func:`small_config` as a fixture (tests do not import conftest)."""
    return small_config


@pytest.fixture(scope="session")
def tiny_families() -> list[str]:
    """:func:`measurable_tiny_families`, computed once."""
    return measurable_tiny_families()


@pytest.fixture(scope="session")
def serve_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """``mlflow-energy serve`` of a registered tiny predictor on a loopback port: ``(base URL, PID)``.

    One server for the session, shared by the serving and the bad-input tests.
    """
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "predict"))
    from services import free_port, serving_process
    from test_predictor import NAME, registered_store

    tmp = tmp_path_factory.mktemp("front")
    uri = registered_store(tmp)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(Path(__file__).parents[1])}
    argv = [sys.executable, "-c", "from mlflow_energy.cli import main; main()", "serve", "-m",
            f"models:/{NAME}@champion", "-p", str(port)]
    with serving_process(argv, port=port, cwd=tmp, env=env) as (base, proc):
        yield base, proc.pid


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A filled 64 KB tmpfs at ``tmp_path/disk`` (skipped without root), unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        subprocess.run(["dd", "if=/dev/zero", f"of={disk}/fill", "bs=4k", "count=64"], capture_output=True)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])
