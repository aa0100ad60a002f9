"""Shared fixtures of the autologging tests: a fresh store and experiment per test, tiny-sd2's components."""

from __future__ import annotations

import pytest

import mlflow_energy


@pytest.fixture
def autolog_off(tracking_uri, request):
    """A fresh store and an experiment named after the test module (an earlier test may leave another
    store's experiment active), no active run; autolog off after the test."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_experiment(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_"))
    yield
    mlflow_energy.autolog(disable=True)


@pytest.fixture(scope="session")
def sd_components():
    """The components of a tiny-sd2 pipeline (random weights), built once."""
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    return dict(build_pipeline(InferenceConfig(model="tiny-sd2").validate()).components)
