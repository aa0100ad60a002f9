"""Real services for the tests: an ``mlflow server`` on a loopback port, stopped by PID.

The backend store is a fresh SQLite file, or a fresh PostgreSQL database when
``MLFLOW_ENERGY_TEST_POSTGRES`` names a server (``postgresql://user@127.0.0.1:PORT/postgres``;
``.ci/run`` starts one). Tests import this module by path (``sys.path``), like ``conftest``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

POSTGRES_ENV = "MLFLOW_ENERGY_TEST_POSTGRES"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_postgres_db() -> str | None:
    """A new empty database on the server named by ``$MLFLOW_ENERGY_TEST_POSTGRES``; its URL, or None."""
    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        return None
    import psycopg2

    name = "t_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(admin.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return admin.rsplit("/", 1)[0] + "/" + name


def backend_uri(tmp: Path) -> str:
    """A fresh PostgreSQL database when the CI provides a server, else a fresh SQLite file."""
    return fresh_postgres_db() or f"sqlite:///{tmp}/backend.db"



def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 240) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or never answers."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-3000:] if log.exists() else ''}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_group(proc)
            raise AssertionError(f"server did not answer {url}: {log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a server started with ``start_new_session=True`` by its process group (by PID)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@contextlib.contextmanager
def serving(argv: list[str], *, port: int, cwd: Path, env: dict[str, str], ready: str = "/ping",
            timeout: float = 240) -> Iterator[str]:
    """Run a model server (``argv`` listens on ``port``) until the block ends; yields its base URL.

    The server's output goes to ``cwd/server-<port>.log``; ``PATH`` gets this interpreter's ``bin/``
    (``mlflow models serve`` starts ``uvicorn`` by name) and MLflow's job execution is off.
    """
    with serving_process(argv, port=port, cwd=cwd, env=env, ready=ready, timeout=timeout) as (base, _proc):
        yield base


@contextlib.contextmanager
def serving_process(argv: list[str], *, port: int, cwd: Path, env: dict[str, str], ready: str = "/ping",
                    timeout: float = 240) -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`serving`, yielding the server's process too (to read its memory)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env,
           "PATH": bin_dir + os.pathsep + env.get("PATH", os.environ.get("PATH", ""))}
    log = cwd / f"server-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base + ready, log, timeout)
        yield base, proc
    finally:
        stop_group(proc)


def model_serve_argv(model_uri: str, port: int) -> list[str]:
    """``mlflow models serve`` on loopback, one worker, the current environment."""
    return [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]

class MlflowServer:
    """``mlflow server`` with ``backend`` and artifacts under ``root``; :meth:`stop`/:meth:`start` again."""

    def __init__(self, backend: str, root: Path, port: int | None = None) -> None:
        from mlflow_energy.tracking.retry import database_url

        self.backend, self.root = database_url(backend), root  # `mlflow server` needs the driver named
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> MlflowServer:
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "PATH": str(bin_dir) + os.pathsep + os.environ.get("PATH", "")}
        env.pop("MLFLOW_TRACKING_URI", None)
        log = open(self.root / f"server-{self.port}.log", "a")
        self.proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts",
             "-h", "127.0.0.1", "-p", str(self.port), "--workers", "1"],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_ready(self.proc, f"{self.url}/health", self.root / f"server-{self.port}.log", timeout)
        return self

    def log(self) -> str:
        path = self.root / f"server-{self.port}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        stop_group(self.proc, sig)
        self.proc = None
