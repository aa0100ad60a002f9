"""mlflow_energy.autolog(): real tiny diffusers pipelines, a real SQLite MLflow store."""

from __future__ import annotations

import pytest
import torch

import mlflow_energy
from mlflow_energy import schema

STEPS = 3


pytestmark = pytest.mark.usefixtures("autolog_off")


@pytest.fixture(scope="module")
def sd_pipe():
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    return build_pipeline(InferenceConfig(model="tiny-sd2").validate())




def _runs(order: str = "attributes.start_time ASC"):
    import mlflow

    mlflow_energy.flush()  # calls are logged by a background thread
    return mlflow.search_runs(search_all_experiments=True, output_format="list", order_by=[order])


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


def test_an_unmodified_call_logs_phases_steps_flops_and_tags(tracking_uri, sd_pipe) -> None:
    mlflow_energy.autolog()
    sd_pipe("a red bicycle", num_inference_steps=STEPS, height=32, width=32)
    (run,) = _runs()
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny-sd2-32x32-3st"
    assert t[schema.T_KIND] == schema.KIND_AUTOLOG
    assert t[schema.T_ENERGY_SOURCE] in ("zeus:rapl", "estimate:cpu-tdp")
    assert t[schema.T_HARDWARE]
    assert p[schema.P_MODEL] == "tiny-sd2" and p[schema.P_PIPELINE_CLASS] == "StableDiffusionPipeline"
    assert (p[schema.P_HEIGHT], p[schema.P_WIDTH], p[schema.P_STEPS], p[schema.P_BATCH_SIZE]) == ("32", "32", "3", "1")
    for phase in schema.PHASES:
        assert m[schema.energy_key(phase)] > 0 and m[schema.time_key(phase)] > 0
    phase_sum = sum(m[schema.energy_key(ph)] for ph in schema.PHASES) + m[schema.M_ENERGY_OTHER]
    assert phase_sum == pytest.approx(m[schema.M_ENERGY_TOTAL], rel=1e-6)
    steps = _history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)
    assert [s for s, _ in steps] == list(range(STEPS))
    assert sum(v for _, v in steps) == pytest.approx(m[schema.M_ENERGY_DENOISE], rel=1e-6)
    assert m[schema.M_FLOPS_DENOISE] > 0 and m[schema.M_FLOPS_TOTAL] > m[schema.M_FLOPS_DENOISE]


def test_hooks_are_removed_after_the_call(tracking_uri, sd_pipe) -> None:
    mlflow_energy.autolog(log_images=False)
    sd_pipe("a red bicycle", num_inference_steps=1, height=32, width=32)
    assert not sd_pipe.unet._forward_hooks and not sd_pipe.unet._forward_pre_hooks
    assert "decode" not in vars(sd_pipe.vae)


def test_a_pipeline_class_without_an_adapter_is_measured(tracking_uri, sd_pipe) -> None:
    """StableDiffusionPAGPipeline: same components, a class the project has no phase adapter for."""
    mlflow_energy.autolog(log_images=False)
    from diffusers import StableDiffusionPAGPipeline

    pag = StableDiffusionPAGPipeline.from_pipe(sd_pipe)
    pag.set_progress_bar_config(disable=True)
    pag("a red bicycle", num_inference_steps=2, height=32, width=32, pag_scale=0.0)
    (run,) = _runs()
    assert run.data.params[schema.P_PIPELINE_CLASS] == "StableDiffusionPAGPipeline"
    assert run.data.params[schema.P_MODEL] == "tiny-sd2"  # recognised by its components
    assert len(_history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)) == 2
    assert run.data.metrics[schema.M_ENERGY_DECODE] > 0


