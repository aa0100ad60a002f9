"""The MLflow Project: entry points, and `mlflow run . -e measure` end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _project() -> dict:
    return yaml.safe_load((REPO / "MLproject").read_text())


def test_entry_points_and_parameters():
    project = _project()
    assert project["name"] == "mlflow-energy"
    assert project["conda_env"] == "conda.yaml"
    points = project["entry_points"]
    assert {"main", "measure", "sweep"} <= set(points)
    measure = points["measure"]["parameters"]
    for name in ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "device",
                 "repeats", "warmup", "experiment", "weights", "scheduler", "seed", "output"):
        assert name in measure, name
        assert "{" + name + "}" in points["measure"]["command"], name
    for name in ("spec", "experiment", "shard", "output"):
        assert "{" + name + "}" in points["sweep"]["command"]
    assert points["main"]["command"].startswith("mlflow-energy sweep {spec}")
    assert points["main"]["parameters"]["spec"]["default"] == "projects/cpu-demo.yaml"
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    assert any(str(d).startswith("python") for d in conda["dependencies"])


def test_mlflow_parses_the_project():
    from mlflow.projects import _project_spec

    project = _project_spec.load_project(str(REPO))
    entry = project.get_entry_point("measure")
    command = entry.compute_command({"model": "tiny-sd2", "steps": "2"}, storage_dir=None)
    assert command.startswith("mlflow-energy measure --model tiny-sd2")
    assert "--steps 2" in command and "--height ''" in command


@pytest.mark.slow
def test_mlflow_run_measure_entry_point(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "projects", project / "projects")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "mlflow"), "run", str(project), "-e", "measure",
        "--env-manager", "local", "--experiment-name", "proj",
        "-P", "model=tiny-sd2", "-P", "height=32", "-P", "width=32", "-P", "steps=1",
        "-P", "repeats=1", "-P", "warmup=0",
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("proj")
    runs = client.search_runs([exp.experiment_id])
    measurement = [r for r in runs if r.data.tags.get("mlflow_energy.kind") == "measurement"]
    assert len(measurement) == 1
    assert measurement[0].info.status == "FINISHED"
    assert measurement[0].data.params["model"] == "tiny-sd2"
    assert "energy/total_j" in measurement[0].data.metrics
    project_run = [r for r in runs if r.info.run_id == measurement[0].data.tags.get("mlflow.parentRunId")]
    assert len(project_run) == 1 and project_run[0].info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
