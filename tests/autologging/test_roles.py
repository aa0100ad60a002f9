"""Phases by role and steps as run: diffusers pipeline classes the project has no adapter for.

Each pipeline is built here from tiny components, the way diffusers' own tests build theirs
(random weights, small widths), and called with its public ``__call__``.
"""

from __future__ import annotations

import pytest
import torch

import mlflow_energy
from mlflow_energy import schema

pytestmark = pytest.mark.usefixtures("autolog_off")






def _last_run():
    import mlflow

    flush = getattr(mlflow_energy, "flush", None)
    if flush is not None:
        flush()
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return run


def _history(run_id: str, key: str) -> list[float]:
    from mlflow import MlflowClient

    return [m.value for m in sorted(MlflowClient().get_metric_history(run_id, key), key=lambda m: m.step)]


def _unchanged(pipe, **kwargs):
    """The output with autolog on equals the output with it off (same seed)."""
    def call():
        return pipe(generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images

    off = call()
    mlflow_energy.autolog(silent=True)
    on = call()
    assert (off == on).all()
    return _last_run()


def test_img2img_at_half_strength_counts_the_steps_it_ran(sd_components) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**sd_components)
    image = torch.rand(1, 3, 32, 32)
    run = _unchanged(pipe, prompt="a red bicycle", image=image, strength=0.5, num_inference_steps=4)
    p, m = run.data.params, run.data.metrics
    assert (p[schema.P_STEPS], p[schema.P_DENOISER_CALLS], p[schema.P_SCHEDULER_STEPS]) == ("4", "2", "2")
    assert len(_history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)) == 2
    assert p[schema.P_MODEL] == "tiny-sd2"
    assert m[schema.M_FLOPS_DENOISE] == pytest.approx(2 * m[schema.M_FLOPS_DENOISE_PER_STEP])


def test_heun_runs_two_calls_a_step_and_flops_follow(sd_components) -> None:
    from diffusers import HeunDiscreteScheduler, StableDiffusionPipeline

    components = {**sd_components, "scheduler": HeunDiscreteScheduler.from_config(sd_components["scheduler"].config)}
    pipe = StableDiffusionPipeline(**components)
    run = _unchanged(pipe, prompt="a red bicycle", num_inference_steps=3, height=32, width=32)
    p, m = run.data.params, run.data.metrics
    calls = int(p[schema.P_DENOISER_CALLS])
    assert calls == 5  # Heun: 2N - 1 model calls for N steps, one scheduler.step each
    assert m[schema.M_FLOPS_DENOISE] == pytest.approx(calls * m[schema.M_FLOPS_DENOISE_PER_STEP])


def test_controlnet_is_denoising_with_its_own_share(sd_components) -> None:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    torch.manual_seed(0)
    vae_scale = 2 ** (len(sd_components["vae"].config.block_out_channels) - 1)
    # Built from the UNet's config, as diffusers' tests do; its conditioning embedding
    # downsamples the control image as far as the VAE does.
    channels = tuple(16 * 2**i for i in range(vae_scale.bit_length()))
    controlnet = ControlNetModel.from_unet(sd_components["unet"], conditioning_channels=3,
                                           conditioning_embedding_out_channels=channels)
    pipe = StableDiffusionControlNetPipeline(**sd_components, controlnet=controlnet)
    run = _unchanged(pipe, prompt="a red bicycle", image=torch.rand(1, 3, 32, 32), num_inference_steps=3,
                     height=32, width=32)
    m = run.data.metrics
    unet_j, control_j = m[schema.component_energy_key("unet")], m[schema.component_energy_key("controlnet")]
    assert control_j > 0 and unet_j > 0
    assert m[schema.M_ENERGY_DENOISE] == pytest.approx(unet_j + control_j)
    assert len(_history(run.info.run_id, schema.M_ENERGY_DENOISE_STEP)) == 3  # per step: both summed
    assert len(_history(run.info.run_id, schema.M_ENERGY_DENOISE_CALL)) == 6
    assert m[schema.energy_key(schema.PHASE_TEXT_ENCODE)] > 0 and m[schema.energy_key(schema.PHASE_DECODE)] > 0
    # FLOPs: the family's closed form counts the UNet; the ControlNet's calls are traced and added
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.flops import flops_metrics

    closed = flops_metrics(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=3).validate())
    assert run.data.tags[schema.T_FLOPS_SOURCE] == schema.FLOPS_CLOSED_FORM_PLUS_TRACED
    control = m[schema.M_FLOPS_DENOISE] - closed[schema.M_FLOPS_DENOISE]
    assert 0.2 < control / closed[schema.M_FLOPS_DENOISE] < 0.8  # a ControlNet is the UNet's encoder half, about
    assert m[schema.M_FLOPS_DENOISE_PER_STEP] == pytest.approx(m[schema.M_FLOPS_DENOISE] / 3)
    assert m[schema.M_FLOPS_TOTAL] == pytest.approx(sum(m[schema.flops_key(p)] for p in schema.PHASES))
    assert m[schema.flops_key(schema.PHASE_DECODE)] == pytest.approx(closed[schema.flops_key(schema.PHASE_DECODE)])


def test_kandinsky_decoder_decodes_with_movq() -> None:
    from diffusers import DDPMScheduler, KandinskyV22Pipeline, UNet2DConditionModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image", down_block_types=("ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D"), up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=32, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None,
    )
    movq = VQModel(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
                   vq_embed_dim=4)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                              prediction_type="epsilon", thresholding=False)
    pipe = KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq)
    embeds = torch.randn(1, 32)
    run = _unchanged(pipe, image_embeds=embeds, negative_image_embeds=torch.zeros(1, 32), height=64, width=64,
                     num_inference_steps=2)
    m, p = run.data.metrics, run.data.params
    assert m[schema.energy_key(schema.PHASE_DECODE)] > 0 and m[schema.energy_key(schema.PHASE_DENOISE)] > 0
    assert p[schema.P_DENOISER_CALLS] == "2"
