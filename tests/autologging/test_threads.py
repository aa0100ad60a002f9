"""autolog() under threads: concurrent first calls, components shared across threads, overlapping windows."""

from __future__ import annotations

import sys
import threading
import warnings

import numpy as np
import pytest

import mlflow_energy
from mlflow_energy import schema

pytestmark = pytest.mark.usefixtures("autolog_off")






def _runs():
    import mlflow

    flush = getattr(mlflow_energy, "flush", None)
    if flush is not None:
        flush()
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_concurrent_first_calls_on_shared_components(sd_components) -> None:
    """Two pipelines over the same modules, called at once from two threads (the meter opened by both)."""
    from diffusers import StableDiffusionPipeline

    from mlflow_energy.autologging import patch

    patch._METERS.clear()  # both threads open the meter (and import Zeus) on their first call
    stdout = sys.stdout
    pipes = [StableDiffusionPipeline(**sd_components) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def step_end(pipe, i, t, kwargs):  # both calls are in flight before either goes past its first step
        if i == 0:
            barrier.wait()
        return kwargs

    def call(pipe) -> None:
        try:
            pipe("a red bicycle", num_inference_steps=3, height=32, width=32, callback_on_step_end=step_end)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    mlflow_energy.autolog(silent=True)
    threads = [threading.Thread(target=call, args=(p,)) for p in pipes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sys.stdout is stdout and sys.stdout is not None  # the user's prints still go somewhere
    runs = _runs()
    assert len(runs) == 2
    for run in runs:
        p, m, tags = run.data.params, run.data.metrics, run.data.tags
        assert run.info.status == "FINISHED"
        assert (p[schema.P_DENOISER_CALLS], p[schema.P_SCHEDULER_STEPS]) == ("3", "3")
        for phase in schema.PHASES:
            assert m[schema.energy_key(phase)] > 0
        assert tags[schema.T_OVERLAPPED] == "1"  # the other call ran at the same time


def test_a_call_alone_is_not_tagged_as_overlapped(sd_components) -> None:
    from diffusers import StableDiffusionPipeline

    mlflow_energy.autolog(silent=True)
    StableDiffusionPipeline(**sd_components)("a red bicycle", num_inference_steps=2, height=32, width=32)
    (run,) = _runs()
    assert schema.T_OVERLAPPED not in run.data.tags


def test_a_success_after_a_caught_failure_clears_the_failure_tag(sd_components) -> None:
    import mlflow
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**sd_components)
    mlflow_energy.autolog(silent=True)
    with mlflow.start_run() as run:
        with pytest.raises(ValueError):
            pipe("a red bicycle", num_inference_steps=2, height=33, width=32)  # not a multiple of 8
        pipe("a red bicycle", num_inference_steps=2, height=32, width=32)
    (logged,) = _runs()
    assert logged.info.run_id == run.info.run_id and logged.info.status == "FINISHED"
    assert schema.T_FAILURE not in logged.data.tags
    assert logged.data.metrics[schema.M_ENERGY_TOTAL] > 0


def test_nan_images_raise_no_numpy_warning_in_user_code() -> None:
    from mlflow_energy.autologging.identify import first_image

    out = type("Out", (), {"images": np.full((1, 8, 8, 3), np.nan, dtype="float32")})()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = first_image(out)
    assert image is not None and np.asarray(image).max() == 0
