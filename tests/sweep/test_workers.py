"""Nothing lost beyond one process: a server killed or frozen mid-sweep, kill -9 then resume, many workers.

Real services only: an ``mlflow server`` (SQLite, or PostgreSQL when ``.ci/run`` provides one)
on loopback, sweeps in their own processes killed with SIGKILL or frozen with SIGSTOP; the claims
in the tracking store's database (``--coordination-uri`` the server's backend when the workers
talk to the server). "Once" is what fit and the summaries count: superseded runs left out.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.sweep.coordination import CLAIMS_TABLE

sys.path.insert(0, str(Path(__file__).parents[1]))
from services import MlflowServer, backend_uri  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
STEPS = [1, 2, 3, 4, 5]


def _spec(tmp: Path, name: str, steps=STEPS) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "device": "cpu", "repeats": 1, "warmup": 0,
                                    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": steps}}))
    return path


def _client(uri: str) -> MlflowClient:
    from mlflow_energy.tracking.retry import database_url

    return MlflowClient(database_url(uri))


def _measurements(uri: str, experiment: str) -> list:
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment)
    return [r for r in c.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(schema.T_KIND) == schema.KIND_MEASUREMENT]


def _all_runs(uri: str, experiment: str) -> list:
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], max_results=1000)


def _assert_each_once(uri: str, experiment: str, n: int) -> int:
    """Each of ``n`` configs FINISHED once as fit counts it (superseded runs left out), none RUNNING;
    returns how many superseded runs were left out."""
    from mlflow_energy.tracking.read import _current_claims

    finished = [r for r in _measurements(uri, experiment) if r.info.status == "FINISHED"]
    prefix = len(schema.TAG_PREFIX)
    rows = [{k[prefix:]: v for k, v in r.data.tags.items() if k.startswith(schema.TAG_PREFIX)} for r in finished]
    counted, superseded = _current_claims(rows)
    counts = Counter(r["config_hash"] for r in counted)
    assert len(counts) == n, f"lost: {n - len(counts)}"
    assert max(counts.values()) == 1, f"duplicates: {counts}"
    assert not [r for r in _all_runs(uri, experiment) if r.info.status == "RUNNING"]
    return superseded


def _worker(spec: Path, uri: str, experiment: str, journal: Path, log: Path, *args: str,
            clock_ahead_s: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MLFLOW_ENERGY_JOURNAL": str(journal)}
    code = "from mlflow_energy.cli import main; main()"
    if clock_ahead_s:  # this worker's clock runs ahead (a host whose NTP is off)
        code = f"import time; _t = time.time; time.time = lambda: _t() + {clock_ahead_s}; " + code
    return subprocess.Popen([sys.executable, "-c", code, "sweep", str(spec), "--experiment", experiment,
                             "--no-progress", *args], env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def test_server_killed_and_restarted_mid_sweep_loses_nothing(tmp_path, monkeypatch, no_rapl, capsys):
    import mlflow

    import mlflow_energy.measure.runner as runner
    from mlflow_energy.sweep import SweepSpec, run_sweep

    server = MlflowServer(backend_uri(tmp_path), tmp_path).start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(server.url)
    real, count = runner.measure, [0]

    def measure_then_break_the_server(*args, **kwargs):
        m = real(*args, **kwargs)
        count[0] += 1
        if count[0] == 2:
            server.stop(signal.SIGKILL)  # gone while this measurement is logged
        if count[0] == 4:
            server.start()
        return m

    monkeypatch.setattr(runner, "measure", measure_then_break_the_server)
    try:
        started = time.monotonic()
        result = run_sweep(SweepSpec.from_yaml(_spec(tmp_path, "down")), experiment="down", progress=False,
                           journal=tmp_path / "journal.jsonl")
        elapsed = time.monotonic() - started
        out = capsys.readouterr().out
        assert result.measured == 5 and not result.failed
        assert "measuring on into the journal" in out and "replayed" in out
        _assert_each_once(server.url, "down", 5)
        from mlflow_energy.tracking.journal import Journal

        assert Journal(tmp_path / "journal.jsonl").pending() == []
        assert elapsed < 600  # bounded retries: not MLflow's default 8.5 minutes per request
    finally:
        mlflow.set_tracking_uri("")
        server.stop()


@pytest.mark.parametrize("kill_at", ["sweep-run", "journal-1", "journal-3"])
def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, _empty_tracking_db, kill_at):
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_tracking_db, db)
    uri = f"sqlite:///{db}"
    spec, journal, log = _spec(tmp_path, "k9"), tmp_path / "journal.jsonl", tmp_path / "worker.log"
    proc = _worker(spec, uri, "k9", journal, log)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if kill_at == "sweep-run":
            c = MlflowClient(uri)
            exp = c.get_experiment_by_name("k9")
            if exp and any(r.data.tags.get(schema.T_KIND) == schema.KIND_SWEEP
                           for r in c.search_runs([exp.experiment_id])):
                break
        elif journal.exists() and len(journal.read_text().splitlines()) >= int(kill_at[-1]):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before the kill point: " + log.read_text()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = _worker(spec, uri, "k9", journal, log)
    assert again.wait(timeout=600) == 0, log.read_text()[-3000:]
    _assert_each_once(uri, "k9", 5)
    sweeps = [r for r in _all_runs(uri, "k9") if r.data.tags.get(schema.T_KIND) == schema.KIND_SWEEP]
    killed = [r for r in sweeps if r.info.status == "KILLED"]
    assert len(killed) == 1 and "stale" in killed[0].data.tags[schema.T_FAILURE]


@pytest.mark.parametrize("via", ["database", "server"])
def test_workers_on_a_fresh_store_measure_each_config_once(tmp_path, via):
    n_workers = 4 if os.environ.get("MLFLOW_ENERGY_TEST_POSTGRES") else 3
    backend = backend_uri(tmp_path)  # fresh: the workers race to create the schema
    server = MlflowServer(backend, tmp_path).start() if via == "server" else None
    uri = server.url if server else backend
    spec = _spec(tmp_path, "many", steps=[1, 2, 3, 4, 5, 6])
    try:
        procs = [_worker(spec, uri, "many", tmp_path / f"j{i}.jsonl", tmp_path / f"w{i}.log",
                         "--coordination-uri", backend) for i in range(n_workers)]
        codes = [p.wait(timeout=900) for p in procs]
        logs = "\n".join((tmp_path / f"w{i}.log").read_text()[-1500:] for i in range(n_workers))
        assert codes == [0] * n_workers, logs
        _assert_each_once(uri, "many", 6)
    finally:
        if server:
            server.stop()


def _fault_env(**extra: str) -> dict[str, str]:
    return {"MLFLOW_ENERGY_HEARTBEAT_S": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_ENERGY_FINISH_WAIT_S": "120", **extra}


def _worker_env(spec: Path, uri: str, experiment: str, journal: Path, log: Path, *args: str,
                clock_ahead_s: float = 0.0, prelude: str = "", **extra: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MLFLOW_ENERGY_JOURNAL": str(journal), **extra}
    code = prelude + "from mlflow_energy.cli import main; main()"
    if clock_ahead_s:  # this worker's clock runs ahead (a host whose NTP is off)
        code = f"import time; _t = time.time; time.time = lambda: _t() + {clock_ahead_s}; " + code
    return subprocess.Popen([sys.executable, "-c", code, "sweep", str(spec), "--experiment", experiment,
                             "--no-progress", *args], env=env, stdout=open(log, "a"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _finished_count(uri: str, experiment: str) -> int:
    try:
        return sum(r.info.status == "FINISHED" for r in _measurements(uri, experiment))
    except Exception:
        return 0


def test_server_frozen_during_the_claim_check_loses_nothing(tmp_path, monkeypatch, no_rapl, capsys):
    """SIGSTOP on the real server while a worker checks its claims: retried, offline, replayed; no traceback."""
    import threading

    import mlflow

    from mlflow_energy.sweep import SweepSpec, run_sweep
    from mlflow_energy.sweep.claims import SweepGuard

    server = MlflowServer(backend_uri(tmp_path), tmp_path).start()
    for k, v in _fault_env(MLFLOW_TRACKING_URI=server.url).items():
        monkeypatch.setenv(k, v)
    mlflow.set_tracking_uri(server.url)
    real, calls = SweepGuard.claim, [0]

    def freeze_then_claim(self, cfg):
        calls[0] += 1
        if calls[0] == 2:  # frozen while the finished configs and claims are read: retried, not a traceback
            os.killpg(server.proc.pid, signal.SIGSTOP)
            threading.Timer(12.0, lambda: os.killpg(server.proc.pid, signal.SIGCONT)).start()
        return real(self, cfg)

    monkeypatch.setattr(SweepGuard, "claim", freeze_then_claim)
    try:
        result = run_sweep(SweepSpec.from_yaml(_spec(tmp_path, "frozen", steps=[1, 2, 3, 4])), experiment="frozen",
                           progress=False, journal=tmp_path / "journal.jsonl")
        out = capsys.readouterr().out
        assert result.measured == 4 and not result.failed and "Traceback" not in out
        _assert_each_once(server.url, "frozen", 4)
        from mlflow_energy.tracking.journal import Journal

        assert Journal(tmp_path / "journal.jsonl").pending() == []
    finally:
        mlflow.set_tracking_uri("")
        server.stop()


@pytest.mark.parametrize("journals", ["one each", "one shared"])
def test_three_workers_server_killed_and_restarted_measure_each_config_once(tmp_path, journals):
    """The server dies mid-sweep under 3 workers and comes back: offline each measures only its share.
    With one journal shared by the three (the default path of workers started in one directory), the
    server stays away 20 s: still each config FINISHED once (each record replayed by one process)."""
    backend = backend_uri(tmp_path)
    server = MlflowServer(backend, tmp_path).start()
    spec = _spec(tmp_path, "restart", steps=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    shared = journals == "one shared"
    paths = [tmp_path / ("j.jsonl" if shared else f"j{i}.jsonl") for i in range(3)]
    procs = [_worker_env(spec, server.url, "restart", paths[i], tmp_path / f"w{i}.log",
                         "--coordination-uri", backend, **_fault_env()) for i in range(3)]
    try:
        deadline = time.monotonic() + 400
        while _finished_count(server.url, "restart") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        server.stop(signal.SIGKILL)
        time.sleep(20 if shared else 8)
        server.start()
        codes = [p.wait(timeout=600) for p in procs]
        logs = "\n".join((tmp_path / f"w{i}.log").read_text()[-2000:] for i in range(3))
        assert codes == [0, 0, 0], logs
        assert "Traceback" not in logs
        _assert_each_once(server.url, "restart", 9)
        from mlflow_energy.tracking.journal import Journal

        measured = sum(len(Journal(p).records()) for p in sorted(set(paths)))
        print(f"measurements made for 9 configs: {measured}")
        if shared:
            assert Journal(paths[0]).pending() == []
        assert measured < 18  # offline, each worker measures its share, not every config
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        server.stop()


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_held_claim_is_taken_over_by_a_worker_that_passed_it(tmp_path, _empty_tracking_db, fault):
    """A worker stops (SIGKILL) or freezes (SIGSTOP, longer than 3 heartbeats) holding a claim: the other
    worker, already past that config, takes it over in its final pass; a frozen one that resumes is fenced."""
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_tracking_db, db)
    uri = f"sqlite:///{db}"
    spec = _spec(tmp_path, "held", steps=[1, 2, 3, 4])
    a = _worker_env(spec, uri, "held", tmp_path / "ja.jsonl", tmp_path / "a.log", **_fault_env())
    b = None
    try:
        c = MlflowClient(uri)
        deadline, held = time.monotonic() + 300, None
        while held is None and time.monotonic() < deadline and a.poll() is None:
            exp = c.get_experiment_by_name("held")
            runs = c.search_runs([exp.experiment_id]) if exp else []
            done = {r.data.tags.get(schema.T_CONFIG_HASH) for r in runs if r.info.status == "FINISHED"}
            os.killpg(a.pid, signal.SIGSTOP)
            try:  # the claims live in the tracking store's own database, in a table of their own
                con = sqlite3.connect(db, timeout=0.5, isolation_level=None)
                try:
                    con.execute("BEGIN IMMEDIATE")  # fails when A was stopped holding the write lock
                    claimed = [h for (h,) in con.execute(f"SELECT config_hash FROM {CLAIMS_TABLE} WHERE state = 'held'")]
                    con.execute("ROLLBACK")
                finally:
                    con.close()
            except sqlite3.OperationalError:  # no table yet, or the lock is A's: resume it, look again
                claimed = []
            open_ = [h for h in claimed if h not in done]
            if open_:
                held = open_[0]
                break
            os.killpg(a.pid, signal.SIGCONT)
            time.sleep(0.05)
        assert held, "worker A never held an open claim: " + (tmp_path / "a.log").read_text()[-2000:]
        if fault == "kill":
            os.killpg(a.pid, signal.SIGKILL)
            a.wait()
        b = _worker_env(spec, uri, "held", tmp_path / "jb.jsonl", tmp_path / "b.log", **_fault_env())
        assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-3000:]
        if fault == "pause":
            os.killpg(a.pid, signal.SIGCONT)
            assert a.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()[-3000:]
            a_log = (tmp_path / "a.log").read_text()
            assert "stopped: this worker was declared stale" in a_log and "Traceback" not in a_log
        _assert_each_once(uri, "held", 4)
        sweeps = [r for r in _all_runs(uri, "held") if r.data.tags.get(schema.T_KIND) == schema.KIND_SWEEP]
        assert sorted(r.info.status for r in sweeps) == ["FINISHED", "KILLED"]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)


#: Worker code run before the CLI: the worker stops itself (SIGSTOP) once, as it starts logging its first
#: measurement (past the check that its sweep run was not ended), at the same point every time.
STOP_BEFORE_LOGGING = (
    "import os, signal\n"
    "from mlflow_energy.sweep import run as _run\n"
    "_log = _run._Tracker.log\n"
    "def _stop_then_log(self, m):\n"
    "    if not getattr(_run, '_stopped_once', False):\n"
    "        _run._stopped_once = True\n"
    "        os.kill(os.getpid(), signal.SIGSTOP)\n"
    "    return _log(self, m)\n"
    "_run._Tracker.log = _stop_then_log\n"
)


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_worker_stopped_past_its_lease_tags_its_late_run_superseded(tmp_path, _empty_tracking_db):
    """Worker A is stopped (SIGSTOP) as it starts logging a measured config, past its lease: B takes the
    claim over (the next token), measures the config and ends A's sweep run. A resumes (SIGCONT) and
    logs its late run: its claim's token is no longer current, so it tags the run superseded and stops.
    The fit's reader, the sweep summary's reader and the energy view's filter count one run per config."""
    import shutil

    import mlflow

    from mlflow_energy.sweep.summary import earlier_rows
    from mlflow_energy.tracking import ui
    from mlflow_energy.tracking.read import load_runs

    db = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_tracking_db, db)
    uri = f"sqlite:///{db}"
    spec = _spec(tmp_path, "late", steps=[1, 2, 3, 4])
    a = _worker_env(spec, uri, "late", tmp_path / "ja.jsonl", tmp_path / "a.log", prelude=STOP_BEFORE_LOGGING,
                    **_fault_env())
    b = None
    try:
        deadline = time.monotonic() + 300
        while not _stopped(a.pid) and a.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert a.poll() is None and _stopped(a.pid), (tmp_path / "a.log").read_text()[-3000:]
        b = _worker_env(spec, uri, "late", tmp_path / "jb.jsonl", tmp_path / "b.log", **_fault_env())
        assert b.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-3000:]
        os.killpg(a.pid, signal.SIGCONT)
        assert a.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()[-3000:]
        a_log = (tmp_path / "a.log").read_text()
        assert "superseded: config" in a_log and "Traceback" not in a_log, a_log[-3000:]

        finished = [r for r in _measurements(uri, "late") if r.info.status == "FINISHED"]
        late = [r for r in finished if r.data.tags.get(schema.T_SUPERSEDED) == "true"]
        assert len(finished) == 5 and len(late) == 1, [r.data.tags for r in finished]
        h = late[0].data.tags[schema.T_CONFIG_HASH]
        taker = [r for r in finished if r.data.tags[schema.T_CONFIG_HASH] == h and r is not late[0]]
        assert [r.data.tags[schema.T_CLAIM_TOKEN] for r in (late[0], *taker)] == ["1", "2"]
        assert _assert_each_once(uri, "late", 4) == 1  # the fit's count
        mlflow.set_tracking_uri(uri)
        df = load_runs("late")
        assert len(df) == 4 and df.attrs["superseded"] == 1 and late[0].info.run_id not in set(df["run_id"])
        c = MlflowClient(uri)
        exp_id = c.get_experiment_by_name("late").experiment_id
        view = [r for r in c.search_runs([exp_id], filter_string=ui.VIEW_FILTER, max_results=1000)
                if r.data.tags.get(schema.T_KIND) == schema.KIND_MEASUREMENT]
        assert sorted(Counter(r.data.tags[schema.T_CONFIG_HASH] for r in view).values()) == [1, 1, 1, 1]
        assert late[0].info.run_id not in {r.info.run_id for r in view}
        hashes = sorted({r.data.tags[schema.T_CONFIG_HASH] for r in finished})
        rows, _ = earlier_rows(exp_id, hashes, late[0].data.tags[schema.T_HARDWARE], "none")  # the summary's
        assert len(rows) == 4
    finally:
        mlflow.set_tracking_uri("")
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGKILL)


