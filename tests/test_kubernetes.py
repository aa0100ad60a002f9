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


# ----------------------------------------------------------------------------- Indexed Jobs
def _validated(manifest: dict) -> dict:
    """``manifest`` through the Kubernetes client's own models and back: a misspelt or misplaced
    field is dropped by the models, a wrong type or a missing required field raises."""
    kubernetes = pytest.importorskip("kubernetes", reason="the kubernetes client package (test extra)")
    api = kubernetes.client.ApiClient()
    job = api._ApiClient__deserialize(manifest, "V1Job")
    assert isinstance(job, kubernetes.client.V1Job)
    back = api.sanitize_for_serialization(job)
    expected = json.loads(json.dumps(manifest))
    for container in expected["spec"]["template"]["spec"]["containers"]:  # quantities are strings in the models
        for group in container.get("resources", {}).values():
            group.update({k: str(v) for k, v in group.items()})
    assert back == expected, "fields the Kubernetes models do not know were dropped"
    return manifest


def _env(container: dict) -> dict:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _check_indexed(job: dict) -> int:
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["podReplacementPolicy"] == "Failed" and spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # backoffLimitPerIndex requires it
    container = spec["template"]["spec"]["containers"][0]
    assert _env(container)["MLFLOW_ENERGY_SHARD_COUNT"] == str(spec["completions"])
    return spec["completions"]


def test_the_mlflow_backend_template_is_an_indexed_job_kubernetes_accepts(kube_config):
    pytest.importorskip("kubernetes", reason="mlflow.projects.kubernetes needs the kubernetes client package")
    from mlflow.projects.kubernetes import _get_kubernetes_job_definition

    job = _get_kubernetes_job_definition(
        "mlflow-energy-worker", "registry.example.com/mlflow-energy-worker:abc", "sha256:0",
        ["mlflow-energy", "sweep", "spec.yaml", "--shard", "auto"],
        {"MLFLOW_RUN_ID": "r1", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}, kube_config["kube-job-template"],
    )
    _check_indexed(_validated(job))


def test_the_plain_indexed_job_is_one_kubernetes_accepts():
    import yaml

    job = yaml.safe_load((KUBE / "indexed-job.yaml").read_text())
    count = _check_indexed(_validated(job))
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["mlflow-energy", "sweep"] and command[command.index("--shard") + 1] == "auto"
    assert count == 4


def test_the_project_command_takes_its_shard_from_the_job():
    from mlflow.projects._project_spec import load_project

    project = load_project(str(KUBE))
    command = project.get_entry_point("main").compute_command({"spec": "s.yaml", "experiment": "k8s"}, str(KUBE))
    assert "--shard auto" in command


def test_the_indexes_of_the_job_split_a_spec_exactly(kube_config):
    """Every pod's `--shard auto` (its JOB_COMPLETION_INDEX and the manifest's count) together: each config once."""
    from mlflow_energy.sweep import SweepSpec, expand
    from mlflow_energy.sweep.scheduler import scheduler_shard

    spec = SweepSpec.from_dict({"grid": {"model": ["tiny-sd2", "tiny-sdxl"], "resolution": [32, 64],
                                         "steps": [1, 2, 4], "guidance_scale": [1.0, 5.0]}})
    job = kube_config["kube-job-template"]
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    seen: list[str] = []
    for index in range(job["spec"]["completions"]):
        shard, why = scheduler_shard({**env, "JOB_COMPLETION_INDEX": str(index)})
        assert shard == (index, job["spec"]["completions"]) and "Kubernetes" in why
        seen += [c.config_hash() for c in expand(spec, shard)]
    assert sorted(seen) == sorted(c.config_hash() for c in expand(spec)) and len(set(seen)) == len(seen)
