"""Your run is complete when it ends; first calls do not pay the FLOPs trace on your thread."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

import mlflow_energy
from mlflow_energy import schema
from mlflow_energy.autologging import background, probe, traced

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import CASES, call  # noqa: E402


@pytest.fixture(scope="module")
def sd_pipe():
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    pipe = build_pipeline(InferenceConfig(model="tiny-sd2").validate())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking_uri):
    import mlflow

    monkeypatch.setenv("MLFLOW_ENERGY_STATE_DIR", str(tmp_path / "state"))
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_experiment("run-end")
    yield
    mlflow_energy.autolog(disable=True)


def test_the_run_holds_its_call_when_the_with_block_ends(sd_pipe) -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow_energy.autolog(log_images=False, run_end_timeout=120.0)  # bounded; generous on a busy machine
    with mlflow.start_run() as run:
        sd_pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
    # No flush: the end of the run waited for the call, as MLflow's autologgers leave a run.
    got = MlflowClient().get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics[schema.M_ENERGY_TOTAL] > 0 and got.data.metrics[schema.M_ENERGY_DENOISE] > 0
    assert got.data.params[schema.P_STEPS] == "2"


def test_a_stuck_logger_holds_the_end_of_the_run_only_for_the_bound(sd_pipe) -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow_energy.autolog(log_images=False, run_end_timeout=0.5)
    pid = background.logger_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the logger process takes the entry and never answers
    try:
        with pytest.warns(UserWarning, match=r"1 call\(s\) of run .* not logged within 0.5 s .* in the journal"):
            with mlflow.start_run() as run:
                sd_pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
        assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert mlflow_energy.flush() is True  # the rest is logged once the logger goes on
    assert MlflowClient().get_run(run.info.run_id).data.metrics[schema.M_ENERGY_TOTAL] > 0


def test_a_call_outside_your_run_does_not_wait(sd_pipe, monkeypatch) -> None:
    import mlflow

    mlflow_energy.autolog(silent=True, log_images=False, run_end_timeout=30.0)
    waited: list[str] = []
    real = background.wait_for_run
    monkeypatch.setattr(background, "wait_for_run", lambda run_id, timeout: waited.append(run_id) or real(run_id, 0))
    sd_pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
    with mlflow.start_run():
        pass
    assert mlflow_energy.flush() is True
    (call_run, empty) = sorted(mlflow.search_runs(experiment_names=["run-end"], output_format="list"),
                               key=lambda r: r.info.start_time)
    assert call_run.data.metrics[schema.M_ENERGY_TOTAL] > 0  # logged in the background, as before
    assert waited == [empty.info.run_id]  # only your run's end looked for calls (it had none)


def test_flops_are_traced_after_the_call_returns_and_outside_any_measured_window(monkeypatch) -> None:
    """LDM has no family: its FLOPs are traced from the calls made, by the background logger."""
    case = CASES["LDMTextToImagePipeline"]
    pipe, kwargs = case.build()
    pipe.set_progress_bar_config(disable=True)
    caller = threading.get_ident()
    returned, traces = threading.Event(), []
    real = traced.traced_flops

    def watched(*args, **kwargs):
        returned.wait(timeout=10)  # on the caller's thread this would hold the call
        traces.append((threading.get_ident(), returned.is_set(),
                       all(isinstance(a, probe._OwnWork) for a in probe._ACTIVE)))
        return real(*args, **kwargs)

    monkeypatch.setattr(traced, "traced_flops", watched)
    mlflow_energy.autolog(silent=True, log_images=False)
    call(case, pipe, kwargs)
    returned.set()
    assert mlflow_energy.flush() is True
    assert traces and all(thread != caller and after and idle for thread, after, idle in traces)
    import mlflow

    (run,) = mlflow.search_runs(experiment_names=["run-end"], output_format="list")
    m = run.data.metrics
    assert run.data.tags[schema.T_FLOPS_SOURCE] == schema.FLOPS_TRACED
    assert all(m[schema.flops_key(phase)] > 0 for phase in schema.PHASES)
    assert m[schema.M_FLOPS_TOTAL] == pytest.approx(sum(m[schema.flops_key(p)] for p in schema.PHASES))
