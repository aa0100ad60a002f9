"""Tiny diffusers pipelines for the autolog zoo: random weights, small widths, in-memory tokenizers.

Each :class:`Case` builds one pipeline class and names the call to make on it and what
autolog should log for that call (phases, denoiser calls, scheduler steps, family). The
families the project knows are built through the project's own tiny builds; the other
pipelines are built here from small configs of the same shape as diffusers' own tests use.

Used by ``tests/autologging/test_zoo.py`` and ``benchmarks/autolog_zoo.py``.

Example:
    >>> case = CASES["StableDiffusionPipeline"]
    >>> pipe, kwargs = case.build()  # doctest: +SKIP
    >>> pipe(**kwargs).images.shape  # doctest: +SKIP
    (1, 64, 64, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CASES", "Case", "UNSUPPORTED", "call"]

PROMPT = "a red bicycle"
ALL = ("text_encode", "denoise", "decode")
IMAGE_IN = (*ALL, "image_encode")  # the call encodes an input image with the autoencoder


@dataclass(frozen=True)
class Case:
    """One pipeline of the zoo.

    Attributes:
        build: returns ``(pipe, call_kwargs)``; the call takes a ``generator`` on top.
        phases: the phases the call runs (each must get energy > 0).
        denoiser_calls: the denoiser (and ControlNet) calls the call makes.
        scheduler_steps: the scheduler steps the call runs.
        family: the family autolog recognises (FLOPs logged), or ``None``.
        slow: heavy enough to be marked slow in the tests.
        output_type: the ``output_type`` to pass (``None``: the pipeline's default, for priors).
    """

    build: Callable[[], tuple[Any, dict[str, Any]]]
    phases: tuple[str, ...]
    denoiser_calls: int
    scheduler_steps: int
    family: str | None = None
    slow: bool = False
    output_type: str | None = "np"


def _family(model: str) -> Any:
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    return build_pipeline(InferenceConfig(model=model).validate())


def _t2i(model: str, *, steps: int = 2, size: int = 64, **extra: Any) -> Callable[[], tuple[Any, dict[str, Any]]]:
    def build() -> tuple[Any, dict[str, Any]]:
        return _family(model), {"prompt": PROMPT, "num_inference_steps": steps, "height": size, "width": size,
                                **extra}

    return build


def _sana() -> tuple[Any, dict[str, Any]]:
    """SANA is FLOPs-only in the project (no phase adapter): built here from its tiny family."""
    from mlflow_energy.families import _build, get_family
    from mlflow_energy.families._tokenizers import word_tokenizer

    fam = get_family("tiny-sana-1.6b")
    pipe = _build.build_pipeline(fam, tokenizers={"tokenizer": word_tokenizer(300, bos="<bos>", eos="<eos>")})
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 64, "width": 64,
                  "complex_human_instruction": None, "use_resolution_binning": False}


def _sd_parts() -> dict[str, Any]:
    return dict(_family("tiny-sd2").components)


def _img2img() -> tuple[Any, dict[str, Any]]:
    from diffusers import StableDiffusionImg2ImgPipeline

    torch.manual_seed(0)
    return StableDiffusionImg2ImgPipeline(**_sd_parts()), {
        "prompt": PROMPT, "image": torch.rand(1, 3, 64, 64), "strength": 0.5, "num_inference_steps": 4}


def _inpaint() -> tuple[Any, dict[str, Any]]:
    from diffusers import StableDiffusionInpaintPipeline

    torch.manual_seed(0)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    return StableDiffusionInpaintPipeline(**_sd_parts()), {
        "prompt": PROMPT, "image": torch.rand(1, 3, 64, 64), "mask_image": mask, "num_inference_steps": 2,
        "height": 64, "width": 64, "strength": 1.0}


def _lcm() -> tuple[Any, dict[str, Any]]:
    from diffusers import LCMScheduler, StableDiffusionPipeline

    parts = _sd_parts()
    parts["scheduler"] = LCMScheduler.from_config(parts["scheduler"].config)
    return StableDiffusionPipeline(**parts), {"prompt": PROMPT, "num_inference_steps": 2, "height": 64,
                                              "width": 64, "guidance_scale": 1.0}


def _controlnet() -> tuple[Any, dict[str, Any]]:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    parts = _sd_parts()
    torch.manual_seed(0)
    vae_scale = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    channels = tuple(16 * 2**i for i in range(vae_scale.bit_length()))
    controlnet = ControlNetModel.from_unet(parts["unet"], conditioning_channels=3,
                                           conditioning_embedding_out_channels=channels)
    return StableDiffusionControlNetPipeline(**parts, controlnet=controlnet), {
        "prompt": PROMPT, "image": torch.rand(1, 3, 64, 64), "num_inference_steps": 2, "height": 64, "width": 64}


def _animatediff() -> tuple[Any, dict[str, Any]]:
    from diffusers import AnimateDiffPipeline, MotionAdapter

    parts = _sd_parts()
    unet = parts["unet"]
    torch.manual_seed(0)
    adapter = MotionAdapter(block_out_channels=tuple(unet.config.block_out_channels),
                            motion_layers_per_block=unet.config.layers_per_block, motion_norm_num_groups=2,
                            motion_num_attention_heads=2, motion_max_seq_length=32)
    pipe = AnimateDiffPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
                               unet=unet, motion_adapter=adapter, scheduler=parts["scheduler"])
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 64, "width": 64, "num_frames": 2}


def _kandinsky_unet() -> Any:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image", down_block_types=("ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D"), up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64), layers_per_block=1,
        encoder_hid_dim=32, encoder_hid_dim_type="image_proj", cross_attention_dim=32, attention_head_dim=4,
        resnet_time_scale_shift="scale_shift", class_embed_type=None,
    )


def _movq() -> Any:
    from diffusers import VQModel

    torch.manual_seed(0)
    return VQModel(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                   in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
                   num_vq_embeddings=12, out_channels=3, up_block_types=["AttnUpDecoderBlock2D",
                                                                          "UpDecoderBlock2D"], vq_embed_dim=4)


def _ddpm() -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True,
                         prediction_type="epsilon", thresholding=False)


def _kandinsky_decoder() -> tuple[Any, dict[str, Any]]:
    from diffusers import KandinskyV22Pipeline

    pipe = KandinskyV22Pipeline(unet=_kandinsky_unet(), scheduler=_ddpm(), movq=_movq())
    return pipe, {"image_embeds": torch.randn(1, 32), "negative_image_embeds": torch.zeros(1, 32),
                  "height": 64, "width": 64, "num_inference_steps": 2}


def _kandinsky_prior_parts() -> dict[str, Any]:
    from diffusers import PriorTransformer, UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from mlflow_energy.families._tokenizers import word_tokenizer

    torch.manual_seed(0)
    text = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, projection_dim=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000)).eval()
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, image_size=32, projection_dim=32, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=2, patch_size=14)).eval()
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=1)
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))
    processor = CLIPImageProcessor(crop_size=32, do_center_crop=True, do_normalize=True, do_resize=True,
                                   image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=3, size=32)
    scheduler = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                                clip_sample=True, clip_sample_range=10.0)
    return {"prior": prior, "image_encoder": vision, "text_encoder": text,
            "tokenizer": word_tokenizer(77, bos="<|startoftext|>", eos="<|endoftext|>"),
            "scheduler": scheduler, "image_processor": processor}


def _kandinsky_prior() -> tuple[Any, dict[str, Any]]:
    from diffusers import KandinskyV22PriorPipeline

    return KandinskyV22PriorPipeline(**_kandinsky_prior_parts()), {"prompt": PROMPT, "num_inference_steps": 2}


def _kandinsky_combined() -> tuple[Any, dict[str, Any]]:
    from diffusers import KandinskyV22CombinedPipeline

    prior = _kandinsky_prior_parts()
    pipe = KandinskyV22CombinedPipeline(
        unet=_kandinsky_unet(), scheduler=_ddpm(), movq=_movq(), prior_prior=prior["prior"],
        prior_image_encoder=prior["image_encoder"], prior_text_encoder=prior["text_encoder"],
        prior_tokenizer=prior["tokenizer"], prior_scheduler=prior["scheduler"],
        prior_image_processor=prior["image_processor"])
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "prior_num_inference_steps": 2, "height": 64,
                  "width": 64}


def _ldm() -> tuple[Any, dict[str, Any]]:
    """LDM: its prompt encoder is named ``bert`` and its autoencoder ``vqvae``, found by their classes."""
    from diffusers import DDIMScheduler, LDMTextToImagePipeline, UNet2DConditionModel, VQModel
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    torch.manual_seed(0)
    bert = LDMBertModel(LDMBertConfig(vocab_size=1000, max_position_embeddings=77, encoder_layers=2,
                                      encoder_ffn_dim=37, encoder_attention_heads=4, d_model=32, head_dim=8)).eval()
    vqvae = VQModel(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                    num_vq_embeddings=32, vq_embed_dim=4).eval()
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=4).eval()
    pipe = LDMTextToImagePipeline(vqvae=vqvae, bert=bert, tokenizer=_tok(77), unet=unet, scheduler=DDIMScheduler())
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 32, "width": 32}


def _mochi() -> tuple[Any, dict[str, Any]]:
    """Mochi's transformer autocasts its rotary embedding on its input's device (``meta`` in a trace)."""
    from diffusers import AutoencoderKLMochi, MochiPipeline, MochiTransformer3DModel

    torch.manual_seed(0)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16).eval()
    vae = AutoencoderKLMochi(latent_channels=12, out_channels=3, encoder_block_out_channels=(32,) * 4,
                             decoder_block_out_channels=(32,) * 4, layers_per_block=(1,) * 5).eval()
    pipe = MochiPipeline(transformer=transformer, vae=vae, scheduler=_flow(), text_encoder=_t5(), tokenizer=_tok(16))
    return pipe, {"prompt": PROMPT, "negative_prompt": "", "num_inference_steps": 2, "guidance_scale": 4.5,
                  "height": 16, "width": 16, "num_frames": 7, "max_sequence_length": 16}


def _allegro() -> tuple[Any, dict[str, Any]]:
    """Allegro's VAE decodes tiled only (``vae.enable_tiling()``, a setting outside its config)."""
    from diffusers import AllegroPipeline, AllegroTransformer3DModel, AutoencoderKLAllegro, DDIMScheduler
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = AllegroTransformer3DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, num_layers=1,
        cross_attention_dim=24, sample_width=8, sample_height=8, sample_frames=8, caption_channels=24).eval()
    vae = AutoencoderKLAllegro(
        in_channels=3, out_channels=3, down_block_types=("AllegroDownBlock3D",) * 4,
        up_block_types=("AllegroUpBlock3D",) * 4, block_out_channels=(8,) * 4, latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4).eval()
    vae.enable_tiling()
    text_encoder = T5EncoderModel(T5Config(d_ff=37, d_kv=8, d_model=24, num_decoder_layers=2, num_heads=4,
                                           num_layers=2, relative_attention_num_buckets=8, vocab_size=1103)).eval()
    pipe = AllegroPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(), text_encoder=text_encoder,
                           tokenizer=_tok(16))
    return pipe, {"prompt": PROMPT, "negative_prompt": "", "num_inference_steps": 2, "guidance_scale": 6.0,
                  "height": 16, "width": 16, "num_frames": 8, "max_sequence_length": 16}


