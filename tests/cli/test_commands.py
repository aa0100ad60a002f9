"""`mlflow-energy measure`, `sweep` and `ingest` through the command line."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_energy import schema
from mlflow_energy.cli import main

SMALL = ["--model", "tiny-sd2", "--height", "32", "--width", "32", "--steps", "1", "--repeats", "1", "--warmup", "0"]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--model", "nope", "model='nope' is not allowed: expected one of "),
        ("--height", "33", "height=33 is not allowed: expected a positive multiple of 8 for tiny-sd2"),
        ("--steps", "0", "steps=0 is not allowed: expected an integer from 1 to 1000"),
        ("--batch-size", "0", "batch_size=0 is not allowed: expected an integer from 1 to 1024"),
        ("--precision", "fp16", "precision='fp16' is not allowed: expected one of fp32, bf16 on device cpu"),
        ("--guidance-scale", "-1", "guidance_scale='-1' is not allowed: expected a finite number >= 0 and <= 100"),
        ("--steps", "many", "steps='many' is not allowed: expected an integer from 1 to 1000"),
        ("--device", "tpu", "device='tpu' is not allowed"),
        ("--scheduler", "FancyScheduler", "scheduler='FancyScheduler' is not allowed"),
    ],
)
def test_bad_input_is_one_line_exit_2(flag, value, expected, tracking_uri):
    result = _invoke(["measure", *_replace(SMALL, flag, value)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_cuda_on_a_machine_without_it(tracking_uri):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - GPU hosts
        pytest.skip("this machine has CUDA")
    result = _invoke(["measure", *_replace(SMALL, "--device", "cuda")])
    assert result.exit_code == 2
    assert "device='cuda' is not allowed" in result.output


def test_measure_prints_table_and_logs_run(tracking_uri, tmp_path, no_rapl):
    out = tmp_path / "m.jsonl"
    result = _invoke(["measure", *SMALL, "--experiment", "cli", "--output", str(out)])
    assert result.exit_code == 0, result.output
    for phase in ("text_encode", "denoise", "decode", "total", "whole window"):
        assert phase in result.output
    assert "estimate:cpu-tdp" in result.output
    run_id = [line.split(": ")[1] for line in result.output.splitlines() if line.startswith("run id: ")][0]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert set(schema.RUN_METRICS) <= set(run.data.metrics)
    assert len(out.read_text().splitlines()) == 1


def test_measure_no_tracking_needs_output(tracking_uri):
    result = _invoke(["measure", *SMALL, "--no-tracking"])
    assert result.exit_code == 2
    assert "output=None" in result.output


def test_sweep_and_ingest_commands(tracking_uri, tmp_path, no_rapl):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "cli-sweep", "device": "cpu", "repeats": 1, "warmup": 0,
        "grid": {"model": ["tiny-sd2"], "resolution": [32, 36], "steps": [1]},
    }))
    out = tmp_path / "sweep.jsonl"
    result = _invoke(["sweep", str(spec), "--experiment", "s", "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 configs: 1 measured, 1 failed, 0 skipped" in result.output
    assert " J/img (estimate) +-" in result.output and " J estimated (no energy counter)" in result.output  # no RAPL
    assert "FAILED tiny-sd2 36x36" in result.output
    assert "sweep run id: " in result.output
    assert "/runs?workflowType=machine_learning&viewStateShareKey=energy" in result.output  # the UI address of the energy view
    again = _invoke(["sweep", str(spec), "--experiment", "s", "--shard", "0/1", "--no-progress"])
    assert "1 skipped" in again.output
    result = _invoke(["ingest", str(out), "--experiment", "from-file"])
    assert result.exit_code == 0, result.output
    assert "logged 1 run(s), skipped 0" in result.output
    result = _invoke(["ingest", str(out), "--experiment", "from-file"])
    assert "logged 0 run(s), skipped 1" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sweep", "missing.yaml"], "spec='missing.yaml' is not allowed"),
        (["sweep", "projects/cpu-demo.yaml", "--shard", "3/2"], "shard='3/2' is not allowed"),
        (["ingest", "missing.jsonl"], "file='missing.jsonl' is not allowed"),
    ],
)
def test_sweep_and_ingest_bad_input(args, expected, monkeypatch):
    import os

    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    result = _invoke(args)
    assert result.exit_code == 2
    assert expected in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_measure_that_fails_at_run_time_leaves_a_failed_run_with_the_reason(tracking_uri: str, tmp_path) -> None:
    missing = tmp_path / "no-such-pipeline"
    result = _invoke(["measure", *SMALL, "--weights", str(missing), "--experiment", "fails"])
    assert result.exit_code == 1
    assert "could not be measured" in result.output and "FAILED run" in result.output
    client = MlflowClient()
    exp = client.get_experiment_by_name("fails")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags[schema.T_FAILURE]
    assert runs[0].data.params[schema.P_WEIGHTS] == str(missing)


def test_families_lists_every_full_size_family() -> None:
    from mlflow_energy.families import family_names

    result = _invoke(["families"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()[1:]]
    assert listed == family_names(tiny=False)


def test_sweep_with_an_energy_counter_says_measured(tracking_uri, tmp_path, fake_rapl):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "counted", "device": "cpu", "repeats": 1, "warmup": 0,
                                    "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": [1]}}))
    result = _invoke(["sweep", str(spec), "--experiment", "c", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "estimate" not in result.output
    assert " J/img +-" in result.output and " J measured" in result.output
