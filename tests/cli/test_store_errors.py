"""A tracking or artifact store that is away, missing or refusing: one line naming the tracking URI, exit
non-zero, nothing created. Real stores only: SQLite files, an ``mlflow server`` killed, a full tmpfs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services import MlflowServer, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-c", "from mlflow_energy.cli import main; main()", *args],
                          capture_output=True, text=True, env=full, cwd=cwd, timeout=300)


def one_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_predict_without_a_store_names_the_uri_and_creates_nothing(tmp_path):
    proc = cli("predict", "--model-uri", "models:/mlflow-energy@champion", "--model", "tiny-sd2", "--height", "64",
               "--width", "64", "--steps", "4", cwd=tmp_path)
    one_line(proc, 2, "model_uri='models:/mlflow-energy@champion'", f"sqlite:///{tmp_path}/mlflow.db",
             "MLFLOW_TRACKING_URI")
    assert list(tmp_path.iterdir()) == []


def test_predict_of_a_model_not_in_the_store_names_the_store_searched(tracking_uri, tmp_path):
    proc = cli("predict", "--model-uri", "models:/energy@champion", "--model", "tiny-sd2", "--height", "64",
               "--width", "64", "--steps", "4", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking_uri})
    one_line(proc, 2, "not found", f"tracking store searched: {tracking_uri}")


def test_measure_against_a_server_that_is_down_names_it_and_what_to_check(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = cli("measure", "--model", "tiny-sd2", "--height", "32", "--width", "32", "--steps", "1", "--repeats", "1",
               "--warmup", "0", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": url, **FAST_FAIL})
    one_line(proc, 1, url, "connection refused", "is it running?", "MLFLOW_TRACKING_URI")


def _synthetic_experiment(name: str, artifact_location: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fit"))
    try:
        from test_fit import log_runs, synthetic_runs
    finally:
        sys.path.pop(0)
    from mlflow import MlflowClient

    MlflowClient().create_experiment(name, artifact_location=artifact_location)
    log_runs(synthetic_runs(families=("tiny-sd2",), hardware=("NVIDIA H100 80GB HBM3",), sizes=(32, 64),
                            steps=(1, 4), batches=(1,)), name)


FIT = ("--registered-model", "energy", "--bootstrap", "0", "--max-folds", "3", "--no-plots")


def test_fit_with_a_server_artifact_root_on_a_sqlite_uri_is_one_line(tracking_uri, tmp_path):
    _synthetic_experiment("proxied", "mlflow-artifacts:/proxied")
    proc = cli("fit", "--experiment", "proxied", *FIT, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking_uri})
    one_line(proc, 1, "mlflow-artifacts:", tracking_uri, "MLFLOW_TRACKING_URI")


def test_fit_with_a_full_artifact_store_is_one_line(tracking_uri, tmp_path, full_disk):
    _synthetic_experiment("full", str(full_disk / "artifacts"))
    proc = cli("fit", "--experiment", "full", *FIT, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking_uri})
    one_line(proc, 1, "No space left on device", tracking_uri)


@pytest.mark.slow
def test_a_sweep_that_ends_with_the_server_away_says_so_in_one_line(tmp_path, monkeypatch, no_rapl, capsys,
                                                                   _empty_tracking_db):
    """The server is killed after the first config and stays away: the sweep keeps its measurements in the
    journal and ends with its own error line, not a traceback of the address it prints last."""
    import shutil

    import mlflow
    from click.testing import CliRunner

    import mlflow_energy.measure.runner as runner
    from mlflow_energy.cli import main

    shutil.copyfile(_empty_tracking_db, tmp_path / "backend.db")
    server = MlflowServer(f"sqlite:///{tmp_path}/backend.db", tmp_path).start()
    for name, value in {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_ENERGY_FINISH_WAIT_S": "2", **FAST_FAIL}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(server.url)
    real = runner.measure

    def measure_then_kill_the_server(*args, **kwargs):
        m = real(*args, **kwargs)
        server.stop(signal.SIGKILL)  # gone for good after the first config
        return m

    monkeypatch.setattr(runner, "measure", measure_then_kill_the_server)
    spec = tmp_path / "away.yaml"
    spec.write_text(yaml.safe_dump({"name": "away", "device": "cpu", "repeats": 1, "warmup": 0,
                                    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1, 2]}}))
    try:
        result = CliRunner().invoke(main, ["sweep", str(spec), "--experiment", "away", "--no-progress",
                                           "--journal", str(tmp_path / "journal.jsonl")])
    finally:
        mlflow.set_tracking_uri("")
        server.stop()
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    assert server.url in errors[0] and "is it running?" in errors[0] and "journal" in errors[0], result.output
    assert "2 configs: 2 measured" in result.output


@pytest.mark.slow
def test_fit_through_a_server_whose_artifact_store_is_full_is_one_line(tmp_path, full_disk, _empty_tracking_db,
                                                                        monkeypatch):
    import shutil

    import mlflow

    os.symlink(full_disk, tmp_path / "artifacts")  # the server's --artifacts-destination
    shutil.copyfile(_empty_tracking_db, tmp_path / "backend.db")
    server = MlflowServer(f"sqlite:///{tmp_path}/backend.db", tmp_path).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        mlflow.set_tracking_uri(server.url)
        _synthetic_experiment("served", "mlflow-artifacts:/served")
        proc = cli("fit", "--experiment", "served", *FIT, cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": server.url, **FAST_FAIL})
        one_line(proc, 1, server.url, "artifact store", "full or read-only")
    finally:
        mlflow.set_tracking_uri("")
        server.stop()