def _t5(umt5: bool = False) -> Any:
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    kw = {"vocab_size": 1000, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4}
    return (UMT5EncoderModel(UMT5Config(**kw)) if umt5 else T5EncoderModel(T5Config(**kw))).eval()


def _vae(latent_channels: int = 4, levels: int = 2, **extra: Any) -> Any:
    """A tiny AutoencoderKL; ``levels=4`` downsamples by 8 (HunyuanDiT assumes 8 for its rotary grid)."""
    from diffusers import AutoencoderKL

    from mlflow_energy.families._tiny import VAE_KL

    torch.manual_seed(0)
    cfg = dict(VAE_KL)
    if levels != 2:
        cfg.update(block_out_channels=[8] * levels, down_block_types=["DownEncoderBlock2D"] * levels,
                   up_block_types=["UpDecoderBlock2D"] * levels)
    return AutoencoderKL(**cfg, latent_channels=latent_channels, **extra).eval()


def _flow() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler()


def _tok(length: int) -> Any:
    from mlflow_energy.families._tokenizers import word_tokenizer

    return word_tokenizer(length)


def _auraflow() -> tuple[Any, dict[str, Any]]:
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel

    torch.manual_seed(0)
    transformer = AuraFlowTransformer2DModel(
        sample_size=32, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        out_channels=4, pos_embed_max_size=256)
    pipe = AuraFlowPipeline(tokenizer=_tok(256), text_encoder=_t5(umt5=True), vae=_vae(), transformer=transformer,
                            scheduler=_flow())
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 32, "width": 32}


