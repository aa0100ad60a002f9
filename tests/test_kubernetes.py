"""projects/kubernetes: the backend config, the Job template and the project, checked with MLflow's own code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
KUBE = ROOT / "projects" / "kubernetes"


@pytest.fixture
def kube_config(monkeypatch):
    from mlflow.projects import _parse_kubernetes_config

    monkeypatch.chdir(ROOT)  # the template path is relative to where `mlflow run` starts
    return _parse_kubernetes_config(json.loads((KUBE / "kubernetes_config.json").read_text()))


def test_backend_config_has_what_mlflow_requires(kube_config):
    assert kube_config["repository-uri"]
    job = kube_config["kube-job-template"]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    # the fields mlflow.projects.kubernetes._get_kubernetes_job_definition writes into
    assert "name" in job["metadata"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name", "image", "command"} <= set(container)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_job_definition_runs_the_sweep_on_one_gpu_per_pod(kube_config):
    pytest.importorskip("kubernetes", reason="mlflow.projects.kubernetes needs the kubernetes client package")
    from mlflow.projects.kubernetes import _get_kubernetes_job_definition

    job = _get_kubernetes_job_definition(
        "mlflow-energy-worker", "registry.example.com/mlflow-energy-worker:abc", "sha256:0", ["mlflow-energy", "sweep"],
        {"MLFLOW_RUN_ID": "r1", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}, kube_config["kube-job-template"],
    )
    spec = job["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/mlflow-energy-worker:abc@sha256:0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_RUN_ID"] == "r1" and "MLFLOW_ENERGY_HEARTBEAT_S" in env
    assert job["metadata"]["name"].startswith("mlflow-energy-worker-")


def test_project_is_a_docker_project_whose_command_is_a_sweep():
    from mlflow.projects._project_spec import load_project
    from mlflow.projects.docker import validate_docker_env

    project = load_project(str(KUBE))
    validate_docker_env(project)
    command = project.get_entry_point("main").compute_command({"spec": "projects/cpu-demo.yaml",
                                                                "experiment": "k8s"}, str(KUBE))
    assert command.startswith("mlflow-energy sweep projects/cpu-demo.yaml --experiment k8s")
    assert "--journal" in command
