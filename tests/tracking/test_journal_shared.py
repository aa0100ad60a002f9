"""One journal shared by several real processes: appends never cut each other, each record is
logged once, a bad line is moved aside, a complete record without its newline is kept."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking.journal import Journal, tracking_digest
from mlflow_energy.tracking.jsonl import read_jsonl, to_record

REPO = Path(__file__).parents[2]
PROCESSES = 3


@pytest.fixture
def base(no_rapl, small_config) -> dict:
    return to_record(measure(small_config(steps=1)))


def _variant(base: dict, n: int, *, pad: int = 0, **extra) -> dict:
    tags = {**base["tags"], schema.T_CONFIG_HASH: f"{n:016x}"}
    if pad:
        tags["mlflow_energy.note"] = "x" * pad  # a record of about 6 KB
    return {**base, "tags": tags, **extra}


def _run_together(code: str, tmp_path: Path, env: dict[str, str], n: int = PROCESSES,
                  extra: list[str] = ()) -> list[str]:
    """Start ``n`` processes running ``code`` (argv[1]: the worker's index, argv[2]: the go file); each
    says 'ready' once imported, and all start work when the go file appears. Returns their outputs."""
    go = tmp_path / "go"
    prelude = ("import os, sys, time\nprint('ready', flush=True)\n"
               "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n")
    procs = [subprocess.Popen([sys.executable, "-c", prelude + code, str(i), str(go), *extra], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
             for i in range(n)]
    try:
        for p in procs:
            _wait_ready(p)
        go.write_text("")
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    assert all(p.returncode == 0 for p in procs), outs
    return outs


def _wait_ready(proc: subprocess.Popen) -> None:
    """Read the process's output up to its 'ready' line (libraries may say things first)."""
    seen = []
    for line in proc.stdout:
        if line.strip() == "ready":
            return
        seen.append(line)
    raise AssertionError("".join(seen))


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def test_processes_appending_at_once_keep_every_record_whole(tmp_path, base):
    """3 processes x 300 appends, every third record about 6 KB: all 900 are there and parse."""
    (tmp_path / "base.json").write_text(json.dumps(base))
    journal = tmp_path / "j.jsonl"
    code = f"""
import json
from mlflow_energy.tracking.journal import Journal
base = json.load(open({str(tmp_path / 'base.json')!r}))
j = Journal({str(journal)!r})
w = int(sys.argv[1])
for i in range(300):
    tags = dict(base['tags'], **{{{schema.T_CONFIG_HASH!r}: f'{{w * 1000 + i:016x}}'}})
    if i % 3 == 0:
        tags['mlflow_energy.note'] = 'x' * 6000
    j.append_record(dict(base, tags=tags, experiment='shared', parent_run_id=None))
"""
    _run_together(code, tmp_path, _env())
    records = read_jsonl(journal)  # strict: every line is a whole record
    hashes = {r["tags"][schema.T_CONFIG_HASH] for r in records}
    assert len(records) == 900 == len(hashes)
    assert sum(len(r["tags"].get("mlflow_energy.note", "")) == 6000 for r in records) == 300


def test_processes_starting_together_on_a_new_journal_lose_nothing(tmp_path):
    """Workers started together each check the journal path (a probe file removed again) and append at
    once: the probe never removes a file another worker has appended to (20 rounds of 3 x 3 records)."""
    code = """
from mlflow_energy.tracking.journal import Journal
j = Journal(sys.argv[3])
for i in range(3):
    j.append_record({'worker': int(sys.argv[1]), 'i': i})
"""
    counts = []
    for n in range(20):
        round_dir = tmp_path / f"r{n}"
        round_dir.mkdir()
        journal = round_dir / "j.jsonl"
        _run_together(code, round_dir, _env(), extra=[str(journal)])
        counts.append(len(journal.read_text().splitlines()) if journal.exists() else 0)
    assert counts == [9] * 20


def test_processes_replaying_one_journal_log_each_record_once(tracking_uri, tmp_path, base):
    """3 processes replay the same 12 pending records into one SQLite store at the same moment."""
    j = Journal(tmp_path / "j.jsonl")
    for n in range(12):
        j.append_record(_variant(base, n, experiment="shared", parent_run_id=None, tracking=tracking_digest()))
    code = f"""
from mlflow_energy.tracking import runs, read, stale  # imported before the start
from mlflow_energy.tracking.journal import Journal
ids, skipped = Journal({j.path!r}).replay()
print('logged', len(ids), flush=True)
"""
    outs = _run_together(code, tmp_path, _env(MLFLOW_TRACKING_URI=tracking_uri))
    logged = sum(int(line.split()[1]) for out in outs for line in out.splitlines() if line.startswith("logged "))
    c = MlflowClient(tracking_uri)
    runs = c.search_runs([c.get_experiment_by_name("shared").experiment_id])
    per_hash = [r.data.tags[schema.T_CONFIG_HASH] for r in runs]
    assert sorted(per_hash) == sorted(f"{n:016x}" for n in range(12)), outs  # each exactly once
    assert logged == 12 and all(r.info.status == "FINISHED" for r in runs)
    assert j.pending() == []


def test_a_bad_line_in_the_middle_is_moved_aside_and_the_rest_replays(tracking_uri, tmp_path, base, caplog):
    j = Journal(tmp_path / "j.jsonl")
    j.append_record(_variant(base, 1, experiment="bad", parent_run_id=None, tracking=tracking_digest()))
    offset = os.path.getsize(j.path)
    with open(j.path, "a") as fh:
        fh.write('{"format": "mlflow-energy/measurement", "params": 3}\n')  # not a record
    j.append_record(_variant(base, 2, experiment="bad", parent_run_id=None, tracking=tracking_digest()))
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(main, ["ingest", j.path])
    assert result.exit_code == 0 and "logged 2 run(s)" in result.output, result.output
    (said,) = [r.getMessage() for r in caplog.records if "bad line" in r.getMessage()]
    assert "\n" not in said and f"byte offset {offset}" in said and j.path + ".bad" in said
    (moved,) = [json.loads(line) for line in Path(j.path + ".bad").read_text().splitlines()]
    assert moved["offset"] == offset and moved["line"].startswith('{"format"') and "params" in moved["error"]
    assert [r["tags"][schema.T_CONFIG_HASH] for r in read_jsonl(j.path)] == [f"{1:016x}", f"{2:016x}"]
    caplog.clear()
    assert j.replay() == ([], 0) and not caplog.records  # said once: the line is gone from the journal


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path, base):
    j = Journal(tmp_path / "j.jsonl")
    j.append_record(_variant(base, 1, experiment="nl"))
    with open(j.path, "a") as fh:
        fh.write(json.dumps(_variant(base, 2, experiment="nl")))  # whole, but its newline never written
    j.append_record(_variant(base, 3, experiment="nl"))
    assert [r["tags"][schema.T_CONFIG_HASH] for r in read_jsonl(j.path)] == [f"{n:016x}" for n in (1, 2, 3)]


