"""The local journal: fsync'ed before logging, pending until logged, replayed idempotently."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking import load_runs
from mlflow_energy.tracking.journal import Journal, check_writable
from mlflow_energy.tracking.retry import TrackingUnavailable, retrying


@pytest.fixture
def two(no_rapl, small_config):
    return [measure(small_config(steps=s)) for s in (1, 2)]


def test_pending_until_marked_then_replay_is_idempotent(tracking_uri, tmp_path, two):
    j = Journal(tmp_path / "j.jsonl")
    for m in two:
        j.append(m, experiment="jr")
    assert len(j.pending()) == 2
    ids, skipped = j.replay()
    assert len(ids) == 2 and skipped == 0 and j.pending() == []
    assert j.replay() == ([], 0)
    # the side file lost (a crash before it was written): replay again logs nothing new
    (tmp_path / "j.jsonl.logged").unlink()
    ids, skipped = j.replay()
    assert ids == [] and skipped == 2 and j.pending() == []
    df = load_runs("jr")
    assert len(df) == 2 and set(df["status"]) == {"FINISHED"}


def test_keep_false_drops_a_record_and_none_leaves_it_pending(tracking_uri, tmp_path, two):
    """``keep`` says False (never log it: marked done) or None (not yet: stays pending)."""
    j = Journal(tmp_path / "j.jsonl")
    for m in two:
        j.append(m, experiment="k")
    verdicts = iter([None, False])
    assert j.replay(keep=lambda r: next(verdicts)) == ([], 2)
    assert len(j.pending()) == 1  # the None one
    ids, _ = j.replay(keep=lambda r: True)
    assert len(ids) == 1 and j.pending() == []
    assert len(load_runs("k")) == 1


def test_replay_keeps_each_record_in_its_experiment_and_parent(tracking_uri, tmp_path, two):
    j = Journal(tmp_path / "j.jsonl")
    c = MlflowClient()
    parent = c.create_run(c.create_experiment("a")).info.run_id
    j.append(two[0], experiment="a", parent_run_id=parent)
    j.append(two[1], experiment="b")
    result = CliRunner().invoke(main, ["ingest", str(tmp_path / "j.jsonl")])
    assert result.exit_code == 0, result.output
    assert "logged 2 run(s)" in result.output
    a, b = load_runs("a"), load_runs("b")
    assert len(a) == 1 and len(b) == 1 and a["parent_run_id"][0] == parent
    again = CliRunner().invoke(main, ["ingest", str(tmp_path / "j.jsonl")])
    assert "logged 0 run(s), skipped 2" in again.output


def test_records_for_another_server_are_not_replayed_automatically(tracking_uri, tmp_path, two):
    j = Journal(tmp_path / "j.jsonl")
    rec = j.append(two[0], experiment="x")
    j.append_record({**rec, "tracking": "elsewhere"})  # the same config, meant for another store
    assert len(j.pending()) == 2 and len(j.pending(this_server=True)) == 1
    other = {**rec, "tracking": "elsewhere"}
    other["tags"] = {**rec["tags"], schema.T_CONFIG_HASH: "0" * 16}
    j.append_record(other)
    assert len(j.pending()) == 3 and len(j.pending(this_server=True)) == 1


def test_a_torn_last_line_is_ignored(tracking_uri, tmp_path, two):
    j = Journal(tmp_path / "j.jsonl")
    j.append(two[0], experiment="t")
    with open(j.path, "a") as fh:
        fh.write(json.dumps({"format": "mlflow-energy/measurement"})[:20])  # killed mid-write
    assert len(j.pending()) == 1


@pytest.mark.parametrize("bad", ["/etc/passwd/x.jsonl", "/", "/proc/nope/x.jsonl"])
def test_unwritable_paths_are_refused(bad):
    with pytest.raises(ConfigError, match="output="):
        check_writable(bad)


@pytest.mark.parametrize("bad", ["/etc/passwd/x.jsonl", "{tmp}"])
def test_measure_checks_output_before_measuring(tracking_uri, tmp_path, no_rapl, bad):
    bad = bad.format(tmp=tmp_path)
    result = CliRunner().invoke(main, ["measure", "--model", "tiny-sd2", "--height", "32", "--width", "32",
                                       "--steps", "1", "--repeats", "1", "--warmup", "0", "--output", bad])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "output=" in result.output
    assert not MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])


def test_retrying_gives_up_in_seconds_with_one_line():
    calls = []

    def down():
        calls.append(1)
        raise ConnectionError("Connection refused")

    with pytest.raises(TrackingUnavailable, match="while testing: ConnectionError: Connection refused"):
        retrying(down, what="testing", backoff=(0.01, 0.01))
    assert len(calls) == 3
    with pytest.raises(ValueError):  # a bad request is not retried
        retrying(lambda: (_ for _ in ()).throw(ValueError("bad")), what="testing")


def test_measure_with_the_server_away_keeps_the_measurement(tmp_path, monkeypatch, no_rapl):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
    try:
        result = CliRunner().invoke(main, ["measure", "--model", "tiny-sd2", "--height", "32", "--width", "32",
                                           "--steps", "1", "--repeats", "1", "--warmup", "0"])
    finally:
        mlflow.set_tracking_uri("")
    # the server is away before anything is measured: one line, exit 1, no GPU time spent
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: the tracking server http://127.0.0.1:{port} did not answer")
    assert result.output.count("\n") == 1