def test_a_subclass_defined_after_autolog_is_patched_and_measured_once(tracking_uri, sd_pipe) -> None:
    mlflow_energy.autolog(log_images=False)
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    class MyPipeline(DiffusionPipeline):
        """A hand-written text-to-image loop over the same components (unknown to the project)."""

        def __init__(self, text_encoder, tokenizer, unet, vae, scheduler):
            super().__init__()
            self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, vae=vae,
                                  scheduler=scheduler)

        @torch.no_grad()
        def __call__(self, prompt: str, num_inference_steps: int = 2, height: int = 32, width: int = 32):
            ids = self.tokenizer([prompt], padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            embeds = self.text_encoder(ids)[0]
            down = 2 ** (len(self.vae.config.block_out_channels) - 1)
            latents = torch.randn(1, self.unet.config.in_channels, height // down, width // down)
            self.scheduler.set_timesteps(num_inference_steps)
            for t in self.scheduler.timesteps:
                noise = self.unet(latents, t, encoder_hidden_states=embeds).sample
                latents = self.scheduler.step(noise, t, latents).prev_sample
            return (self.vae.decode(latents).sample.clamp(-1, 1) + 1) / 2

    class Wrapper(StableDiffusionPipeline):
        def __call__(self, *args, **kwargs):  # calls the patched parent: measured once
            return super().__call__(*args, **kwargs)

    mine = MyPipeline(sd_pipe.text_encoder, sd_pipe.tokenizer, sd_pipe.unet, sd_pipe.vae, sd_pipe.scheduler)
    mine("a red bicycle", num_inference_steps=2)
    Wrapper(**sd_pipe.components)("a cat", num_inference_steps=1, height=32, width=32)
    first, second = _runs()
    assert first.data.params[schema.P_PIPELINE_CLASS] == "MyPipeline"
    assert first.data.params[schema.P_STEPS] == "2"
    assert len(_history(first.info.run_id, schema.M_ENERGY_DENOISE_STEP)) == 2
    assert first.data.metrics[schema.M_ENERGY_TEXT_ENCODE] > 0 and first.data.metrics[schema.M_ENERGY_DECODE] > 0
    assert second.data.params[schema.P_PIPELINE_CLASS] == "Wrapper"
    assert len(_history(second.info.run_id, schema.M_ENERGY_DENOISE_STEP)) == 1


def test_active_run_then_nested_children(tracking_uri, sd_pipe) -> None:
    import mlflow

    mlflow_energy.autolog(log_images=False)
    with mlflow.start_run(run_name="mine") as parent:
        sd_pipe("one", num_inference_steps=1, height=32, width=32)
        sd_pipe("two", num_inference_steps=2, height=32, width=32)
    runs = {r.info.run_name: r for r in _runs()}
    assert runs["mine"].data.params[schema.P_STEPS] == "1"  # the first call logs into your run
    child = runs["tiny-sd2-32x32-2st"]
    assert child.data.tags[schema.T_PARENT_RUN_ID] == parent.info.run_id
    assert {r.info.status for r in runs.values()} == {"FINISHED"}


def test_images_logged_unless_disabled(tracking_uri, sd_pipe) -> None:
    from mlflow import MlflowClient

    mlflow_energy.autolog()
    sd_pipe("one", num_inference_steps=1, height=32, width=32)
    mlflow_energy.autolog(log_images=False)
    sd_pipe("two", num_inference_steps=1, height=32, width=32)
    with_image, without = _runs()
    files = [[f.path for f in MlflowClient().list_artifacts(r.info.run_id)] for r in (with_image, without)]
    assert schema.A_IMAGE_PNG in files[0] and schema.A_IMAGE_PNG not in files[1]


def test_a_failing_call_becomes_a_failed_run_and_raises(tracking_uri, sd_pipe) -> None:
    mlflow_energy.autolog(log_images=False)
    with pytest.raises(ValueError):
        sd_pipe("bad", num_inference_steps=1, height=33, width=32)
    (run,) = _runs()
    assert run.info.status == "FAILED"
    assert "ValueError" in run.data.tags[schema.T_FAILURE]


def test_disable_restores_the_original_call(tracking_uri, sd_pipe) -> None:
    from diffusers import StableDiffusionPipeline

    original = StableDiffusionPipeline.__call__
    mlflow_energy.autolog()
    assert StableDiffusionPipeline.__call__ is not original
    mlflow_energy.autolog(disable=True)
    assert StableDiffusionPipeline.__call__ is original
    sd_pipe("x", num_inference_steps=1, height=32, width=32)
    assert _runs() == []


def test_gpu_counter_is_the_energy_source(tracking_uri, sd_pipe, fake_gpu_factory) -> None:
    """A fake NVML counter (one joule per read) below Zeus: per-window energy is exact."""
    from mlflow_energy.measure.meters import ZeusMeter

    fake_gpu_factory(mode="step", step_j=1.0)
    meter = ZeusMeter("cuda")
    try:
        mlflow_energy.autolog(meter=meter, log_images=False, silent=True)
        sd_pipe("x", num_inference_steps=2, height=32, width=32)
    finally:
        meter.close()
    (run,) = _runs()
    assert run.data.tags[schema.T_ENERGY_SOURCE] == "zeus:nvml"
    assert [v for _, v in _history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)] == [1.0, 1.0]


def test_measurement_errors_never_break_the_call(tracking_uri, sd_pipe) -> None:
    class Broken:
        source, hardware = "broken", "none"

        def begin_window(self, name):
            raise RuntimeError("no counter")

    mlflow_energy.autolog(meter=Broken())
    with pytest.warns(UserWarning, match="unmeasured"):
        out = sd_pipe("x", num_inference_steps=1, height=32, width=32)
    assert len(out.images) == 1
    mlflow_energy.autolog(meter=Broken(), silent=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sd_pipe("x", num_inference_steps=1, height=32, width=32)


def test_the_total_is_never_less_than_its_phases() -> None:
    """Windows are metered one by one and a CPU estimate is not additive: a whole call that reads
    less than its phases is raised to their sum (other 0), never logged below them."""
    from mlflow_energy.autologging.log import record_metrics
    from mlflow_energy.autologging.probe import CallRecord

    record = CallRecord()
    record.whole = (5.0, 1.0)
    record.phases = {schema.PHASE_TEXT_ENCODE: [0.1, 0.01], schema.PHASE_DENOISE: [4.9, 0.9], schema.PHASE_DECODE: [0.1, 0.05]}
    m = record_metrics(record, images=1)
    assert m[schema.M_ENERGY_TOTAL] == pytest.approx(5.1) and m[schema.M_ENERGY_OTHER] == 0.0
    record.whole = (6.0, 1.0)
    m = record_metrics(record, images=2)
    assert m[schema.M_ENERGY_TOTAL] == pytest.approx(3.0) and m[schema.M_ENERGY_OTHER] == pytest.approx(0.45)
