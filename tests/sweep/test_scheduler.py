"""`--shard auto`: the sweep's shard from a Kubernetes Indexed Job or a Slurm job array, exactly once without claims.

The Slurm test submits a real 2-task job array to a single-node Slurm named by
``$MLFLOW_ENERGY_TEST_SLURM`` (the ``slurm.conf`` that ``.ci/slurm start DIR`` prints); without it,
the same environment variables are set by hand on two worker processes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.sweep import SweepSpec, expand, in_shard
from mlflow_energy.sweep.scheduler import scheduler_shard

ROOT = Path(__file__).parents[2]
SPEC = ("name: sched\nrepeats: 1\nwarmup: 0\nidle_seconds: 0.1\nprotocol: {target: 0}\n"
        "grid: {model: [tiny-sd2], resolution: [32], steps: [1, 3], guidance_scale: [1.0, 3.0]}\n")
SLURM_ENV = "MLFLOW_ENERGY_TEST_SLURM"


def _slurm(task: int, low: int = 0, high: int = 1, step: int = 1, count: int | None = None) -> dict[str, str]:
    count = (high - low) // step + 1 if count is None else count
    return {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(low), "SLURM_ARRAY_TASK_MAX": str(high),
            "SLURM_ARRAY_TASK_STEP": str(step), "SLURM_ARRAY_TASK_COUNT": str(count)}


@pytest.mark.parametrize(
    ("env", "shard"),
    [
        ({}, None),
        ({"JOB_COMPLETION_INDEX": "0", "MLFLOW_ENERGY_SHARD_COUNT": "4"}, (0, 4)),
        ({"JOB_COMPLETION_INDEX": "3", "MLFLOW_ENERGY_SHARD_COUNT": "4"}, (3, 4)),
        (_slurm(1), (1, 2)),
        (_slurm(5, 1, 7, 2), (2, 4)),  # --array=1-7:2
        (_slurm(12, 10, 13), (2, 4)),  # --array=10-13
        ({k: v for k, v in _slurm(3, 0, 3).items() if k != "SLURM_ARRAY_TASK_STEP"}, (3, 4)),
    ],
)
def test_the_shard_comes_from_the_scheduler_environment(env, shard):
    assert scheduler_shard(env)[0] == shard


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"JOB_COMPLETION_INDEX": "2"}, "MLFLOW_ENERGY_SHARD_COUNT"),  # the manifest forgot the count
        ({"JOB_COMPLETION_INDEX": "4", "MLFLOW_ENERGY_SHARD_COUNT": "4"}, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "x", "MLFLOW_ENERGY_SHARD_COUNT": "4"}, "JOB_COMPLETION_INDEX"),
        ({"JOB_COMPLETION_INDEX": "0", "MLFLOW_ENERGY_SHARD_COUNT": "0"}, "MLFLOW_ENERGY_SHARD_COUNT"),
        (_slurm(5, 0, 9, count=3), "SLURM array"),  # --array=0,5,9: a list, no shard order
        (_slurm(2, 0, 4, 2, count=3) | {"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_ID"),
        ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_MIN"),
    ],
)
def test_a_scheduler_variable_that_cannot_be_a_shard_is_one_line(env, field):
    with pytest.raises(ConfigError) as info:
        scheduler_shard(env)
    assert str(info.value).startswith(field) and "\n" not in str(info.value)


def test_the_tasks_of_an_array_split_the_spec_exactly():
    spec = SweepSpec.from_dict({"grid": {"model": ["tiny-sd2"], "resolution": [32, 64], "steps": [1, 2, 4, 8],
                                         "guidance_scale": [1.0, 2.0, 3.0]}})
    hashes = [c.config_hash() for task in range(1, 8, 2) for c in expand(spec, scheduler_shard(_slurm(task, 1, 7, 2))[0])]
    assert Counter(hashes) == Counter(c.config_hash() for c in expand(spec))


# ----------------------------------------------------------------------------- workers
def _env(tracking_uri: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION", "MLFLOW_ENERGY_SHARD"))}
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _sweep_argv(spec: Path, journal: Path | None = None) -> list[str]:
    argv = [sys.executable, "-c", "from mlflow_energy.cli import main; main()", "sweep", str(spec), "--experiment",
            "sched", "--shard", "auto", "--no-progress"]
    return argv + (["--journal", str(journal)] if journal else [])


def _check_exactly_once(n_configs: int, shards: tuple[str, ...] = ("0/2", "1/2")) -> None:
    client = MlflowClient()
    exp = client.get_experiment_by_name("sched").experiment_id
    runs = client.search_runs([exp], max_results=1000)
    finished = Counter(r.data.tags.get(schema.T_CONFIG_HASH) for r in runs
                       if r.data.tags.get(schema.T_KIND) == schema.KIND_MEASUREMENT and r.info.status == "FINISHED")
    assert len(finished) == n_configs and set(finished.values()) == {1}, finished
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert not [r for r in runs if r.data.tags.get(schema.T_KIND) == "claims"]  # no claims under a scheduler
    expected = shards
    shards = sorted(r.data.tags.get(schema.T_SHARD) for r in runs if r.data.tags.get(schema.T_KIND) == schema.KIND_SWEEP)
    assert set(expected) <= set(shards), shards


@pytest.mark.slow
def test_two_array_tasks_measure_each_config_once_and_a_retried_task_resumes(tmp_path, tracking_uri):
    spec = tmp_path / "sched.yaml"
    spec.write_text(SPEC)
    split = [in_shard(c, (0, 2)) for c in SweepSpec.from_yaml(str(spec)).configs()]
    assert 0 < sum(split) < len(split), "the grid must give both tasks configs (config hashes changed?)"
    procs = [subprocess.Popen(_sweep_argv(spec, tmp_path / f"j{task}.jsonl"), cwd=tmp_path,
                              env=_env(tracking_uri, _slurm(task)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for task in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("from the Slurm job array" in out and "no claims" in out for out in outs), outs
    _check_exactly_once(4)
    # the scheduler retries task 1 (same index, same array): it finds its configs FINISHED
    retry = subprocess.run(_sweep_argv(spec, tmp_path / "j1.jsonl"), cwd=tmp_path, env=_env(tracking_uri, _slurm(1)),
                           capture_output=True, text=True, timeout=600)
    assert retry.returncode == 0 and " 0 measured" in retry.stdout, retry.stdout + retry.stderr
    _check_exactly_once(4)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(SLURM_ENV), reason=f"no Slurm: ${SLURM_ENV} names no slurm.conf "
                    "(`.ci/slurm start DIR` prints one)")
def test_a_real_slurm_job_array_measures_each_config_once(tmp_path, tracking_uri):
    spec = tmp_path / "sched.yaml"
    spec.write_text(SPEC)
    script = tmp_path / "sweep.sbatch"  # as projects/slurm/sweep.sbatch: --shard auto, one journal per task
    script.write_text(f"#!/bin/bash\nset -e\nexec {shlex.join(_sweep_argv(spec))} "
                      f"--journal \"{tmp_path}/journal-${{SLURM_ARRAY_TASK_ID}}.jsonl\"\n")
    env = _env(tracking_uri, {"SLURM_CONF": os.environ[SLURM_ENV]})

    def submit() -> None:
        done = subprocess.run(["sbatch", "--wait", "--array=0-1", "--cpus-per-task=1", "-o", str(tmp_path / "%A_%a.out"),
                               str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        logs = "".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
        assert done.returncode == 0, done.stdout + done.stderr + logs

    submit()
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
    assert logs.count("from the Slurm job array") == 2, logs
    _check_exactly_once(4)
    for out in tmp_path.glob("*.out"):
        out.unlink()
    submit()  # the whole array again (every task retried): nothing new
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
    assert logs.count(" 0 measured") == 2, logs
    _check_exactly_once(4)


# ----------------------------------------------------------------------------- a task resubmitted alone
def test_a_slurm_task_resubmitted_alone_needs_the_arrays_size():
    """`sbatch --array=1` after a task of `--array=0-2` failed: it sees an array of one task (COUNT=1,
    MIN=MAX=ID=1) and would be shard 0 of 1, the whole spec. Refused unless the count is given."""
    from mlflow_energy.sweep.scheduler import PartialArray, parse_auto

    alone = _slurm(1, 1, 1)
    with pytest.raises(PartialArray) as info:
        scheduler_shard(alone)
    assert str(info.value).startswith("SLURM_ARRAY_TASK_ID") and "auto/N" in str(info.value)
    assert "\n" not in str(info.value)
    assert scheduler_shard(alone, count=3)[0] == (1, 3)
    assert scheduler_shard(_slurm(0, 0, 0))[0] == (0, 1)  # --array=0 alone is a whole array of one task
    assert scheduler_shard(_slurm(2, 0, 2), count=3)[0] == (2, 3)  # the array's own count: the same shard
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_ID"):
        scheduler_shard(_slurm(4, 4, 4), count=3)  # an index outside the given count
    with pytest.raises(ConfigError, match="array's own count"):
        scheduler_shard(_slurm(1, 0, 3), count=3)
    assert scheduler_shard({"JOB_COMPLETION_INDEX": "2"}, count=3)[0] == (2, 3)
    assert parse_auto("auto/3") == (True, 3) and parse_auto(" AUTO ") == (True, None)
    with pytest.raises(ConfigError, match="shard"):
        parse_auto("auto/0")


@pytest.mark.slow
def test_a_resubmitted_array_index_is_refused_or_falls_back_to_claims(tmp_path, tracking_uri):
    """Tasks 0 and 2 of --array=0-2 run; task 1 is resubmitted alone. Against a server without a claims
    database it is refused in one line (exit 2, nothing measured); on a SQL store it falls back to the
    claims and measures only what is missing: every config FINISHED once."""
    spec = tmp_path / "sched.yaml"
    spec.write_text(SPEC)
    for task in (0, 2):
        done = subprocess.run(_sweep_argv(spec, tmp_path / f"j{task}.jsonl"), cwd=tmp_path,
                              env=_env(tracking_uri, _slurm(task, 0, 2)), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    alone = _slurm(1, 1, 1)
    refused = subprocess.run(_sweep_argv(spec, tmp_path / "j1.jsonl"), cwd=tmp_path,
                             env=_env("http://127.0.0.1:9", alone), capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and "auto/N" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    fallback = subprocess.run(_sweep_argv(spec, tmp_path / "j1.jsonl"), cwd=tmp_path, env=_env(tracking_uri, alone),
                              capture_output=True, text=True, timeout=600)
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr
    assert "claims database gives each config to one worker" in fallback.stdout, fallback.stdout
    _check_exactly_once(4, shards=())


# ----------------------------------------------------------------------------- shards: in the spec
def test_the_specs_shards_key_is_checked_in_one_line():
    grid = {"model": ["tiny-sd2"]}
    assert SweepSpec.from_dict({"grid": grid, "shards": 3}).shards == 3
    assert SweepSpec.from_dict({"grid": grid}).shards is None
    for bad in (0, -2, True, 2.5, "3", 100_001):
        with pytest.raises(ConfigError) as info:
            SweepSpec.from_dict({"grid": grid, "shards": bad})
        message = str(info.value)
        assert message.startswith(f"shards={bad!r}") and "an integer from 1" in message and "\n" not in message


def _shard_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], spec_text: str):
    from click.testing import CliRunner

    from mlflow_energy.cli import main

    for key in [k for k in os.environ if k.startswith(("SLURM_", "JOB_COMPLETION", "MLFLOW_ENERGY_SHARD"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = tmp_path / "sched.yaml"
    spec.write_text(spec_text)
    return CliRunner().invoke(main, ["sweep", str(spec), "--shard", "auto", "--no-tracking", "--no-progress",
                                     "--output", str(tmp_path / "out.jsonl")])


def test_a_resubmitted_task_takes_its_shard_count_from_the_specs_shards_key(tmp_path, monkeypatch):
    """`sbatch --array=I` resubmitted alone knows its shard from `shards: 3` in the spec, as with
    `--shard auto/3`; a spec whose count differs from the array the task sees is refused in one line."""
    text = SPEC.replace("grid: {model: [tiny-sd2], resolution: [32], steps: [1, 3], guidance_scale: [1.0, 3.0]}",
                        "grid: {model: [tiny-sd2], resolution: [32], steps: [1], guidance_scale: [1.0]}")
    only = SweepSpec.from_dict({"grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1],
                                         "guidance_scale": [1.0]}}).configs()[0]
    task = next(t for t in (1, 2) if not in_shard(only, (t, 3)))  # a shard with no config: nothing to measure
    done = _shard_auto(tmp_path, monkeypatch, _slurm(task, task, task), text + "shards: 3\n")
    assert done.exit_code == 0, done.output
    assert f"shard {task}/3 from the Slurm job array" in done.output and "shards: 3 in the sweep spec" in done.output
    assert "0 measured" in done.output
    wrong = _shard_auto(tmp_path, monkeypatch, _slurm(1, 0, 3), text + "shards: 3\n")  # the array has 4 tasks
    assert wrong.exit_code == 2, wrong.output
    lines = wrong.output.strip().splitlines()
    assert len(lines) == 1 and "shards=3" in lines[0] and "SLURM_ARRAY_TASK_COUNT=4" in lines[0], wrong.output
    assert scheduler_shard({"JOB_COMPLETION_INDEX": "2"}, count=3, count_from="shards")[0] == (2, 3)
    with pytest.raises(ConfigError, match="^shards=3 .*MLFLOW_ENERGY_SHARD_COUNT=4"):
        scheduler_shard({"JOB_COMPLETION_INDEX": "2", "MLFLOW_ENERGY_SHARD_COUNT": "4"}, count=3, count_from="shards")