def _cogview3() -> tuple[Any, dict[str, Any]]:
    from diffusers import CogVideoXDDIMScheduler, CogView3PlusPipeline, CogView3PlusTransformer2DModel

    torch.manual_seed(0)
    transformer = CogView3PlusTransformer2DModel(
        patch_size=2, in_channels=4, num_layers=1, attention_head_dim=4, num_attention_heads=2, out_channels=4,
        text_embed_dim=32, time_embed_dim=8, condition_dim=2, pos_embed_max_size=32, sample_size=32)
    pipe = CogView3PlusPipeline(tokenizer=_tok(224), text_encoder=_t5(), vae=_vae(), transformer=transformer,
                                scheduler=CogVideoXDDIMScheduler())
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 32, "width": 32}


def _hunyuandit() -> tuple[Any, dict[str, Any]]:
    from diffusers import DDPMScheduler, HunyuanDiT2DModel, HunyuanDiTPipeline
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    transformer = HunyuanDiT2DModel(
        sample_size=16, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3, in_channels=4,
        cross_attention_dim=32, cross_attention_dim_t5=32, pooled_projection_dim=16, hidden_size=24,
        activation_fn="gelu-approximate")
    bert = BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=37)).eval()
    pipe = HunyuanDiTPipeline(vae=_vae(levels=4), text_encoder=bert, tokenizer=_tok(77), transformer=transformer,
                              scheduler=DDPMScheduler(), safety_checker=None, feature_extractor=None,
                              requires_safety_checker=False, text_encoder_2=_t5(), tokenizer_2=_tok(256))
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 64, "width": 64,
                  "use_resolution_binning": False}


