"""Closed-form FLOPs against torch's FLOP counter (meta device), phase composition, frame, CLI.

Tiny families here (every registered ``tiny-*`` family, same classes as the released ones);
the full-size families at 256-1024 px are in ``test_full_size.py`` (marked slow).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy.cli import main
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._build import build_on_meta
from mlflow_energy.flops import (
    FRAME_OUTPUTS,
    PHASES,
    component_flops,
    config_flops,
    flops_frame,
    flops_metrics,
)
from mlflow_energy.flops.count import _denoiser_text_tokens
from mlflow_energy.flops.reference import count_component
from mlflow_energy.schema import FLOPS_PHASES, flops_key

TOLERANCE = 0.005  # the closed forms must agree with the counter within 0.5 %
EXACT = 1e-9
TINY = [n for n in family_names() if n.startswith(("tiny-", "small-"))]  # small-: the CPU demo variants
FULL = family_names(tiny=False)


def _role(class_path: str) -> str:
    if class_path.startswith("transformers."):
        return "text"
    return "decode" if "Autoencoder" in class_path else "denoise"


def _meta_count(family: str, component: str, height: int, width: int, batch: int = 1, model=None) -> int:
    fam = get_family(family)
    spec = fam.components[component]
    role = _role(spec["class"])
    text = fam.text_lengths[component] if role == "text" else _denoiser_text_tokens(fam)
    return count_component(
        spec["class"], dict(spec["config"]), role=role,
        lh=height // fam.latent_downsample, lw=width // fam.latent_downsample, text=text, batch=batch, model=model,
    )


def _rel(a: float, b: float) -> float:
    return abs(a - b) / b


def test_tiny_families_are_registered() -> None:
    # Every full-size family has its tiny variant, and the six measured families are there.
    assert {f"tiny-{n}" for n in FULL} <= set(TINY)
    assert {"sd2", "sd3.5-medium", "sd3.5-large", "flux.1-dev", "flux.1-schnell", "qwen-image"} <= set(FULL)


@pytest.mark.parametrize("family", TINY)
def test_tiny_components_match_meta_counter(family: str) -> None:
    # 0.5 % is the contract; the closed forms count exactly what the counter counts, so any
    # difference here means a diffusers/transformers change the formulas must follow.
    fam = get_family(family)
    m = fam.pixel_multiple
    cases = [(fam.default_resolution, fam.default_resolution, 1), (2 * m, 3 * m, 2)]  # square; non-square, batch 2
    for comp, spec in sorted(fam.components.items()):
        model = build_on_meta(spec["class"], dict(spec["config"]))
        for h, w, batch in cases:
            counted = _meta_count(family, comp, h, w, batch, model=model)
            closed = component_flops(family, comp, height=h, width=w, batch_size=batch)
            assert counted > 0, (family, comp)
            assert _rel(closed, counted) <= EXACT, (family, comp, h, w, batch, closed, counted)


def test_unet_odd_latent_sizes_match_meta_counter() -> None:
    # A latent side that does not halve evenly: downsamplers round up, upsamplers return to the skip size.
    for h, w in ((72, 88), (40, 56)):
        counted = _meta_count("tiny-sdxl", "unet", h, w)
        assert _rel(component_flops("tiny-sdxl", "unet", height=h, width=w), counted) <= TOLERANCE


@pytest.mark.parametrize("family", TINY)
def test_config_flops_composes_phases(family: str) -> None:
    fam = get_family(family)
    h, w = fam.default_resolution, 2 * fam.default_resolution
    for scale in (0.0, 1.0, fam.default_guidance_scale, 6.0):
        f = config_flops(InferenceConfig(model=family, height=h, width=w, steps=3, guidance_scale=scale, batch_size=2))
        assert set(f) == set(PHASES)
        # what pipe(prompt) does: true-CFG pipelines (Qwen-Image, FLUX.1) one pass without a negative prompt
        true_cfg = fam.pipeline_class in ("QwenImagePipeline", "FluxPipeline")
        passes = 2 if (fam.cfg == "true" and scale > 1 and not true_cfg) else 1
        call = component_flops(family, fam.denoiser, height=h, width=w)
        text = sum(component_flops(family, c, height=h, width=w) for c in fam.text_encoders)
        assert f["denoise_per_step"] == pytest.approx(passes * call, rel=1e-12)
        assert f["denoise"] == pytest.approx(fam.denoiser_calls(3) * passes * call, rel=1e-12)
        assert f["text_encode"] == pytest.approx(passes * text, rel=1e-12)  # negative prompt encoded with CFG
        assert f["decode"] == pytest.approx(component_flops(family, "vae", height=h, width=w), rel=1e-12)
        assert f["total"] == pytest.approx(f["text_encode"] + f["denoise"] + f["decode"], rel=1e-12)


def test_denoise_counts_the_schedulers_real_calls() -> None:
    # SD 1.5's released PNDM scheduler evaluates the UNet steps + 1 times (PLMS warm-up).
    pndm = config_flops(InferenceConfig(model="sd1.5", height=512, width=512, steps=50))
    assert pndm["denoise"] == pytest.approx(51 * pndm["denoise_per_step"], rel=1e-12)
    ddim = config_flops(InferenceConfig(model="sd2", height=512, width=512, steps=50))
    assert ddim["denoise"] == pytest.approx(50 * ddim["denoise_per_step"], rel=1e-12)
    frame = flops_frame(pd.DataFrame({"model": ["sd1.5", "sd2"], "height": [512] * 2, "width": [512] * 2, "steps": [50] * 2}))
    assert list(frame["flops_denoise"] / frame["flops_denoise_per_step"]) == [51.0, 50.0]


def test_frame_counts_the_same_denoiser_calls_as_the_scheduler_at_every_step_count() -> None:
    steps = list(range(1, 61))
    for model in ("sd1.5", "sd2", "flux.1-schnell"):
        frame = flops_frame(pd.DataFrame({"model": model, "height": 512, "width": 512, "steps": steps}))
        calls = frame["flops_denoise"] / frame["flops_denoise_per_step"]
        assert list(calls) == [get_family(model).denoiser_calls(n) for n in steps]


def test_guidance_rules_per_family() -> None:
    base = {"height": 1024, "width": 1024, "steps": 10}
    dev = config_flops(InferenceConfig(model="flux.1-dev", guidance_scale=3.5, **base))
    schnell = config_flops(InferenceConfig(model="flux.1-schnell", guidance_scale=0.0, **base))
    # Guidance-distilled FLUX.1-dev runs one pass; dev's T5 runs 512 tokens, schnell's 256.
    assert dev["denoise_per_step"] == pytest.approx(component_flops("flux.1-dev", "transformer", height=1024, width=1024))
    assert dev["text_encode"] > schnell["text_encode"]
    sd3_cfg = config_flops(InferenceConfig(model="sd3.5-large", guidance_scale=3.5, **base))
    sd3_off = config_flops(InferenceConfig(model="sd3.5-large", guidance_scale=1.0, **base))
    assert sd3_cfg["denoise"] == pytest.approx(2 * sd3_off["denoise"])
    assert sd3_cfg["text_encode"] == pytest.approx(2 * sd3_off["text_encode"])


def test_batch_size_does_not_change_per_image_values() -> None:
    one = config_flops(InferenceConfig(model="qwen-image", height=512, width=768, steps=4))
    four = config_flops(InferenceConfig(model="qwen-image", height=512, width=768, steps=4, batch_size=4))
    assert one == four


def test_dit_attention_is_super_linear_in_pixels() -> None:
    # 4x the pixels: convolutional UNet work grows ~4x plus attention; DiT attention grows 16x.
    for family in ("flux.1-dev", "sd3.5-large", "qwen-image"):
        small = component_flops(family, "transformer", height=1024, width=1024)
        big = component_flops(family, "transformer", height=2048, width=2048)
        assert big / small > 4.2, family
    vae_small = component_flops("sd2", "vae", height=512, width=512)
    assert component_flops("sd2", "vae", height=1024, width=1024) / vae_small > 4.0


def test_component_flops_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="component='unet'"):
        component_flops("flux.1-dev", "unet", height=1024, width=1024)
    with pytest.raises(ConfigError, match="height=1000"):
        component_flops("flux.1-dev", "transformer", height=1000, width=1024)
    with pytest.raises(ConfigError, match="batch_size=0"):
        component_flops("sd2", "unet", height=512, width=512, batch_size=0)
    with pytest.raises(ConfigError, match="model='nope'"):
        component_flops("nope", "unet", height=512, width=512)


def test_flops_metrics_use_schema_keys() -> None:
    cfg = InferenceConfig(model="tiny-sd2", height=64, width=64, steps=2)
    metrics = flops_metrics(cfg)
    assert set(metrics) == {flops_key(p) for p in FLOPS_PHASES}
    assert metrics[flops_key("total")] == config_flops(cfg)["total"]


def _random_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    models = np.array(FULL + TINY)
    model = rng.choice(models, n)
    mult = np.array([get_family(m).pixel_multiple for m in model])
    return pd.DataFrame({
        "model": model,
        "height": mult * rng.integers(1, 1536 // 32 + 1, n) * (32 // np.minimum(mult, 32)),
        "width": mult * rng.integers(1, 1536 // 32 + 1, n) * (32 // np.minimum(mult, 32)),
        "steps": rng.integers(1, 60, n),
        "guidance_scale": rng.choice([0.0, 1.0, 3.5, 7.5], n),
        "batch_size": rng.integers(1, 5, n),
    })


def test_flops_frame_matches_config_flops() -> None:
    df = _random_frame(200)
    out = flops_frame(df)
    assert list(out.columns) == [*df.columns, *FRAME_OUTPUTS]
    for row in out.itertuples(index=False):
        f = config_flops(InferenceConfig(model=row.model, height=int(row.height), width=int(row.width),
                                         steps=int(row.steps), guidance_scale=float(row.guidance_scale),
                                         batch_size=int(row.batch_size)))
        for phase in PHASES:
            assert getattr(row, f"flops_{phase}") == pytest.approx(f[phase], rel=1e-12), (row.model, phase)


def test_flops_frame_fills_family_defaults() -> None:
    df = pd.DataFrame({"model": ["sd2", "flux.1-dev"], "height": [None, 512], "width": [768, None],
                       "steps": [None, 4], "guidance_scale": [None, None]})
    out = flops_frame(df)
    sd2 = config_flops(InferenceConfig(model="sd2"))
    flux = config_flops(InferenceConfig(model="flux.1-dev", height=512, width=1024, steps=4))
    assert out["flops_total"].tolist() == pytest.approx([sd2["total"], flux["total"]], rel=1e-12)
    assert flops_frame(df.iloc[:0])["flops_total"].tolist() == []


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [("model", "nope", "model='nope'"), ("height", 100, "height=100"), ("steps", 0, "steps=0"),
     ("guidance_scale", -1.0, "guidance_scale=-1"), ("batch_size", 0, "batch_size=0")],
)
def test_flops_frame_rejects_bad_values(column: str, value: object, match: str) -> None:
    df = pd.DataFrame({"model": ["sd2", "sd2"], "height": [512, 512], "width": [512, 512], "steps": [10, 10],
                       "guidance_scale": [7.5, 7.5], "batch_size": [1, 1]})
    df[column] = df[column].astype(object)
    df.loc[1, column] = value
    with pytest.raises(ConfigError, match=match):
        flops_frame(df)


def test_cli_json_matches_api() -> None:
    result = CliRunner().invoke(main, ["flops", "--model", "sd3.5-medium", "--height", "768", "--width", "1344",
                                       "--steps", "40", "--guidance-scale", "4.5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    expected = config_flops(InferenceConfig(model="sd3.5-medium", height=768, width=1344, steps=40, guidance_scale=4.5))
    assert list(data) == list(PHASES)
    assert data == pytest.approx(expected, rel=1e-12)


def test_cli_table() -> None:
    result = CliRunner().invoke(main, ["flops", "--model", "tiny-flux.1-dev", "--steps", "2"])
    assert result.exit_code == 0, result.output
    for word in (*PHASES, "transformer", "text_encoder_2", "vae", "1 denoiser pass per step"):
        assert word in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--model", "nope"], "Error: model='nope' is not allowed"),
     (["--model", "sd2", "--height", "770"], "Error: height=770 is not allowed: expected a positive multiple of 8"),
     (["--model", "sd2", "--steps", "x"], "Error: steps='x' is not allowed"),
     (["--model", "sd2", "--guidance-scale", "-2"], "Error: guidance_scale=-2.0 is not allowed"),
     (["--model", "sd2", "--batch-size", "0"], "Error: batch_size=0 is not allowed")],
)
def test_cli_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["flops", *args, "--json"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output


@pytest.mark.parametrize(("family", "scale", "default", "allowed"), [
    ("qwen-image", 4.0, 1, (1, 2)), ("qwen-image", 1.0, 1, (1,)), ("flux.1-dev", 3.5, 1, (1, 2)),
    ("flux.1-schnell", 0.0, 1, (1,)), ("sd2", 7.5, 2, (2,)), ("sd2", 1.0, 1, (1,)), ("sd3.5-large", 3.5, 2, (2,)),
])
def test_cfg_passes_default_is_pipe_prompt_and_scales_denoise(family: str, scale: float, default: int,
                                                               allowed: tuple[int, ...]) -> None:
    """``cfg_passes`` defaults to what ``pipe(prompt)`` runs; 2 passes double the denoiser and text FLOPs;
    the vectorised counter agrees and refuses what the family cannot run."""
    import pandas as pd

    from mlflow_energy.errors import ConfigError
    from mlflow_energy.flops.frame import flops_frame

    base = InferenceConfig(model=family, steps=4, guidance_scale=scale)
    assert base.validate().cfg_passes == default
    one_call = component_flops(family, get_family(family).denoiser, height=get_family(family).default_resolution,
                               width=get_family(family).default_resolution)
    for p in (1, 2):
        row = pd.DataFrame({"model": [family], "steps": [4], "guidance_scale": [scale], "cfg_passes": [p]})
        if p in allowed:
            f = config_flops(InferenceConfig(model=family, steps=4, guidance_scale=scale, cfg_passes=p))
            assert f["denoise_per_step"] == pytest.approx(p * one_call, rel=1e-12)
            assert flops_frame(row)["flops_total"].iloc[0] == pytest.approx(f["total"], rel=1e-12)
        else:
            with pytest.raises(ConfigError, match="cfg_passes"):
                InferenceConfig(model=family, steps=4, guidance_scale=scale, cfg_passes=p).validate()
            with pytest.raises(ConfigError, match="cfg_passes"):
                flops_frame(row)
