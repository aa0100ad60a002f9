"""``flops`` and ``families``: what a config computes and which families exist; nothing is run."""

from __future__ import annotations

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Float, Int


@main.command("flops")
@click.option("--model", required=True, help="Family name, e.g. sd2, flux.1-dev, tiny-sd2.")
@click.option("--height", type=Int("height", minimum=1), help="Image height in pixels [family default].")
@click.option("--width", type=Int("width", minimum=1), help="Image width in pixels [family default].")
@click.option("--steps", type=Int("steps", minimum=1), help="Denoising steps [family default].")
@click.option("--guidance-scale", type=Float("guidance_scale"), help="Classifier-free guidance scale [family default].")
@click.option("--batch-size", type=Int("batch_size", minimum=1, unset_value=1), default=1, show_default=True,
              help="Images per pipeline call.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of FLOP per image.")
def flops_command(model: str, height: int | None, width: int | None, steps: int | None,
                  guidance_scale: float | None, batch_size: int, as_json: bool) -> None:
    """Analytical FLOPs per image of each phase (text_encode, denoise, decode), no model built."""
    import json

    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.families import get_family
    from mlflow_energy.flops import PHASES, component_flops, config_flops

    cfg = InferenceConfig(model=model, height=height, width=width, steps=steps, guidance_scale=guidance_scale,
                          batch_size=batch_size).validate()
    result = config_flops(cfg)
    if as_json:
        click.echo(json.dumps({phase: result[phase] for phase in PHASES}))
        return
    fam = get_family(cfg.model)
    passes = fam.passes(cfg.guidance_scale)
    click.echo(f"{cfg.model} {cfg.height}x{cfg.width}, {cfg.steps} steps, guidance {cfg.guidance_scale:g} "
               f"({passes} denoiser pass{'es' if passes > 1 else ''} per step), batch {cfg.batch_size}")
    total = result["total"] or 1.0
    click.echo(f"{'phase':<18} {'FLOP/image':>12} {'TFLOP/image':>12} {'share':>7}")
    for phase in PHASES:
        share = f"{100.0 * result[phase] / total:>6.1f}%" if phase != "denoise_per_step" else ""
        click.echo(f"{phase:<18} {result[phase]:>12.4e} {result[phase] / 1e12:>12.4f} {share:>7}")
    click.echo("one call of each component, 1 image:")
    for comp in sorted(fam.components):
        value = component_flops(fam, comp, height=cfg.height, width=cfg.width)
        click.echo(f"  {comp:<16} {value:>12.4e} {value / 1e12:>12.4f}")
    click.echo("matmuls, convolutions and attention only: norms, softmax, activations, RoPE not counted")


@main.command("families")
@click.option("--tiny/--no-tiny", default=False, show_default=True, help="Also list the tiny variants.")
def families_command(tiny: bool) -> None:
    """List the model families with their pipeline defaults."""
    from mlflow_energy.families import family_names, get_family

    click.echo(f"{'family':<22} {'pipeline':<28} {'steps':>5} {'px':>5} {'guidance':>8}  cfg        multiple  measured")
    for name in family_names(tiny=tiny):
        f = get_family(name)
        click.echo(f"{name:<22} {f.pipeline_class:<28} {f.default_steps:>5} {f.default_resolution:>5} "
                   f"{f.default_guidance_scale:>8g}  {f.cfg:<10} {f.pixel_multiple:>8}  {'yes' if f.measurable else 'no'}")