def _lumina2() -> tuple[Any, dict[str, Any]]:
    from diffusers import Lumina2Pipeline, Lumina2Transformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    transformer = Lumina2Transformer2DModel(
        sample_size=4, patch_size=2, in_channels=4, hidden_size=8, num_layers=2, num_attention_heads=1,
        num_kv_heads=1, multiple_of=16, norm_eps=1e-5, scaling_factor=1.0, axes_dim_rope=(4, 2, 2), cap_feat_dim=8)
    gemma = Gemma2Model(Gemma2Config(head_dim=4, hidden_size=8, intermediate_size=8, num_attention_heads=2,
                                     num_hidden_layers=2, num_key_value_heads=2, sliding_window=2,
                                     vocab_size=1000)).eval()
    pipe = Lumina2Pipeline(transformer=transformer, scheduler=_flow(), vae=_vae(shift_factor=0.0609),
                           text_encoder=gemma,
                           tokenizer=_tok(256))
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 32, "width": 32}


def _wan() -> tuple[Any, dict[str, Any]]:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    pipe = WanPipeline(tokenizer=_tok(512), text_encoder=_t5(umt5=True), vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)
    return pipe, {"prompt": PROMPT, "num_inference_steps": 2, "height": 16, "width": 16, "num_frames": 5,
                  "max_sequence_length": 16}


