"""Shared fixtures: a temporary MLflow tracking store, fake Zeus energy counters, tiny families.

Only hardware counters are faked (an NVML GPU and RAPL CPU packages that Zeus reads):
everything above them, Zeus included, runs for real.
"""

from __future__ import annotations

import os
import shutil
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
    """

    def __init__(self, watts: float = 150.0, *, mode: str = "power", step_j: float = 1.0,
                 name: str = "NVIDIA Fake GPU 80GB", interrupt_after: int | None = None) -> None:
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
            return int((time.monotonic() - self._t0) * self.watts * 1000.0)

    def get_instant_power_usage(self, index: int) -> int:
        return int(self.watts * 1000)

    def get_power_management_limit(self, index: int) -> int:
        return 300_000


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
