"""What a new user's terminal shows: the project's own lines, one line per error, no tracebacks or
library warnings. Each command runs as a real ``mlflow-energy`` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOISE = ("Traceback", "Warning", "WARNING", "[transformers]", "requires torchvision", "CloudPickle",
         "Successfully registered", "Downloading artifacts", "[W ")


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    full.pop("MLFLOW_LOGGING_LEVEL", None)
    return subprocess.run([sys.executable, "-c", "from mlflow_energy.cli import main; main()", *args],
                          capture_output=True, text=True, env=full, timeout=timeout)


def assert_clean(stderr: str) -> None:
    bad = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
    assert not bad, stderr


def one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], proc.stderr
    assert_clean(proc.stderr)


def test_serve_dash_h_is_help_and_host_is_a_long_option():
    proc = cli("serve", "-h")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: " in proc.stdout and "--host" in proc.stdout
    assert_clean(proc.stderr)


def test_serve_a_model_that_is_not_registered_is_one_line_before_serving(tracking_uri):
    proc = cli("serve", "-m", "models:/energy@champion")
    one_line_error(proc, "model_uri='models:/energy@champion'")
    assert "serving" not in proc.stdout


def test_measure_mode_search_without_the_device_is_one_line_before_optuna(tracking_uri):
    proc = cli("search", "--mode", "measure", "--model", "tiny-sd2", "--resolution", "32", "--steps", "1:2",
               "--trials", "2", "--device", "cuda")
    one_line_error(proc, "device='cuda'")


@pytest.mark.slow
def test_fit_then_search_outside_the_range_then_refit(tracking_uri, tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fit"))
    try:
        from test_fit import log_runs, synthetic_runs
    finally:
        sys.path.pop(0)
    log_runs(synthetic_runs(families=("tiny-sd2", "tiny-sdxl"), hardware=("NVIDIA H100 80GB HBM3",), sizes=(32, 64),
                            steps=(1, 4), batches=(1,)), "synthetic")
    args = ("fit", "--experiment", "synthetic", "--registered-model", "energy", "--bootstrap", "0",
            "--max-folds", "3", "--no-plots")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert_clean(first.stderr)
    assert "registered: models:/energy/1" in first.stdout

    import mlflow

    from mlflow_energy import schema

    mv = mlflow.MlflowClient().get_model_version("energy", "1")
    assert "fitted on **8 runs** of experiment `synthetic`" in mv.description
    for key in (schema.T_FIT_FINGERPRINT, schema.T_MV_FLOPS_RANGE, schema.T_MV_CV_MAPE, schema.T_HARDWARE,
                schema.T_ENERGY_SOURCE, schema.T_ENERGY_SCOPE, schema.T_MV_TRAINING_DATA):
        assert mv.tags.get(key), key
    again = cli(*args)
    assert again.returncode == 0 and "reusing models:/energy/1" in again.stdout, again.stdout + again.stderr
    assert len(mlflow.MlflowClient().search_model_versions("name = 'energy'")) == 1

    far = cli("search", "--model-uri", "models:/energy@champion", "--hardware", "NVIDIA H100 80GB HBM3",
              "--model", "tiny-sd2", "--resolution", "1024", "--steps", "20:50", "--trials", "2", "--no-plots")
    one_line_error(far, "height=1024 is not allowed: expected height 32 to 64, what the model has seen")
    assert mv.tags[schema.T_SEEN_PREFIX + "height"] == "32,64"  # what it has seen is on the version too
