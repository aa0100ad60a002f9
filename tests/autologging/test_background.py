"""The background logger: calls never wait on the tracking server; nothing is lost, nothing logged twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import mlflow_energy
from mlflow_energy import schema
from mlflow_energy.autologging import background, journal, send

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
    assert len([line for line in journal.journal_path().read_text().splitlines() if line]) == 1
    assert mlflow_energy.flush() is True
    (run,) = mlflow.search_runs(experiment_names=["bg"], output_format="list")
    assert run.info.status == "FINISHED" and run.data.metrics[schema.M_ENERGY_TOTAL] > 0
    assert journal.pending_entries() == []
    # Logged by the logger process, with this process's run context (not the logger's own).
    pid = background.logger_pid()
    assert pid is not None and pid != os.getpid()
    assert "logger_process" not in run.data.tags["mlflow.source.name"]
    assert run.data.tags["mlflow.source.name"] == mlflow.tracking.context.registry.resolve_tags()["mlflow.source.name"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_logger_thread_and_process_run_at_the_lowest_cpu_priority(tracking_uri, sd_pipe) -> None:
    """On a busy CPU its logging takes idle time, not time from the next call's computation."""
    import threading

    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    assert mlflow_energy.flush() is True
    (thread,) = [t for t in threading.enumerate() if t.name == "mlflow-energy-autolog"]
    assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == background.NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, background.logger_pid()) == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19  # the caller's thread is untouched


def test_a_logger_process_that_dies_loses_no_call_and_logs_none_twice(tracking_uri, sd_pipe, monkeypatch) -> None:
    """Killed (OOM, a signal): the thread logs what it was given and every later call, each once."""
    import signal

    import mlflow

    mlflow.set_experiment("bg-killed")
    monkeypatch.setattr(background, "_PROC", {"proc": None, "failed": False, "env": None})  # a process of its own
    warnings: list[str] = []
    monkeypatch.setattr(send, "_SAY", [warnings.append])
    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    assert mlflow_energy.flush() is True
    os.kill(background.logger_pid(), signal.SIGKILL)
    for _ in range(2):
        sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    assert mlflow_energy.flush() is True
    runs = mlflow.search_runs(experiment_names=["bg-killed"], output_format="list")
    assert len(runs) == 3 and len({r.data.tags[schema.T_CALL_ID] for r in runs}) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    assert any("logger process ended" in w for w in warnings), warnings
    assert background.logger_pid() is None and journal.pending_entries() == []


def _forked_call(sd_pipe, queue) -> None:
    import torch

    torch.set_num_threads(1)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    queue.put((mlflow_energy.flush(), background.logger_pid()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX's")
def test_a_forked_worker_logs_through_its_own_logger(tracking_uri, sd_pipe) -> None:
    """multiprocessing workers forked after autolog() (one per GPU) must not share the parent's pipe."""
    import multiprocessing

    import mlflow

    mlflow.set_experiment("bg-fork")
    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    parent_logger = background.logger_pid()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    worker = ctx.Process(target=_forked_call, args=(sd_pipe, results))
    worker.start()
    flushed, child_logger = results.get(timeout=120)
    worker.join(timeout=60)
    assert worker.exitcode == 0 and flushed is True
    assert child_logger is not None and child_logger != parent_logger
    assert mlflow_energy.flush() is True and background.logger_pid() == parent_logger
    runs = mlflow.search_runs(experiment_names=["bg-fork"], output_format="list")
    assert len(runs) == 2 and len({r.data.tags[schema.T_CALL_ID] for r in runs}) == 2


def test_a_run_left_running_by_a_stopped_logger_is_finished_once(tracking_uri, sd_pipe) -> None:
    """A logger killed between creating a call's run and ending it: the replay ends that run, no second one."""
    import json

    import mlflow

    mlflow.set_experiment("bg-half")
    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
    assert mlflow_energy.flush() is True
    (line,) = journal.journal_path().read_text().splitlines()
    entry = json.loads(line)
    entry["id"] = "half-" + entry["id"]
    client = mlflow.MlflowClient(entry["uri"])
    half = client.create_run(entry["experiment_id"], tags={schema.T_CALL_ID: entry["id"]})  # what the logger got to
    for _ in range(2):  # a second replay finds it ended and logs nothing
        send.send(entry, replay=True)
    run = client.get_run(half.info.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics[schema.M_ENERGY_TOTAL] > 0
    assert len(client.get_metric_history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)) == 2  # logged once
    assert len(mlflow.search_runs(experiment_names=["bg-half"], output_format="list")) == 2


def test_the_thread_logs_when_chosen(tracking_uri, sd_pipe, monkeypatch) -> None:
    """``MLFLOW_ENERGY_AUTOLOG_LOGGER=thread`` (a tracking store registered in your process only)."""
    import mlflow

    monkeypatch.setattr(background, "_PROC", {"proc": None, "failed": False, "env": None})
    monkeypatch.setenv(background.LOGGER_ENV, "thread")
    mlflow.set_experiment("bg-thread")
    mlflow_energy.autolog(silent=True)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    assert mlflow_energy.flush() is True
    (run,) = mlflow.search_runs(experiment_names=["bg-thread"], output_format="list")
    assert run.info.status == "FINISHED" and background.logger_pid() is None


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
        assert len(journal.pending_entries(server.url)) == 2
        server.start()
        assert mlflow_energy.flush(timeout=120) is True
        assert mlflow_energy.flush(timeout=120) is True  # a second flush logs nothing again
        runs = mlflow.search_runs(experiment_names=["away"], output_format="list")
        assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]  # once each
        assert all(r.data.tags[schema.T_CALL_ID] for r in runs)
    finally:
        server.stop()
