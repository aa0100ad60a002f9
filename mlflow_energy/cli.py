"""The ``mlflow-energy`` command line.

Bad input exits with code 2 and one line naming the field, the value and what is allowed.
Heavy modules are imported inside each command so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from mlflow_energy.errors import ConfigError, MissingDependencyError


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our input errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, MissingDependencyError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mlflow-energy")
def main() -> None:
    """Measure, predict and cut the energy of diffusion-model image generation, with MLflow."""


# --- commands: each block below is owned by one module; add new ones above the marker ---

# --- measure, sweep, ingest (runner.py, sweep.py, export.py) ---------------------------------
def _opt(value: str | None) -> str | None:
    """MLproject passes unset parameters as empty strings: treat them as unset."""
    return None if value is None or str(value).strip() in ("", "default", "None", "none") else str(value).strip()


def _int_opt(field: str, value: str | None, minimum: int) -> int | None:
    text = _opt(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(field, text, f"an integer >= {minimum}") from None


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _float_opt(field: str, value: str | None, allowed: str) -> float | None:
    text = _opt(value)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(field, text, allowed) from None


def _print_measurement(m: Any, run_id: str | None) -> None:
    from mlflow_energy import schema

    total = m.energy_j[schema.PHASE_TOTAL] or 1.0
    click.echo(f"{m.config.model} {m.config.height}x{m.config.width}, {m.config.steps} steps, "
               f"guidance {m.config.guidance_scale:g}, {m.config.precision}, batch {m.config.batch_size} "
               f"on {m.hardware} [{m.energy_source}]")
    click.echo(f"{'phase':<12} {'energy J/img':>14} {'time s/img':>12} {'share':>7}")
    for phase in (*schema.PHASES, schema.PHASE_TOTAL):
        share = 100.0 * m.energy_j[phase] / total
        click.echo(f"{phase:<12} {m.energy_j[phase]:>14.6g} {m.time_s[phase]:>12.6g} {share:>6.1f}%")
    click.echo(f"{'whole window':<12} {m.whole_window_j:>14.6g} {'':>12} gap {100.0 * m.phase_sum_gap:+.2f}%")
    click.echo(f"std of total over {m.config.repeats} repeat(s): {m.energy_total_std_j:.4g} J/img; "
               f"avg power {m.power_avg_w:.4g} W")
    if run_id:
        click.echo(f"run id: {run_id}")


@main.command("measure")
@click.option("--model", required=True, help="Family name (see `mlflow-energy families`), e.g. tiny-sd2, sd2.")
@click.option("--weights", default="random", show_default=True, help="'random' or a local directory / hub id.")
@click.option("--height", default=None, help="Image height in pixels [family default].")
@click.option("--width", default=None, help="Image width in pixels [family default].")
@click.option("--steps", default=None, help="Denoising steps [family default].")
@click.option("--guidance-scale", default=None, help="Classifier-free guidance scale [family default].")
@click.option("--precision", default="fp32", show_default=True, help="fp32, fp16 or bf16.")
@click.option("--batch-size", default="1", show_default=True, help="Images per pipeline call.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.option("--scheduler", default="default", show_default=True, help="'default' or a diffusers scheduler class.")
@click.option("--seed", default="0", show_default=True, help="Latent generator seed.")
@click.option("--repeats", default="3", show_default=True, help="Measured runs (values are their mean).")
@click.option("--warmup", default="1", show_default=True, help="Unmeasured runs first.")
@click.option("--experiment", default=None, help="MLflow experiment name [MLflow's env, else mlflow-energy].")
@click.option("--output", default=None, help="Also append the measurement to this JSONL file.")
@click.option("--tracking/--no-tracking", default=True, show_default=True,
              help="Log to MLflow; --no-tracking with --output needs no MLflow at all.")
@one_line_errors
def measure_command(model: str, weights: str, height: str | None, width: str | None, steps: str | None,
                    guidance_scale: str | None, precision: str, batch_size: str, device: str, scheduler: str,
                    seed: str, repeats: str, warmup: str, experiment: str | None, output: str | None,
                    tracking: bool) -> None:
    """Measure the per-phase energy of one inference config and log it as an MLflow run."""
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.errors import MlflowEnergyError

    cfg = InferenceConfig(
        model=model,
        weights=_opt(weights) or "random",
        height=_int_opt("height", height, 1),
        width=_int_opt("width", width, 1),
        steps=_int_opt("steps", steps, 1),
        guidance_scale=_float_opt("guidance_scale", guidance_scale, "a number >= 0"),
        precision=_opt(precision) or "fp32",
        batch_size=_or(_int_opt("batch_size", batch_size, 1), 1),
        device=_opt(device) or "cpu",
        scheduler=_opt(scheduler) or "default",
        seed=_or(_int_opt("seed", seed, 0), 0),
        repeats=_or(_int_opt("repeats", repeats, 1), 3),
        warmup=_or(_int_opt("warmup", warmup, 0), 1),
    ).validate()
    if not tracking and not _opt(output):
        raise ConfigError("output", None, "a JSONL file when --no-tracking is given")
    try:
        from mlflow_energy.measure.device import check_device
        from mlflow_energy.measure.runner import measure

        check_device(cfg.device)
        m = measure(cfg)
        run_id = None
        if _opt(output):
            from mlflow_energy.tracking.jsonl import JsonlSink

            JsonlSink(_opt(output)).write(m)
        if tracking:
            from mlflow_energy.tracking import log_measurement

            run_id = log_measurement(m, experiment=_opt(experiment))
    except (ConfigError, MissingDependencyError):
        raise
    except MlflowEnergyError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # out of memory, a kernel error: record it, nothing is lost
        from mlflow_energy.tracking import log_failure, one_line

        failed = log_failure(cfg, exc, experiment=_opt(experiment)) if tracking else None
        where = f" (FAILED run {failed})" if failed else ""
        click.echo(f"Error: {cfg.model} could not be measured: {one_line(exc)}{where}", err=True)
        sys.exit(1)
    _print_measurement(m, run_id)
    if _opt(output):
        click.echo(f"appended to {_opt(output)}")


@main.command("sweep")
@click.argument("spec")
@click.option("--experiment", default=None, help="MLflow experiment name [the spec's, else mlflow-energy].")
@click.option("--shard", default=None, help="I/N: measure only shard I (0-based) of N, split by config hash.")
@click.option("--output", default=None, help="Also append one JSONL record per measured config to this file.")
@click.option("--tracking/--no-tracking", default=True, show_default=True,
              help="Log to MLflow; --no-tracking with --output needs no MLflow at all.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@one_line_errors
def sweep_command(spec: str, experiment: str | None, shard: str | None, output: str | None, tracking: bool,
                  progress: bool) -> None:
    """Measure every config of a YAML sweep SPEC (resumes; failed configs become FAILED runs)."""
    from mlflow_energy.errors import MlflowEnergyError
    from mlflow_energy.sweep import SweepSpec, parse_shard, run_sweep

    parsed = SweepSpec.from_yaml(spec)
    try:
        result = run_sweep(parsed, experiment=_opt(experiment), shard=parse_shard(_opt(shard)),
                           output=_opt(output), tracking=tracking, progress=progress)
    except (ConfigError, MissingDependencyError):
        raise
    except MlflowEnergyError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    for cfg, reason in result.failed:
        click.echo(f"FAILED {cfg.model} {cfg.height}x{cfg.width} {cfg.steps} steps: {reason}")
    click.echo(f"{result.total} configs: {result.measured} measured, {len(result.failed)} failed, "
               f"{result.skipped} skipped (already measured); {result.energy_j:.4g} J measured")
    if result.parent_run_id:
        click.echo(f"sweep run id: {result.parent_run_id}")


@main.command("ingest")
@click.argument("file")
@click.option("--experiment", default=None, help="MLflow experiment name [MLflow's env, else mlflow-energy].")
@one_line_errors
def ingest_command(file: str, experiment: str | None) -> None:
    """Log the measurements of a JSONL FILE (from --output) as MLflow runs; skips those already there."""
    from mlflow_energy.tracking import ingest

    new_ids, skipped = ingest(file, experiment=_opt(experiment))
    click.echo(f"logged {len(new_ids)} run(s), skipped {skipped} already logged")


# --- fit, import-mlenergy (fit/, predict/, tracking/mlenergy.py) ---------------------------------
@main.command("fit")
@click.option("--experiment", required=True, help="Experiment holding the measurement runs.")
@click.option("--registered-model", required=True, help="Registered model name; the new version gets @champion.")
@click.option("--allow-mixed-sources", is_flag=True, default=False,
              help="Fit Zeus measurements, estimates and external datasets together.")
@click.option("--bootstrap", type=int, default=200, show_default=True, help="Bootstrap resamples of each slope.")
@click.option("--n-estimators", type=int, default=100, show_default=True, help="Boosting rounds of the corrector.")
@click.option("--max-folds", type=int, default=40, show_default=True,
              help="Most folds per cross-validation scheme (configs beyond it are grouped).")
@click.option("--no-plots", is_flag=True, default=False, help="Skip the plot artifacts.")
@one_line_errors
def fit_command(experiment: str, registered_model: str, allow_mixed_sources: bool, bootstrap: int,
                n_estimators: int, max_folds: int, no_plots: bool) -> None:
    """Fit the energy law on the runs of EXPERIMENT, log the fit run, register the model."""
    import mlflow

    from mlflow_energy import schema, tracking
    from mlflow_energy.fit import check_sources, fit_energy_model, format_summary, log_fit, runs_frame
    from mlflow_energy.predict import log_and_register

    frame = runs_frame(experiment)
    sources = check_sources(frame, allow_mixed=allow_mixed_sources)
    click.echo(f"{len(frame)} measurement run(s) from '{experiment}', energy source(s): {', '.join(sources)}")
    result = fit_energy_model(frame, n_boot=bootstrap, n_estimators=n_estimators, max_folds=max_folds)
    # Create the run explicitly: under `mlflow run` (MLFLOW_RUN_ID set) a bare start_run()
    # would resume the project's own run, possibly in another experiment.
    exp_id = tracking.experiment_id(experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    run_id = tracking.start_run(exp_id, kind=schema.KIND_FIT, run_name=f"fit-{registered_model}")
    with mlflow.start_run(run_id=run_id) as run:
        log_fit(result, experiment=experiment, allow_mixed=allow_mixed_sources, registered_model=registered_model,
                plots=not no_plots)
        mv = log_and_register(result, registered_model)
    click.echo(format_summary(result))
    click.echo(f"fit run: {run.info.run_id} (experiment '{experiment}'; artifacts fit/ and plots/)")
    click.echo(f"registered: models:/{registered_model}/{mv.version} = models:/{registered_model}@"
               f"{schema.REGISTERED_ALIAS_CHAMPION}")


@main.command("import-mlenergy")
@click.argument("csv", required=False, type=click.Path(dir_okay=False))
@click.option("--experiment", required=True, help="Experiment to log the runs into (created if missing).")
@click.option("--carbon-intensity", default=None,
              help="Grid intensity for carbon/co2e_g: WORLD (default), a country code (DEU) or a number in g/kWh.")
@one_line_errors
def import_mlenergy_command(csv: str | None, experiment: str, carbon_intensity: str | None) -> None:
    """Log the ML.ENERGY leaderboard v2 text-to-image rows as runs (default CSV: the packaged copy)."""
    from mlflow_energy.tracking.mlenergy import import_mlenergy

    intensity: str | float | None = carbon_intensity
    if carbon_intensity is not None:
        try:
            intensity = float(carbon_intensity)
        except ValueError:
            intensity = carbon_intensity
    rep = import_mlenergy(csv, experiment=experiment, intensity=intensity)
    click.echo(f"logged {rep.logged} run(s) into '{experiment}'; {rep.already_present} already present; "
               f"skipped {rep.skipped_no_family} row(s) whose model has no family "
               f"({', '.join(rep.skipped_models) or 'none'})")


# --- search (search.py) ------------------------------------------------------------------------
_DIM_HELP = "Fixed value, comma list / repeated flag (categorical), or LO:HI[:STEP] range."


@main.command("search")
@click.option("--spec", default=None, help="YAML spec with sections space, constraints, search (flags override it).")
@click.option("--mode", default=None, help="predict (registered model, ms per trial) or measure (live) [predict].")
@click.option("--model-uri", default=None, help="Predict mode: the energy model, e.g. models:/energy@champion.")
@click.option("--hardware", default=None, help="Predict mode: the GPU to predict for, e.g. H100.")
@click.option("--avg-power-w", default=None,
              help="Predict mode, predictor without time_total_s: latency = energy / this power (W).")
@click.option("--quality-model-uri", default=None, help="Predict mode: a registered quality model.")
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
@click.option("--min-steps", default=None, help="Constraint: steps >= N.")
@click.option("--max-steps", default=None, help="Constraint: steps <= N.")
@click.option("--min-psnr", default=None, help="Constraint: PSNR against the reference >= dB.")
@click.option("--min-ssim", default=None, help="Constraint: SSIM against the reference >= value.")
@click.option("--min-clip-score", default=None, help="Constraint (measure mode, --clip-model): CLIP score >= value.")
@click.option("--max-latency-s", default=None, help="Constraint: seconds per image <= value.")
@click.option("--trials", default=None, help="Trials to run [50].")
@click.option("--seed", default=None, help="Sampler seed [0]; give each worker of a shared study its own.")
@click.option("--storage", default=None, help="Optuna storage URL (sqlite:///optuna.db, postgresql://...) [in memory].")
@click.option("--study-name", default=None, help="Study name; workers with the same storage and name share it.")
@click.option("--experiment", default=None, help="MLflow experiment of the search and trial runs.")
@click.option("--multi-objective/--single-objective", default=None,
              help="Minimise energy and maximise quality: the Pareto front [single].")
@click.option("--quality-metric", default=None, help="psnr, ssim or clip: the quality objective / front axis [psnr].")
@click.option("--device", default=None, help="Measure mode: device [cuda].")
@click.option("--weights", default=None, help="Measure mode: 'random' or a local directory / hub id [random].")
@click.option("--repeats", default=None, help="Measure mode: measured runs per config [3].")
@click.option("--warmup", default=None, help="Measure mode: unmeasured runs first [1].")
@click.option("--reference-steps", default=None, help="Measure mode: steps of the quality reference [50].")
@click.option("--clip-model", default=None, help="Measure mode: local CLIP model directory for the CLIP score.")
@click.option("--prompt", default=None, help="Measure mode: the prompt.")
@click.option("--plots/--no-plots", default=None, help="Log the Pareto plot and Optuna's plots [plots].")
@click.option("--log-trials/--no-log-trials", default=None, help="Log each trial as a child run [log-trials].")
@one_line_errors
def search_command(spec: str | None, **kw: Any) -> None:
    """Find the lowest-energy config under step, quality and latency constraints (Optuna)."""
    from mlflow_energy.search import DIM_OPTIONS, NoFeasibleConfigError, search_from_options

    dims = {d: [v for v in (_opt(x) for x in kw.pop(d)) if v is not None] for d in DIM_OPTIONS}
    cons = {
        "min_steps": _int_opt("min_steps", kw.pop("min_steps"), 1),
        "max_steps": _int_opt("max_steps", kw.pop("max_steps"), 1),
        "max_latency_s": _float_opt("max_latency_s", kw.pop("max_latency_s"), "seconds > 0"),
    }
    for name in ("min_psnr", "min_ssim", "min_clip_score"):
        cons[name] = _float_opt(name, kw.pop(name), "a number")
    ints = {"trials": 1, "seed": 0, "repeats": 1, "warmup": 0, "reference_steps": 1}
    options = {k: (_int_opt(k, v, ints[k]) if k in ints else _opt(v) if isinstance(v, str) else v) for k, v in kw.items()}
    options["avg_power_w"] = _float_opt("avg_power_w", kw["avg_power_w"], "a power in watts > 0")
    options["quality_experiment"] = tuple(v for v in (_opt(x) for x in kw["quality_experiment"]) if v)
    try:
        result = search_from_options(dims, cons, options, spec=_opt(spec))
    except NoFeasibleConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    click.echo(result.summary())
    if len(result.pareto) > 1:
        from mlflow_energy import schema

        cols = [c for c in ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler",
                            schema.M_ENERGY_TOTAL, schema.M_QUALITY_PSNR, schema.M_QUALITY_SSIM) if c in result.pareto]
        click.echo(result.pareto[cols].to_string(index=False))


# --- flops (flops.py) -------------------------------------------------------------------------
@main.command("flops")
@click.option("--model", required=True, help="Family name, e.g. sd2, flux.1-dev, tiny-sd2.")
@click.option("--height", default=None, help="Image height in pixels [family default].")
@click.option("--width", default=None, help="Image width in pixels [family default].")
@click.option("--steps", default=None, help="Denoising steps [family default].")
@click.option("--guidance-scale", default=None, help="Classifier-free guidance scale [family default].")
@click.option("--batch-size", default="1", show_default=True, help="Images per pipeline call.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of FLOP per image.")
@one_line_errors
def flops_command(model: str, height: str | None, width: str | None, steps: str | None,
                  guidance_scale: str | None, batch_size: str, as_json: bool) -> None:
    """Analytical FLOPs per image of each phase (text_encode, denoise, decode), no model built."""
    import json

    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.families import get_family
    from mlflow_energy.flops import PHASES, component_flops, config_flops

    cfg = InferenceConfig(
        model=model,
        height=_int_opt("height", height, 1),
        width=_int_opt("width", width, 1),
        steps=_int_opt("steps", steps, 1),
        guidance_scale=_float_opt("guidance_scale", guidance_scale, "a number >= 0"),
        batch_size=1 if _opt(batch_size) is None else _int_opt("batch_size", batch_size, 1),
    ).validate()
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

# --- families ----------------------------------------------------------------------------------
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


# <<< commands end >>>


if __name__ == "__main__":  # pragma: no cover
    main()