def _cascade_text() -> Any:
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    return CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, projection_dim=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000)).eval()


def _cascade_prior_parts() -> dict[str, Any]:
    from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet

    torch.manual_seed(0)
    prior = StableCascadeUNet(
        conditioning_dim=32, block_out_channels=(32, 32), num_attention_heads=(2, 2), down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1), clip_image_in_channels=32, switch_level=(False,), clip_text_in_channels=32,
        clip_text_pooled_in_channels=32, dropout=(0.0, 0.0)).eval()
    return {"prior": prior, "text_encoder": _cascade_text(), "tokenizer": _tok(77),
            "scheduler": DDPMWuerstchenScheduler(), "feature_extractor": None, "image_encoder": None}


def _cascade_decoder_parts() -> dict[str, Any]:
    from diffusers import DDPMWuerstchenScheduler, StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen.modeling_paella_vq_model import PaellaVQModel

    torch.manual_seed(0)
    attn = ("SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock")
    decoder = StableCascadeUNet(
        in_channels=4, out_channels=4, conditioning_dim=32, block_out_channels=[8, 16, 32, 32],
        num_attention_heads=[-1, -1, 1, 2], down_num_layers_per_block=[1, 1, 1, 1],
        down_blocks_repeat_mappers=[1, 1, 1, 1], up_num_layers_per_block=[1, 1, 1, 1],
        up_blocks_repeat_mappers=[1, 1, 1, 1], block_types_per_layer=[attn[:2], attn[:2], attn, attn],
        switch_level=None, clip_text_pooled_in_channels=32, effnet_in_channels=16, pixel_mapper_in_channels=3,
        dropout=[0.0] * 4).eval()
    vqgan = PaellaVQModel(bottleneck_blocks=1, embed_dim=16, num_vq_embeddings=12, latent_channels=4).eval()
    return {"decoder": decoder, "text_encoder": _cascade_text(), "tokenizer": _tok(77),
            "scheduler": DDPMWuerstchenScheduler(), "vqgan": vqgan}


def _cascade_prior() -> tuple[Any, dict[str, Any]]:
    from diffusers import StableCascadePriorPipeline

    return StableCascadePriorPipeline(**_cascade_prior_parts()), {
        "prompt": PROMPT, "num_inference_steps": 2, "height": 128, "width": 128}


def _cascade_decoder() -> tuple[Any, dict[str, Any]]:
    from diffusers import StableCascadeDecoderPipeline

    return StableCascadeDecoderPipeline(**_cascade_decoder_parts()), {
        "prompt": PROMPT, "image_embeddings": torch.randn(1, 16, 3, 3), "num_inference_steps": 2}


def _cascade_combined() -> tuple[Any, dict[str, Any]]:
    from diffusers import StableCascadeCombinedPipeline

    prior, decoder = _cascade_prior_parts(), _cascade_decoder_parts()
    pipe = StableCascadeCombinedPipeline(
        **decoder, prior_prior=prior["prior"], prior_text_encoder=prior["text_encoder"],
        prior_tokenizer=prior["tokenizer"], prior_scheduler=prior["scheduler"], prior_feature_extractor=None,
        prior_image_encoder=None)
    return pipe, {"prompt": PROMPT, "prior_num_inference_steps": 2, "num_inference_steps": 2, "height": 128,
                  "width": 128}