@pytest.mark.slow
def test_processes_autologging_at_once_replay_each_pending_call_once(tmp_path):
    """8 calls journaled while the server was away by a process that exited without flush(); then 3
    processes replay the same state directory at once: each call becomes exactly one run."""
    sys.path.insert(0, str(REPO / "tests"))
    from services import MlflowServer

    state = tmp_path / "state"
    server = MlflowServer(f"sqlite:///{tmp_path}/backend.db", tmp_path).start()
    try:
        env = _env(MLFLOW_ENERGY_STATE_DIR=str(state), MLFLOW_TRACKING_URI=server.url,
                   MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
        away = """
import os, sys, time
import mlflow, mlflow_energy
from mlflow_energy.config import InferenceConfig
from mlflow_energy.measure.runner import build_pipeline
mlflow.set_experiment('away')
pipe = build_pipeline(InferenceConfig(model='tiny-sd2').validate())
print('ready', flush=True)
while not os.path.exists(sys.argv[1]): time.sleep(0.01)  # the server is away from here on
mlflow_energy.autolog(silent=True)
for i in range(8):
    pipe('a red bicycle', num_inference_steps=1, height=32, width=32)
print('flushed', mlflow_energy.flush(timeout=300), flush=True)  # nothing reached the server
os._exit(0)  # no flush at exit
"""
        gone = tmp_path / "gone"
        proc = subprocess.Popen([sys.executable, "-c", away, str(gone)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(proc)
            server.stop()
            gone.write_text("")
            out = proc.communicate(timeout=600)[0]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        assert "flushed False" in out, out
        lines = (state / "autolog-journal.jsonl").read_text().splitlines()
        done = state / "autolog-journal.jsonl.done"
        assert len(lines) == 8 and not (done.exists() and done.read_text().strip()), out
        server.start()
        replay = f"""
from mlflow_energy.autologging import send
import mlflow
try:
    send.replay({server.url!r})
except Exception as exc:  # a replay that collided with another's (counted below, by the runs)
    print('replay failed:', type(exc).__name__, str(exc)[:200], flush=True)
"""
        outs = _run_together(replay, tmp_path, env)
        c = MlflowClient(server.url)
        runs = c.search_runs([c.get_experiment_by_name("away").experiment_id])
        ids = sorted(r.data.tags[schema.T_CALL_ID] for r in runs)
        assert len(ids) == 8 == len(set(ids)), f"{len(ids)} runs for {len(set(ids))} calls; {outs}"
        assert not [out for out in outs if "replay failed" in out], outs
    finally:
        server.stop()