def test_server_frozen_35_s_under_three_workers_measures_each_config_once(tmp_path):
    """SIGSTOP on the real server for 35 s while 3 workers claim in its backend database
    (``--coordination-uri``): leases live on, renewed in the database; the workers measure into their
    journals and replay; every config FINISHED once, nothing RUNNING, no traceback."""
    backend = backend_uri(tmp_path)
    server = MlflowServer(backend, tmp_path).start()
    spec = _spec(tmp_path, "frozen35", steps=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    procs = [_worker_env(spec, server.url, "frozen35", tmp_path / f"j{i}.jsonl", tmp_path / f"w{i}.log",
                         "--coordination-uri", backend, **_fault_env()) for i in range(3)]
    try:
        deadline = time.monotonic() + 400
        while _finished_count(server.url, "frozen35") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        time.sleep(35)
        os.killpg(server.proc.pid, signal.SIGCONT)
        codes = [p.wait(timeout=600) for p in procs]
        full = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
        assert codes == [0, 0, 0], "\n".join(t[-2000:] for t in full)
        assert not [t for t in full if "Traceback" in t], "\n".join(t[:3000] for t in full)
        superseded = _assert_each_once(server.url, "frozen35", 9)
        print(f"superseded runs left out: {superseded}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        os.killpg(server.proc.pid, signal.SIGCONT)
        server.stop()


def test_a_worker_whose_clock_runs_300_s_ahead_ends_no_healthy_worker(tmp_path, _empty_tracking_db):
    """3 workers on one SQLite store, one with its clock 300 s ahead: leases are on the database's clock,
    so it judges no healthy worker stale (with heartbeat tags, every other run looked 300 s old)."""
    import shutil

    db = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_tracking_db, db)
    uri = f"sqlite:///{db}"
    spec = _spec(tmp_path, "ahead", steps=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    env = _fault_env(MLFLOW_ENERGY_HEARTBEAT_S="2")
    procs = [_worker_env(spec, uri, "ahead", tmp_path / f"j{i}.jsonl", tmp_path / f"w{i}.log",
                         clock_ahead_s=300.0 if i == 2 else 0.0, **env) for i in range(3)]
    try:
        codes = [p.wait(timeout=600) for p in procs]
        full = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
        assert codes == [0, 0, 0], "\n".join(t[-2000:] for t in full)
        assert not [t for t in full if "Traceback" in t or "stale" in t or "fenced" in t], "\n".join(full)
        _assert_each_once(uri, "ahead", 9)
        sweeps = [r for r in _all_runs(uri, "ahead") if r.data.tags.get(schema.T_KIND) == schema.KIND_SWEEP]
        assert sweeps and {r.info.status for r in sweeps} == {"FINISHED"}, [r.data.tags for r in sweeps]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def test_a_full_artifact_store_is_not_taken_for_an_outage(tmp_path, _empty_tracking_db, full_disk):
    """Artifacts on a full disk (a filled tmpfs): one FAILED run with the reason, the sweep stops, exit 1."""
    import shutil

    os.symlink(full_disk, tmp_path / "artifacts")  # the server's --artifacts-destination
    shutil.copyfile(_empty_tracking_db, tmp_path / "backend.db")
    server = MlflowServer(f"sqlite:///{tmp_path}/backend.db", tmp_path).start()
    try:
        spec, log = _spec(tmp_path, "full", steps=[1, 2, 3, 4]), tmp_path / "w.log"
        proc = _worker_env(spec, server.url, "full", tmp_path / "j.jsonl", log, **_fault_env())
        assert proc.wait(timeout=600) == 1, log.read_text()[-3000:]
        out = log.read_text()
        assert "Traceback" not in out
        assert out.count("Error: the artifact store refused a file") == 1, out[-3000:]
        runs = _all_runs(server.url, "full")
        # the sweep's spec is its first artifact: the full store is found before any config is measured
        measured = [r for r in runs if r.data.tags.get(schema.T_KIND) == schema.KIND_MEASUREMENT]
        assert not [r for r in measured if r.info.status != "FAILED"]
        sweeps = [r for r in runs if r.data.tags.get(schema.T_KIND) == schema.KIND_SWEEP]
        assert [r.info.status for r in sweeps] == ["FAILED"]
        assert "artifact store refused" in sweeps[0].data.tags[schema.T_FAILURE]
    finally:
        server.stop()


@pytest.mark.skipif(not os.environ.get("MLFLOW_ENERGY_TEST_POSTGRES"),
                    reason="needs Debian's PostgreSQL (.ci/run starts one; this test starts and stops its own)")
def test_three_workers_with_postgresql_stopped_and_restarted_measure_each_config_once(tmp_path):
    """3 workers talking to PostgreSQL directly; the database stops (fast shutdown) for 15 s and
    comes back: no traceback, every worker exits 0, each config FINISHED once, nothing RUNNING."""
    import shutil
    import tempfile

    pgdir = Path(tempfile.mkdtemp(prefix="pg-"))  # the postgres user must reach it: not under pytest's 0700 tmp

    def postgres(command: str) -> str:  # .ci/postgres start | down | up | stop on this instance
        return subprocess.run([str(REPO / ".ci" / "postgres"), command, str(pgdir)], check=True, capture_output=True,
                              text=True, timeout=180).stdout.strip()

    uri = postgres("start")  # postgresql://postgres@127.0.0.1:PORT/postgres, a fresh instance of its own
    spec = _spec(tmp_path, "pgdown", steps=[1, 2, 3, 4, 5, 6, 7, 8, 9])
    procs = [_worker_env(spec, uri, "pgdown", tmp_path / f"j{i}.jsonl", tmp_path / f"w{i}.log",
                         **_fault_env()) for i in range(3)]
    try:
        deadline = time.monotonic() + 400
        while _finished_count(uri, "pgdown") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        postgres("down")  # fast shutdown
        time.sleep(15)
        postgres("up")
        codes = [p.wait(timeout=600) for p in procs]
        full = [(tmp_path / f"w{i}.log").read_text() for i in range(3)]
        logs = "\n".join(text[-2000:] for text in full)
        assert codes == [0, 0, 0], logs
        assert not [text for text in full if "Traceback" in text], "\n".join(t[:3000] for t in full)
        assert any("unavailable" in text for text in full), logs  # the outage was seen, said in one line
        _assert_each_once(uri, "pgdown", 9)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        subprocess.run([str(REPO / ".ci" / "postgres"), "stop", str(pgdir)], capture_output=True, timeout=120)
        shutil.rmtree(pgdir, ignore_errors=True)
