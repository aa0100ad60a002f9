"""``search``: Optuna finds the lowest-energy config under step, quality and latency constraints."""

from __future__ import annotations

import sys
from typing import Any

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Float, Int, Name, Text, values

_DIM_HELP = "Fixed value, comma list / repeated flag (categorical), or LO:HI[:STEP] range."
_CONSTRAINTS = ("min_steps", "max_steps", "min_psnr", "min_ssim", "min_clip_score", "max_latency_s")


@main.command("search")
@click.option("--spec", type=Text(), help="YAML spec with sections space, constraints, search (flags override it).")
@click.option("--mode", type=Text(), help="predict (registered model, ms per trial) or measure (live) [predict].")
@click.option("--model-uri", type=Text(), help="Predict mode: the energy model, e.g. models:/mlflow-energy@champion (the demo's).")
@click.option("--hardware", type=Text(), help="Predict mode: the GPU to predict for, e.g. H100.")
@click.option("--avg-power-w", type=Float("avg_power_w", minimum=0.0, strict=True),
              help="Predict mode, predictor without time_total_s: latency = energy / this power (W).")
@click.option("--quality-model-uri", type=Text(), help="Predict mode: a registered quality model.")
@click.option("--quality-experiment", multiple=True,
              help="Predict mode: fit the quality model from this experiment's runs with quality metrics.")
@click.option("--model", multiple=True, help="Model families (repeat or comma list).")
@click.option("--resolution", multiple=True, help="Square size: sets height and width. " + _DIM_HELP)
@click.option("--height", multiple=True, help=_DIM_HELP)
@click.option("--width", multiple=True, help=_DIM_HELP)
@click.option("--steps", multiple=True, help=_DIM_HELP)
@click.option("--guidance-scale", multiple=True, help=_DIM_HELP)
@click.option("--precision", multiple=True, help="fp32, fp16, bf16 (repeat or comma list).")
@click.option("--batch-size", multiple=True, help=_DIM_HELP)
@click.option("--scheduler", multiple=True, help="'default' or diffusers scheduler classes.")
@click.option("--cfg-passes", "cfg_passes", multiple=True,
              help="Denoiser passes per step: 1 or 2 (comma list). One pass is CFG off: guidance scale 1 for "
                   "SD/SDXL/SD3, no negative prompt for FLUX.1/Qwen-Image; a pass count a family cannot run "
                   "at a trial's guidance scale prunes that trial.")
@click.option("--power-limit-w", "power_limit_w", multiple=True,
              help="GPU power limit in watts (measure mode sets it through NVML; pair with --max-latency-s). " + _DIM_HELP)
@click.option("--baseline", multiple=True,
              help="The config the saving is against, NAME=VALUE (repeat or comma list: steps=30,precision=fp16) "
                   "[the first family's default at the search's size].")
@click.option("--quality-floor/--no-quality-floor", default=None,
              help="Without a quality constraint, PSNR >= min(30 dB, the baseline's - 1 dB) [quality-floor].")
@click.option("--min-steps", type=Int("min_steps", minimum=1), help="Constraint: steps >= N.")
@click.option("--max-steps", type=Int("max_steps", minimum=1), help="Constraint: steps <= N.")
@click.option("--min-psnr", type=Float("min_psnr"), help="Constraint: PSNR against the reference >= dB.")
@click.option("--min-ssim", type=Float("min_ssim"), help="Constraint: SSIM against the reference >= value.")
@click.option("--min-clip-score", type=Float("min_clip_score"),
              help="Constraint (measure mode, --clip-model): CLIP score >= value.")
@click.option("--max-latency-s", type=Float("max_latency_s", minimum=0.0, strict=True, allowed="seconds > 0"),
              help="Constraint: seconds per image <= value.")
@click.option("--trials", type=Int("trials", minimum=1), help="Trials to run [50].")
@click.option("--seed", type=Int("seed", minimum=0), help="Sampler seed [0]; give each worker of a shared study its own.")
@click.option("--storage", type=Text(), help="Optuna storage URL (sqlite:///optuna.db, postgresql://...) [in memory].")
@click.option("--study-name", type=Text(), help="Study name; workers with the same storage and name share it.")
@click.option("--experiment", type=Name("experiment"), help="MLflow experiment of the search and trial runs.")
@click.option("--multi-objective/--single-objective", default=None,
              help="Minimise energy and maximise quality: the Pareto front [single].")
@click.option("--quality-metric", type=Text(), help="psnr, ssim or clip: the quality objective / front axis [psnr].")
@click.option("--device", type=Text(), help="Measure mode: device [cpu, as measure].")
@click.option("--weights", type=Text(), help="Measure mode: 'random' or a local directory / hub id [random].")
@click.option("--repeats", type=Int("repeats", minimum=1), help="Measure mode: measured runs per config [3].")
@click.option("--warmup", type=Int("warmup", minimum=0), help="Measure mode: unmeasured runs first [1].")
@click.option("--reference-steps", type=Int("reference_steps", minimum=1),
              help="Measure mode: steps of the quality reference [50].")
@click.option("--clip-model", type=Text(), help="Measure mode: local CLIP model directory for the CLIP score.")
@click.option("--prompt", type=Text(), help="Measure mode: the prompt.")
@click.option("--plots/--no-plots", default=None, help="Log the Pareto plot and Optuna's plots [plots].")
@click.option("--log-trials/--no-log-trials", default=None, help="Log each trial as a child run [log-trials].")
def search_command(spec: str | None, **kw: Any) -> None:
    """Find the lowest-energy config under step, quality and latency constraints (Optuna)."""
    from mlflow_energy.search import DIM_OPTIONS, NoFeasibleConfigError, search_from_options

    dims = {d: values(kw.pop(d)) for d in DIM_OPTIONS}
    constraints = {name: kw.pop(name) for name in _CONSTRAINTS}
    kw["quality_experiment"] = tuple(values(kw["quality_experiment"]))
    kw["baseline"] = tuple(values(kw["baseline"]))
    try:
        result = search_from_options(dims, constraints, kw, spec=spec)
    except NoFeasibleConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    click.echo(result.summary())
    if len(result.pareto) > 1:
        from mlflow_energy import schema

        cols = [c for c in ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler",
                            schema.M_ENERGY_TOTAL, schema.M_QUALITY_PSNR, schema.M_QUALITY_SSIM) if c in result.pareto]
        click.echo(result.pareto[cols].to_string(index=False))
