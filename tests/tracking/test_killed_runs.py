"""A killed ``ingest`` or ``fit`` leaves RUNNING runs; the next ``ingest`` or ``fit`` ends them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking.jsonl import to_record

REPO = Path(__file__).parents[2]


def _env(uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _running(uri: str, experiment: str) -> list:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return [r for r in c.search_runs([exp.experiment_id])] if exp else []


@pytest.mark.slow
def test_a_killed_ingest_leaves_no_run_running(tracking_uri, tmp_path, no_rapl, small_config):
    rec = to_record(measure(small_config(steps=1)))
    path = tmp_path / "m.jsonl"
    with open(path, "w") as fh:
        for i in range(40):  # 40 distinct records (config hash), one measurement
            fh.write(json.dumps({**rec, "tags": {**rec["tags"], schema.T_CONFIG_HASH: f"{i:016x}"}}) + "\n")
    code = "from mlflow_energy.cli import main; main()"
    caught = None
    for _ in range(5):  # stop it while a run is RUNNING (each run lives a fraction of a second)
        proc = subprocess.Popen([sys.executable, "-c", code, "ingest", str(path), "--experiment", "ki"],
                                env=_env(tracking_uri), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(r.info.status == "RUNNING" for r in _running(tracking_uri, "ki")):
                os.killpg(proc.pid, signal.SIGSTOP)
                if any(r.info.status == "RUNNING" for r in _running(tracking_uri, "ki")):
                    caught = proc
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if caught:
            break
    assert caught, "no RUNNING run was caught"
    assert any(r.info.status == "RUNNING" for r in _running(tracking_uri, "ki"))
    result = CliRunner().invoke(main, ["ingest", str(path), "--experiment", "ki"])
    assert result.exit_code == 0, result.output
    assert "RUNNING run(s) of a killed fit or ingest" in result.output
    runs = _running(tracking_uri, "ki")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 40 == len({r.data.tags[schema.T_CONFIG_HASH] for r in finished})


def test_a_killed_fit_run_is_ended_by_the_next_command(tracking_uri, tmp_path):
    """A process that opened a fit run the way ``fit`` does (worker tag, heartbeat) is killed."""
    code = ("import time; from mlflow_energy import schema, tracking; "
            "from mlflow_energy.tracking.stale import Heartbeat, worker_id; "
            "e = tracking.experiment_id('kf'); "
            "r = tracking.start_run(e, kind=schema.KIND_FIT, tags={schema.T_WORKER: worker_id()}); "
            "Heartbeat(r).start(); print(r, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(tracking_uri), stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    run_id = proc.stdout.readline().strip()
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"
    (tmp_path / "none.jsonl").write_text("")
    CliRunner().invoke(main, ["ingest", str(tmp_path / "none.jsonl"), "--experiment", "kf"])  # alive: kept
    assert MlflowClient().get_run(run_id).info.status == "RUNNING"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    result = CliRunner().invoke(main, ["fit", "--experiment", "kf", "--registered-model", "m"])
    assert "ended 1 RUNNING run(s) of a killed fit or ingest" in result.output, result.output
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FAILED" and "stale" in run.data.tags[schema.T_FAILURE]
