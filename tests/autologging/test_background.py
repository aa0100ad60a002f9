"""The background logger: calls never wait on the tracking server; nothing is lost, nothing logged twice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import mlflow_energy
from mlflow_energy import schema
from mlflow_energy.autologging import background

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services import MlflowServer  # noqa: E402


@pytest.fixture(scope="module")
def sd_pipe():
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    return build_pipeline(InferenceConfig(model="tiny-sd2").validate())


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ENERGY_STATE_DIR", str(tmp_path / "state"))
    while mlflow.active_run() is not None:
        mlflow.end_run()
    yield
    mlflow_energy.autolog(disable=True)
    mlflow.set_tracking_uri("")


def test_the_caller_queues_and_a_flush_logs(tracking_uri, sd_pipe) -> None:
    import mlflow

    mlflow.set_experiment("bg")
    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
    # The call is in the journal when the pipeline returns, before anything reached MLflow.
    assert len([line for line in background.journal_path().read_text().splitlines() if line]) == 1
    assert mlflow_energy.flush() is True
    (run,) = mlflow.search_runs(experiment_names=["bg"], output_format="list")
    assert run.info.status == "FINISHED" and run.data.metrics[schema.M_ENERGY_TOTAL] > 0
    assert background.pending_entries() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_logger_thread_runs_at_the_lowest_cpu_priority(tracking_uri, sd_pipe) -> None:
    """On a busy CPU its logging takes idle time, not time from the next call's computation."""
    import os
    import threading

    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    assert mlflow_energy.flush() is True
    (thread,) = [t for t in threading.enumerate() if t.name == "mlflow-energy-autolog"]
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == background.NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19  # the caller's thread is untouched


@pytest.mark.slow
def test_a_server_that_is_away_holds_no_call_and_loses_nothing(tmp_path: Path, sd_pipe, monkeypatch) -> None:
    import mlflow

    server = MlflowServer(f"sqlite:///{tmp_path}/backend.db", tmp_path).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # the project's bounded retries remain
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        mlflow.set_tracking_uri(server.url)
        mlflow.set_experiment("away")
        server.stop()  # the server goes away; the experiment id is known locally
        mlflow_energy.autolog(silent=True)
        out = sd_pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
        assert out.images  # the user's call returned its image
        with pytest.raises(ValueError):  # a failing call raises at once too
            sd_pipe("a red bicycle", num_inference_steps=2, height=33, width=32)
        assert mlflow_energy.flush(timeout=120) is False  # nothing could be logged: all kept
        assert len(background.pending_entries(server.url)) == 2
        server.start()
        assert mlflow_energy.flush(timeout=120) is True
        assert mlflow_energy.flush(timeout=120) is True  # a second flush logs nothing again
        runs = mlflow.search_runs(experiment_names=["away"], output_format="list")
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # once each
        assert all(r.data.tags[schema.T_CALL_ID] for r in runs)
    finally:
        server.stop()
