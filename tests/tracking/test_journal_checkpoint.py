"""Looking for a journal's pending records reads only what was appended after the records known to be
logged (``<journal>.checkpoint``); a checkpoint that no longer matches the journal or its ledger is
ignored, and the answer is always the whole journal's."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking import checkpoint
from mlflow_energy.tracking import journal as journal_module
from mlflow_energy.tracking.journal import Journal


@pytest.fixture
def records(small_config, no_rapl):
    """Four measurements of distinct configs (distinct keys)."""
    m = measure(small_config())
    return [dataclasses.replace(m, config=dataclasses.replace(m.config, steps=s)) for s in (1, 2, 3, 4)]


@pytest.fixture
def scanned(monkeypatch):
    """The byte counts each scan of the journal parses."""
    sizes: list[int] = []
    real = journal_module._scan

    def counting(data, *args, **kwargs):
        sizes.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(journal_module, "_scan", counting)
    return sizes


def _steps(recs):
    return sorted(r["config"]["steps"] for r in recs)


def test_a_second_look_reads_only_what_follows_the_logged_records(tmp_path, records, scanned):
    j = Journal(str(tmp_path / "journal.jsonl"))
    logged = [j.append(m, experiment="e") for m in records[:3]]
    j.mark_logged(logged)
    pending = j.append(records[3], experiment="e")
    size = os.path.getsize(j.path)
    assert _steps(j.pending()) == [4]
    assert scanned == [size]  # the first look reads it whole
    assert _steps(j.pending()) == [4]
    last_line = len(json.dumps(pending, sort_keys=True)) + 1
    assert scanned[-1] == last_line  # then only the pending record's line
    j.mark_logged([pending])
    assert j.pending() == []
    assert j.pending() == [] and scanned[-1] == 0  # nothing after the checkpoint
    j.append(records[0], experiment="other")  # a new record (another experiment: another key)
    assert _steps(j.pending()) == [1] and scanned[-1] < last_line + 200


def test_a_checkpoint_that_no_longer_matches_is_ignored(tmp_path, records, scanned):
    j = Journal(str(tmp_path / "journal.jsonl"))
    j.mark_logged([j.append(m, experiment="e") for m in records[:2]])
    assert j.pending() == [] and checkpoint.read(j.path) == os.path.getsize(j.path)

    # the ledger removed by hand: every record is pending again
    os.remove(j.logged_path)
    assert checkpoint.read(j.path) == 0
    assert _steps(j.pending()) == [1, 2]

    # the journal replaced by another one of the same size or more: read whole
    j.mark_logged([json.loads(line) for line in open(j.path)])
    assert j.pending() == [] and checkpoint.read(j.path) > 0
    with open(j.path, "w") as fh:
        for m in (records[2], records[3]):
            fh.write(json.dumps({**journal_module.Journal(str(tmp_path / "x.jsonl")).append(m, experiment="e")},
                                sort_keys=True) + "\n")
    assert checkpoint.read(j.path) == 0
    assert _steps(j.pending()) == [3, 4]

    # truncated below the checkpoint
    with open(j.path, "r+") as fh:
        fh.truncate(10)
    assert checkpoint.read(j.path) == 0


def test_a_bad_line_after_the_checkpoint_is_moved_aside_and_the_checkpoint_follows(tmp_path, records, scanned):
    j = Journal(str(tmp_path / "journal.jsonl"))
    j.mark_logged([j.append(m, experiment="e") for m in records[:2]])
    assert j.pending() == []
    with open(j.path, "a") as fh:
        fh.write("not a record\n")
    j.append(records[2], experiment="e")
    assert _steps(j.pending()) == [3]  # the bad line moved aside, the record pending
    assert "not a record" in open(j.bad_path).read()
    assert checkpoint.read(j.path) == 0  # the journal was rewritten: the old checkpoint is gone
    assert _steps(j.pending()) == [3]
    assert checkpoint.read(j.path) > 0  # and a new one stops before the pending record
    assert _steps(j.pending()) == [3]


def test_a_torn_tail_is_never_passed(tmp_path, records, scanned):
    j = Journal(str(tmp_path / "journal.jsonl"))
    j.mark_logged([j.append(m, experiment="e") for m in records[:2]])
    whole = json.dumps(Journal(str(tmp_path / "y.jsonl")).append(records[2], experiment="e"), sort_keys=True)
    with open(j.path, "a") as fh:
        fh.write(whole[:50])  # a writer cut mid-line
    assert j.pending() == []
    offset = checkpoint.read(j.path)
    assert 0 < offset < os.path.getsize(j.path)  # up to the last whole line
    with open(j.path, "a") as fh:
        fh.write(whole[50:] + "\n")  # the writer finishes the line
    assert _steps(j.pending()) == [3]
