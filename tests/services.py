"""Real services for the tests: an ``mlflow server`` on a loopback port, stopped by PID.

The backend store is a fresh SQLite file, or a fresh PostgreSQL database when
``MLFLOW_ENERGY_TEST_POSTGRES`` names a server (``postgresql://user@127.0.0.1:PORT/postgres``;
``.ci/run`` starts one). Tests import this module by path (``sys.path``), like ``conftest``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
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


class MlflowServer:
    """``mlflow server`` with ``backend`` and artifacts under ``root``; :meth:`stop`/:meth:`start` again."""

    def __init__(self, backend: str, root: Path, port: int | None = None) -> None:
        from mlflow_energy.tracking.retry import database_url

        self.backend, self.root = database_url(backend), root  # `mlflow server` needs the driver named
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> MlflowServer:
        import requests

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
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("mlflow server exited: " + self.log()[-3000:])
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("mlflow server did not answer: " + self.log()[-3000:])
            time.sleep(0.5)

    def log(self) -> str:
        path = self.root / f"server-{self.port}.log"
        return path.read_text() if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
