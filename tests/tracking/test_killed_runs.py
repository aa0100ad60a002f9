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


def _polled(uri: str, experiment: str) -> list:
    """:func:`_running` while another process writes the SQLite file: a locked read is no answer yet."""
    try:
        return _running(uri, experiment)
    except Exception as exc:
        if "database is locked" in str(exc):
            return []
        raise


@pytest.mark.slow
def test_a_killed_ingest_leaves_no_run_running(tracking_uri, tmp_path, no_rapl, small_config):
    rec = to_record(measure(small_config(steps=1)))
    path = tmp_path / "m.jsonl"
    with open(path, "w") as fh:
        for i in range(40):  # 40 distinct records (config hash), one measurement
            fh.write(json.dumps({**rec, "tags": {**rec["tags"], schema.T_CONFIG_HASH: f"{i:016x}"}}) + "\n")
    code = "from mlflow_energy.cli import main; main()"
    caught = None
    for _ in range(5):  # kill it while a run is RUNNING (each run lives a fraction of a second)
        proc = subprocess.Popen([sys.executable, "-c", code, "ingest", str(path), "--experiment", "ki"],
                                env=_env(tracking_uri), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any(r.info.status == "RUNNING" for r in _polled(tracking_uri, "ki")):
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its SQLite lock goes with it
        proc.wait()
        if any(r.info.status == "RUNNING" for r in _running(tracking_uri, "ki")):
            caught = proc  # the run it had open is left RUNNING
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


def _kill_while_running(argv: list[str], uri: str, experiment: str, ignore: set[str], tries: int = 5) -> str | None:
    """Run ``argv`` and SIGKILL it while one of its runs (not in ``ignore``) is RUNNING; that run (None: none caught)."""

    def running(runs: list) -> list[str]:
        return [r.info.run_id for r in runs if r.info.status == "RUNNING" and r.info.run_id not in ignore]

    for _ in range(tries):
        proc = subprocess.Popen(argv, env=_env(uri), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if running(_polled(uri, experiment)):
                break
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its SQLite lock goes with it
        proc.wait()
        left = running(_running(uri, experiment))
        if left:
            return left[0]
    return None


@pytest.mark.slow
@pytest.mark.parametrize("next_step", ["ingest", "sweep recovery"])
def test_a_killed_journal_ingest_leaves_no_run_running_whatever_its_parent(tracking_uri, tmp_path, no_rapl,
                                                                           small_config, next_step):
    """A journal's records are nested under their sweep run (here one still RUNNING, as a live sweep's
    is); ``ingest`` of the journal is killed while it logs one: the next ingest, or the next sweep's
    stale recovery, ends that run, though its parent is alive."""
    from mlflow_energy.tracking import experiment_id, start_run
    from mlflow_energy.tracking.journal import tracking_digest
    from mlflow_energy.tracking.stale import recover_stale

    exp = experiment_id("kj")
    parent = start_run(exp, kind=schema.KIND_SWEEP, tags={schema.T_SWEEP_SPEC: "kj"})  # no worker tag: live
    rec = to_record(measure(small_config(steps=1)))
    path = tmp_path / "journal.jsonl"
    with open(path, "w") as fh:
        for i in range(40):
            fh.write(json.dumps({**rec, "tags": {**rec["tags"], schema.T_CONFIG_HASH: f"{i:016x}"},
                                 "experiment": "kj", "parent_run_id": parent, "tracking": tracking_digest()}) + "\n")
    code = "from mlflow_energy.cli import main; main()"
    killed = _kill_while_running([sys.executable, "-c", code, "ingest", str(path)], tracking_uri, "kj", {parent})
    assert killed, "no RUNNING run was caught"
    assert MlflowClient().get_run(killed).data.tags[schema.T_PARENT_RUN_ID] == parent
    if next_step == "ingest":
        result = CliRunner().invoke(main, ["ingest", str(path)])
        assert result.exit_code == 0, result.output
        assert "RUNNING run(s) of a killed fit or ingest" in result.output
    else:
        assert killed in recover_stale(exp, spec_name="kj", by=None)
    run = MlflowClient().get_run(killed)  # ended FAILED with the reason (removed if it held no metrics)
    assert run.info.status == "FAILED" and "stale" in run.data.tags[schema.T_FAILURE]
    assert [r.info.run_id for r in _running(tracking_uri, "kj") if r.info.status == "RUNNING"] == [parent]


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


@pytest.mark.slow
def test_the_fit_command_killed_mid_fit_leaves_its_run_to_the_next_fit(tracking_uri):
    """The real ``mlflow-energy fit`` on the packaged public data, SIGKILLed while its fit run is
    RUNNING: the next ``fit`` ends that run FAILED with the reason and fits."""
    assert CliRunner().invoke(main, ["import-mlenergy", "--experiment", "kfit"]).exit_code == 0
    code = "from mlflow_energy.cli import main; main()"
    argv = [sys.executable, "-c", code, "fit", "--experiment", "kfit", "--registered-model", "kfit-model"]

    def fit_runs() -> list:
        return [r for r in _polled(tracking_uri, "kfit") if r.data.tags.get(schema.T_KIND) == schema.KIND_FIT]

    caught = None
    for _ in range(3):
        proc = subprocess.Popen(argv, env=_env(tracking_uri), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            running = [r for r in fit_runs() if r.info.status == "RUNNING"]
            if running:
                os.killpg(proc.pid, signal.SIGKILL)
                caught = running[0].info.run_id
                break
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if caught:
            break
    assert caught, "the fit ended before its run was seen RUNNING"
    assert MlflowClient().get_run(caught).info.status == "RUNNING"  # killed: nothing ended it
    result = CliRunner().invoke(main, ["fit", "--experiment", "kfit", "--registered-model", "kfit-model"])
    assert result.exit_code == 0, result.output
    assert "ended 1 RUNNING run(s) of a killed fit or ingest" in result.output, result.output
    killed = MlflowClient().get_run(caught)
    assert killed.info.status == "FAILED" and "stale" in killed.data.tags[schema.T_FAILURE]
    assert not [r for r in fit_runs() if r.info.status == "RUNNING"]
