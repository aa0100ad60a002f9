"""A journal scan (each sweep's start and end reads every record of the journal) checks each distinct
key of the records once, not once per line; a bad key is still refused with the same line."""

from __future__ import annotations

import json

import pytest

from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking import jsonl
from mlflow_energy.tracking.journal import Journal


class _CountingPattern:
    def __init__(self, pattern) -> None:
        self.pattern, self.calls = pattern, 0

    def fullmatch(self, text):
        self.calls += 1
        return self.pattern.fullmatch(text)


def test_a_journal_scan_checks_each_distinct_key_once_and_still_refuses_a_bad_one(tmp_path, small_config, no_rapl, monkeypatch):
    m = measure(small_config())
    journal = Journal(str(tmp_path / "journal.jsonl"))
    for i in range(30):  # one sweep's records: the same keys on every line
        m.extra_tags = {"mlflow_energy.claim_token": str(i)}
        journal.append(m, experiment="scan", parent_run_id="parent")
    record = jsonl.to_record(m)
    keys = {*record["params"], *record["metrics"], *record["tags"]}
    counting = _CountingPattern(jsonl._KEY_RE)
    monkeypatch.setattr(jsonl, "_KEY_RE", counting)
    assert len(journal.pending()) == 1  # one config: 30 lines, one pending key
    assert counting.calls <= len(keys), (counting.calls, len(keys))  # not 30 lines x every key

    bad = {**record, "metrics": {**record["metrics"], "energy/../total_j": 1.0}}
    raw = (json.dumps(bad) + "\n").encode()
    for line in (1, 2):  # a key's verdict is remembered; the refusal still names each line it is on
        with pytest.raises(ConfigError, match=f"line {line} metrics key"):
            jsonl.parse_line(raw, f"line {line}")
