"""The journal under faults: torn tails, short writes, full or read-only disks, two tracking stores."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
import yaml
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking import load_runs
from mlflow_energy.tracking.journal import Journal, JournalUnwritable
from mlflow_energy.tracking.jsonl import read_jsonl

TINY = ["--model", "tiny-sd2", "--height", "32", "--width", "32", "--repeats", "1", "--warmup", "0"]


@pytest.fixture
def two(no_rapl, small_config):
    return [measure(small_config(steps=s)) for s in (1, 2)]


def _spec(tmp_path, name="jf", steps=(1, 2)):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "device": "cpu", "repeats": 1, "warmup": 0,
                                    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": list(steps)}}))
    return path


def test_a_torn_tail_is_cut_before_the_next_record(tracking_uri, tmp_path, two):
    j = Journal(tmp_path / "j.jsonl")
    j.append(two[0], experiment="torn")
    with open(j.path, "a") as fh:
        fh.write(json.dumps({"format": "mlflow-energy/measurement", "params": {}})[:30])  # killed mid-write
    j.append(two[1], experiment="torn")
    records = read_jsonl(j.path)  # strict: every line is whole JSON again
    assert [r["params"][schema.P_STEPS] for r in records] == ["1", "2"]
    result = CliRunner().invoke(main, ["ingest", j.path])
    assert result.exit_code == 0 and "logged 2 run(s)" in result.output, result.output


def test_short_writes_are_continued_until_every_byte_is_written(tmp_path, two, monkeypatch):
    real, calls = os.write, []

    def short(fd, data):  # a nearly full disk: the kernel takes part of the buffer
        calls.append(len(data))
        return real(fd, bytes(data[:97]))

    monkeypatch.setattr(os, "write", short)
    j = Journal(tmp_path / "j.jsonl")
    rec = j.append(two[0], experiment="short")
    monkeypatch.setattr(os, "write", real)
    assert len(calls) > 2
    assert read_jsonl(j.path) == [rec]


def test_a_new_journal_fsyncs_its_directory(tmp_path, two, monkeypatch):
    real, synced = os.fsync, []

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    j = Journal(tmp_path / "new" / "j.jsonl")
    j.append(two[0], experiment="d")
    assert synced == [False, True]  # the file, then its directory (the name survives a crash)
    j.append(two[1], experiment="d")
    assert synced == [False, True, False]  # an existing file: only itself


def test_one_journal_two_stores_replays_to_each_what_it_missed(tracking_uri, tmp_path, no_rapl, monkeypatch,
                                                               _empty_tracking_db):
    """A journal served a sweep against store A, then measured the same configs for store B while B
    was away: B gets them on its next sweep, and nothing is measured twice."""
    import mlflow

    from mlflow_energy.sweep import run_sweep
    from mlflow_energy.tracking.journal import tracking_digest

    spec, journal = _spec(tmp_path), tmp_path / "j.jsonl"
    first = run_sweep(spec, experiment="two", progress=False, journal=journal)
    assert first.measured == 2 and len(load_runs("two")) == 2
    shutil.copyfile(_empty_tracking_db, tmp_path / "b.db")
    uri_b = f"sqlite:///{tmp_path}/b.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri_b)
    mlflow.set_tracking_uri(uri_b)
    j = Journal(journal)
    for r in read_jsonl(journal):  # measured for store B while it was away: journalled, not logged
        j.append_record({**r, "tracking": tracking_digest(), "parent_run_id": None})
    assert len(j.pending(this_server=True)) == 2
    again = run_sweep(spec, experiment="two", progress=False, journal=journal)
    assert again.measured == 0 and again.skipped == 2  # replayed at its start, not measured again
    runs = load_runs("two")
    assert len(runs) == 2 and runs["config_hash"].nunique() == 2
    assert j.pending(this_server=True) == []


def test_measure_with_an_unwritable_journal_keeps_the_measurement_in_mlflow(tracking_uri, no_rapl):
    result = CliRunner().invoke(main, ["measure", *TINY, "--steps", "1", "--journal", "/dev/full",
                                       "--experiment", "full"])
    assert result.exit_code == 0, result.output
    assert "Warning: could not write the journal file /dev/full: No space left on device" in result.output
    assert "Traceback" not in result.output
    assert list(load_runs("full")["status"]) == ["FINISHED"]


def test_sweep_goes_on_when_the_logged_ledger_is_full(tracking_uri, tmp_path, no_rapl, capsys):
    from mlflow_energy.sweep import run_sweep

    journal = tmp_path / "j.jsonl"
    os.symlink("/dev/full", str(journal) + ".logged")  # ENOSPC on the side file from the first write
    result = run_sweep(_spec(tmp_path, steps=(1, 2, 3)), experiment="ledger", progress=False, journal=journal)
    out = capsys.readouterr().out
    assert result.measured == 3 and not result.failed
    assert out.count("could not write the journal file") == 1 and "No space left on device" in out
    runs = load_runs("ledger")
    assert len(runs) == 3 and runs["config_hash"].nunique() == 3
    assert len(Journal(journal).records()) == 3  # nothing thrown away


def _mount_tmpfs(path) -> bool:
    path.mkdir()
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                              capture_output=True).returncode == 0
    except OSError:
        return False


def test_sweep_goes_on_when_the_journal_disk_turns_read_only(tracking_uri, tmp_path, no_rapl, monkeypatch, capsys):
    import mlflow_energy.measure.runner as runner
    from mlflow_energy.sweep import run_sweep

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    real, count = runner.measure, [0]

    def measure_then_remount(*args, **kwargs):
        count[0] += 1
        if count[0] == 2:  # the disk turns read-only mid-sweep
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "measure", measure_then_remount)
    try:
        result = run_sweep(_spec(tmp_path, steps=(1, 2, 3)), experiment="ro", progress=False,
                           journal=disk / "j.jsonl")
        out = capsys.readouterr().out
        assert result.measured == 3 and not result.failed
        assert out.count("Read-only file system") == 1, out
        runs = load_runs("ro")
        assert len(runs) == 3 and runs["config_hash"].nunique() == 3
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_journal_unwritable_is_one_line(tmp_path, two):
    j = Journal(tmp_path / "j.jsonl")
    os.symlink("/dev/full", j.logged_path)
    with pytest.raises(JournalUnwritable, match=r"^could not write the journal file .*j.jsonl.logged: No space"):
        j.mark_logged([j.append(two[0], experiment="x")])