#: Pipeline class -> case. Order: the project's families, then the variants and other pipelines.
CASES: dict[str, Case] = {
    "StableDiffusionPipeline": Case(_t2i("tiny-sd2"), ALL, 2, 2, "tiny-sd2"),
    "StableDiffusionXLPipeline": Case(_t2i("tiny-sdxl"), ALL, 2, 2, "tiny-sdxl"),
    "StableDiffusion3Pipeline": Case(_t2i("tiny-sd3-medium"), ALL, 2, 2, "tiny-sd3-medium"),
    "FluxPipeline": Case(_t2i("tiny-flux.1-schnell", guidance_scale=0.0), ALL, 2, 2, "tiny-flux.1-schnell"),
    "PixArtSigmaPipeline": Case(_t2i("tiny-pixart-sigma"), ALL, 2, 2, "tiny-pixart-sigma"),
    "SanaPipeline": Case(_sana, ALL, 2, 2, "tiny-sana-1.6b"),
    "QwenImagePipeline": Case(_t2i("tiny-qwen-image"), ALL, 2, 2, "tiny-qwen-image"),
    "StableDiffusionImg2ImgPipeline": Case(_img2img, IMAGE_IN, 2, 2, "tiny-sd2"),
    "StableDiffusionInpaintPipeline": Case(_inpaint, IMAGE_IN, 2, 2, "tiny-sd2"),
    "StableDiffusionPipeline+LCMScheduler": Case(_lcm, ALL, 2, 2, "tiny-sd2"),
    "StableDiffusionControlNetPipeline": Case(_controlnet, ALL, 4, 2, "tiny-sd2"),
    "KandinskyV22PriorPipeline": Case(_kandinsky_prior, ("text_encode", "denoise"), 2, 2, None,
                                      output_type=None),
    "KandinskyV22Pipeline": Case(_kandinsky_decoder, ("denoise", "decode"), 2, 2, None),
    "KandinskyV22CombinedPipeline": Case(_kandinsky_combined, ALL, 4, 4, None),
    "StableCascadePriorPipeline": Case(_cascade_prior, ("text_encode", "denoise"), 2, 2, output_type=None),
    "StableCascadeDecoderPipeline": Case(_cascade_decoder, ALL, 2, 2),
    "StableCascadeCombinedPipeline": Case(_cascade_combined, ALL, 4, 4),
    "AnimateDiffPipeline": Case(_animatediff, ALL, 2, 2),
    "AuraFlowPipeline": Case(_auraflow, ALL, 2, 2),
    "CogView3PlusPipeline": Case(_cogview3, ALL, 2, 2),
    "HunyuanDiTPipeline": Case(_hunyuandit, ALL, 2, 2),
    "Lumina2Pipeline": Case(_lumina2, ALL, 4, 2),  # true CFG: two calls a step; trims prompts by mask values
    "WanPipeline": Case(_wan, ALL, 4, 2),  # true CFG: two calls a step; UMT5 reads its mask's values
    "LDMTextToImagePipeline": Case(_ldm, ALL, 2, 2),  # a `bert` and a `vqvae`: roles by class
    "MochiPipeline": Case(_mochi, ALL, 2, 2, slow=True),  # autocast on the meta device in its trace
    "AllegroPipeline": Case(_allegro, ALL, 2, 2, slow=True),  # decodes tiled only: the trace keeps the setting
}

def call(case: Case, pipe: Any, kwargs: dict[str, Any]) -> Any:
    """The case's call with a fixed seed; returns its first output (images, frames or embeddings)."""
    extra = {"output_type": case.output_type} if case.output_type else {}
    out = pipe(generator=torch.Generator().manual_seed(0), **extra, **kwargs)
    first = out[0]
    return first.numpy() if isinstance(first, torch.Tensor) else first


#: Pipelines of the issue's list not built here, and why.
UNSUPPORTED: dict[str, str] = {}
