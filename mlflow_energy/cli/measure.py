"""``measure``, ``sweep`` and ``ingest``: configs measured into MLflow runs (or JSONL)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from mlflow_energy.cli import explain, from_store, main
from mlflow_energy.cli._types import Float, Int, Name, NumberOrText, Text
from mlflow_energy.config import MAX_BATCH, MAX_GUIDANCE, MAX_POWER_LIMIT_W, MAX_SIDE, MAX_STEPS
from mlflow_energy.errors import ConfigError, MissingDependencyError, MlflowEnergyError
from mlflow_energy.sweep.spec import MAX_CONFIGS, MAX_REPEATS, MAX_WARMUP

EXPERIMENT_HELP = "MLflow experiment name [MLflow's env, else mlflow-energy]."
OUTPUT_HELP = "Also append the measurement(s) to this JSONL file."
TRACKING_HELP = "Log to MLflow; --no-tracking with --output needs no MLflow at all."
CARBON_HELP = ("Grid intensity for carbon/co2e_g: a number in gCO2e/kWh, WORLD, a country code (DEU) or a "
               "cloud region (gcp:us-central1) [$MLFLOW_ENERGY_CARBON_INTENSITY, else WORLD, 475].")
REGION_HELP = "Where the machine draws power: WORLD, a country code (FRA) or a cloud region (aws:eu-west-3)."
JOURNAL_HELP = ("Local journal written (fsync) before each run is logged "
                "[$MLFLOW_ENERGY_JOURNAL, else ./mlflow-energy-journal.jsonl].")


#: Seconds of quiet after which a config's progress gets a line (a fast config prints none).
PROGRESS_EVERY_S = 10.0


class StageLines:
    """Progress within a config for a log (``Protocol.progress``): a short line on stderr when a run
    starts :data:`PROGRESS_EVERY_S` or more after the config began or after the last such line."""

    def __init__(self) -> None:
        self.started = self.last = 0.0
        self.stage = ""

    def __call__(self, stage: str, i: int, least: int, most: int) -> None:
        import time

        now = time.monotonic()
        if i == 1 and (stage == "warm-up" or self.stage != "warm-up"):  # a new config
            self.started = self.last = now
        self.stage = stage
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            span = f"{least}" if least == most else f"{least} to {most}"
            click.echo(f"  ... {stage} {i} (of {span}), {now - self.started:.0f} s into this config", err=True)


def with_progress(protocol: Any) -> Any:
    """``protocol`` with :class:`StageLines` as its progress hook."""
    import dataclasses

    return dataclasses.replace(protocol, progress=StageLines())


def _print_measurement(m: Any, run_id: str | None) -> None:
    from mlflow_energy import schema

    total = m.energy_j[schema.PHASE_TOTAL] or 1.0
    click.echo(f"{m.config.model} {m.config.height}x{m.config.width}, {m.config.steps} steps, "
               f"guidance {m.config.guidance_scale:g}, {m.config.precision}, batch {m.config.batch_size} "
               f"on {m.hardware} [{m.energy_source}]")
    estimate = m.energy_source.startswith(schema.SOURCE_ESTIMATE_PREFIX)
    click.echo(f"{'phase':<12} {'estimate J/img' if estimate else 'energy J/img':>14} {'time s/img':>12} {'share':>7}")
    for phase in (*schema.PHASES, schema.PHASE_TOTAL):
        share = 100.0 * m.energy_j[phase] / total
        click.echo(f"{phase:<12} {m.energy_j[phase]:>14.6g} {m.time_s[phase]:>12.6g} {share:>6.1f}%")
    click.echo(f"{'whole window':<12} {m.whole_window_j:>14.6g} {'':>12} gap {100.0 * m.phase_sum_gap:+.2f}%")
    ci = 100.0 * m.energy_total_ci95_j / total
    click.echo(f"{m.repeats} measured run(s) after {m.warmups} warm-up(s), {m.outliers} outlier(s): total "
               f"+-{ci:.1f}% (95% interval), std {m.energy_total_std_j:.4g} J/img; avg power {m.power_avg_w:.4g} W")
    if (m.repeats, m.warmups) != (m.config.repeats, m.config.warmup):
        least = " (2: a spread needs two)" if m.config.repeats < 2 else ""
        click.echo(f"(--repeats {m.config.repeats}{least} and --warmup {m.config.warmup} are the least: warm-up goes on "
                   f"while a run's time still moves, measuring until the total's 95% interval is within "
                   f"{100.0 * m.protocol_target:g}% or the protocol's cap of runs or seconds)")
    if m.noisy:
        click.echo(f"noisy: the 95% interval of the total (+-{ci:.1f}%) missed the target; the run is tagged "
                   f"{schema.T_NOISY}=true and fit down-weights it")
    if estimate:
        click.echo(f"energy is an estimate ({m.energy_source}), not a measurement: `mlflow-energy doctor` says why")
    if run_id:
        click.echo(f"run id: {run_id}")


def _print_record(m: Any) -> None:
    import json

    from mlflow_energy.tracking.jsonl import to_record

    click.echo(json.dumps(to_record(m), sort_keys=True))


def carbon_choice(carbon_intensity: str | float | None, region: str | None) -> str | float | None:
    """The one grid intensity of ``--carbon-intensity`` / ``--region`` (checked now, not after measuring)."""
    from mlflow_energy.carbon import grid_intensity

    if carbon_intensity is not None and region is not None:
        raise ConfigError("region", region, "either --region or --carbon-intensity, not both")
    where = region if region is not None else carbon_intensity
    if where is not None:
        grid_intensity(where)
    return where


def _measure_and_log(cfg: Any, experiment: str | None, output: str | None, tracking: bool,
                     journal: str | None = None, carbon: str | float | None = None) -> tuple[Any, str | None]:
    """Measure ``cfg``, append it to ``output``, log it; a run-time failure becomes a FAILED run.

    Output and journal paths are checked before measuring; the measurement is in the journal
    (fsync) before it is logged, so a tracking server that is away loses nothing.
    """
    from mlflow_energy.measure import check_device, measure
    from mlflow_energy.measure.protocol import DEFAULT_PROTOCOL
    from mlflow_energy.tracking import JsonlSink
    from mlflow_energy.tracking.journal import Journal, JournalUnwritable
    from mlflow_energy.tracking.retry import TrackingUnavailable, configure_client_retries, ensure_store, retrying

    sink = JsonlSink(output) if output else None
    jour = Journal(journal) if tracking else None
    if tracking:
        configure_client_retries()
        ensure_store()
    try:
        check_device(cfg.device)
        m = measure(cfg, protocol=with_progress(DEFAULT_PROTOCOL))
        if sink is not None:
            sink.write(m)
        run_id = None
        if jour is not None:
            from mlflow_energy.tracking import log_measurement

            try:
                record: dict[str, Any] | None = jour.append(m, experiment=experiment)
            except JournalUnwritable as exc:  # the measurement still goes to MLflow
                click.echo(f"Warning: {exc}; logging the measurement straight to MLflow", err=True)
                record = None
            try:
                run_id = retrying(lambda: log_measurement(m, experiment=experiment, carbon_intensity=carbon), what="logging the measurement")
            except TrackingUnavailable as exc:
                _print_measurement(m, None)
                if record is None:
                    _print_record(m)
                    click.echo(f"Error: {explain(exc)}; the journal {jour.path} cannot be written either: the measurement "
                               "is printed above as a JSONL record (save it and `mlflow-energy ingest` it)", err=True)
                else:
                    click.echo(f"Error: {explain(exc)}; the measurement is kept in the journal {jour.path}: run "
                               f"`mlflow-energy ingest {jour.path}` when the server is back", err=True)
                sys.exit(1)
            if record is not None:
                with contextlib.suppress(JournalUnwritable):  # logged; a later replay finds it FINISHED
                    jour.mark_logged([record])
        return m, run_id
    except MlflowEnergyError:
        raise  # one line from the command group (naming the tracking URI when the store is at fault)
    except Exception as exc:  # out of memory, a kernel error: record it, nothing is lost
        if from_store(exc):
            raise  # the store refused, not the config: one line from the command group
        from mlflow_energy.tracking import log_failure, one_line

        failed = log_failure(cfg, exc, experiment=experiment) if tracking else None
        where = f" (FAILED run {failed})" if failed else ""
        click.echo(f"Error: {cfg.model} could not be measured: {one_line(exc)}{where}", err=True)
        sys.exit(1)


@main.command("measure")
@click.option("--model", required=True, help="Family name (see `mlflow-energy families`), e.g. tiny-sd2, sd2.")
@click.option("--weights", type=Text(unset_value="random"), default="random", show_default=True,
              help="'random' or a local directory / hub id.")
@click.option("--height", type=Int("height", minimum=1, maximum=MAX_SIDE), help="Image height in pixels [family default].")
@click.option("--width", type=Int("width", minimum=1, maximum=MAX_SIDE), help="Image width in pixels [family default].")
@click.option("--steps", type=Int("steps", minimum=1, maximum=MAX_STEPS), help="Denoising steps [family default].")
@click.option("--guidance-scale", type=Float("guidance_scale", minimum=0.0, maximum=MAX_GUIDANCE),
              help="Classifier-free guidance scale [family default].")
@click.option("--precision", type=Text(unset_value="fp32"), default="fp32", show_default=True, help="fp32, fp16 or bf16.")
@click.option("--batch-size", type=Int("batch_size", minimum=1, maximum=MAX_BATCH, unset_value=1), default=1,
              show_default=True,
              help="Images per pipeline call.")
@click.option("--device", type=Text(unset_value="cpu"), default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps.")
@click.option("--scheduler", type=Text(unset_value="default"), default="default", show_default=True,
              help="'default' or a diffusers scheduler class.")
@click.option("--seed", type=Int("seed", minimum=0, unset_value=0), default=0, show_default=True,
              help="Latent generator seed.")
@click.option("--repeats", type=Int("repeats", minimum=1, maximum=MAX_REPEATS, unset_value=3), default=3, show_default=True,
              help="Least number of measured runs (at least 2); more follow until the total's 95% interval is "
                   "within 5% (at most 20 runs or 30 s). Values are their mean, outliers left out.")
@click.option("--warmup", type=Int("warmup", minimum=0, maximum=MAX_WARMUP, unset_value=1), default=1, show_default=True,
              help="Least number of unmeasured warm-up runs; more follow (at most 5) while a run's time still "
                   "moves by over 10%.")
@click.option("--power-limit-w", "power_limit_w",
              type=Float("power_limit_w", minimum=0.0, strict=True, maximum=MAX_POWER_LIMIT_W),
              help="GPU power limit in watts for this measurement (NVIDIA, needs root); restored afterwards "
                   "[the GPU's limit as it is].")
@click.option("--experiment", type=Name("experiment"), help=EXPERIMENT_HELP)
@click.option("--output", type=Text(), help=OUTPUT_HELP)
@click.option("--tracking/--no-tracking", default=True, show_default=True, help=TRACKING_HELP)
@click.option("--journal", type=Text(), help=JOURNAL_HELP)
@click.option("--carbon-intensity", type=NumberOrText("carbon_intensity"), help=CARBON_HELP)
@click.option("--region", type=Text(), help=REGION_HELP)
def measure_command(experiment: str | None, output: str | None, tracking: bool, journal: str | None,
                    carbon_intensity: str | float | None, region: str | None, **fields: Any) -> None:
    """Measure the per-phase energy of one inference config and log it as an MLflow run."""
    from mlflow_energy.config import InferenceConfig

    cfg = InferenceConfig(**fields).validate()
    if not tracking and not output:
        raise ConfigError("output", None, "a JSONL file when --no-tracking is given")
    carbon = carbon_choice(carbon_intensity, region)
    m, run_id = _measure_and_log(cfg, experiment, output, tracking, journal, carbon)
    _print_measurement(m, run_id)
    if output:
        click.echo(f"appended to {output}")


@main.command("sweep")
@click.argument("spec")
@click.option("--experiment", type=Name("experiment"), help="MLflow experiment name [the spec's, else mlflow-energy].")
@click.option("--shard", type=Text(), envvar="MLFLOW_ENERGY_SHARD",
              help="I/N: measure only shard I (0-based) of N, split by config hash; 'auto': the index of this task "
                   "of a Kubernetes Indexed Job or Slurm job array (no claims needed); 'auto/N': the same, N the "
                   "array's size (a task resubmitted alone) [$MLFLOW_ENERGY_SHARD].")
@click.option("--coordination-uri", type=Text(), envvar="MLFLOW_ENERGY_COORDINATION_URI",
              help="Database for the claims of many workers (postgresql://... or sqlite:///...) when the tracking "
                   "store is an mlflow server; a SQL tracking URI is its own [$MLFLOW_ENERGY_COORDINATION_URI].")
@click.option("--max-configs", type=Int("max_configs", minimum=1, unset_value=MAX_CONFIGS), default=MAX_CONFIGS,
              show_default=True, help="Refuse a spec whose grid has more configs (a typo in a list, most likely).")
@click.option("--output", type=Text(), help=OUTPUT_HELP)
@click.option("--tracking/--no-tracking", default=True, show_default=True, help=TRACKING_HELP)
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar (--no-progress: one line per config).")
@click.option("--journal", type=Text(), help=JOURNAL_HELP)
@click.option("--carbon-intensity", type=NumberOrText("carbon_intensity"), help=CARBON_HELP)
@click.option("--region", type=Text(), help=REGION_HELP)
def sweep_command(spec: str, experiment: str | None, shard: str | None, coordination_uri: str | None,
                  max_configs: int, output: str | None, tracking: bool, progress: bool, journal: str | None,
                  carbon_intensity: str | float | None, region: str | None) -> None:
    """Measure every config of a YAML sweep SPEC (resumes; failed configs become FAILED runs)."""
    import os

    from mlflow_energy.carbon import ENV_CARBON_INTENSITY
    from mlflow_energy.sweep import SweepSpec, parse_shard, run_sweep
    from mlflow_energy.sweep.scheduler import PartialArray, parse_auto, scheduler_shard

    carbon = carbon_choice(carbon_intensity, region)
    if carbon is not None:  # every run the sweep logs reads it (tracking.log_measurement)
        os.environ[ENV_CARBON_INTENSITY] = str(carbon)

    parsed = SweepSpec.from_yaml(spec, max_configs=max_configs)
    if carbon is not None:  # the command line wins over the spec's carbon_intensity
        import dataclasses

        parsed = dataclasses.replace(parsed, carbon_intensity=carbon)
    elif parsed.carbon_intensity is not None:  # records replayed from the journal read it too
        os.environ[ENV_CARBON_INTENSITY] = str(parsed.carbon_intensity)
    if not progress:  # a line now and then within a long config (the bar is per config)
        import dataclasses

        parsed = dataclasses.replace(parsed, protocol=with_progress(parsed.protocol))
    claims = True
    auto, count = parse_auto(shard)
    count_from = None
    if auto and count is None and parsed.shards is not None:  # the spec's shards: as --shard auto/N
        count, count_from = parsed.shards, "shards"
    if auto:
        where_from: tuple[int, int] | None
        try:
            where_from, why = scheduler_shard(count=count, count_from=count_from)
        except PartialArray as exc:  # a resubmitted index: claims over the whole spec, if a database holds them
            import mlflow

            from mlflow_energy.sweep.coordination import coordination_url

            if not tracking or coordination_url(mlflow.get_tracking_uri(), coordination_uri) is None:
                raise
            where_from, why = None, f"{exc} (no count given: the claims database gives each config to one worker)"
        if where_from is not None:
            claims = False  # the scheduler runs each index until it succeeds: exactly once without claims
            click.echo(f"shard {where_from[0]}/{where_from[1]} from the {why}; no claims (a retried task "
                       "resumes, skipping configs already FINISHED)")
        else:
            click.echo(f"shard auto: {why}; the whole spec, claims give each config to one worker")
        shard_value = where_from
    else:
        shard_value = parse_shard(shard)
    try:
        result = run_sweep(parsed, experiment=experiment, shard=shard_value, output=output, tracking=tracking,
                           progress=progress, journal=journal, claims=claims, coordination_uri=coordination_uri)
    except (ConfigError, MissingDependencyError):
        raise
    except MlflowEnergyError as exc:
        click.echo(f"Error: {explain(exc) if from_store(exc) else exc}", err=True)
        sys.exit(1)
    for cfg, reason in result.failed:
        click.echo(f"FAILED {cfg.model} {cfg.height}x{cfg.width} {cfg.steps} steps: {reason}")
    click.echo(f"{result.total} configs: {result.measured} measured, {len(result.failed)} failed, "
               f"{result.skipped} skipped (already measured or claimed by another worker); "
               f"{result.energy_j:.4g} J {'estimated (no energy counter)' if result.estimated else 'measured'}")
    if result.superseded:
        click.echo(f"superseded: {result.superseded} run(s) of this worker tagged superseded (their claim was taken "
                   "over meanwhile; the taker's run counts)")
    if result.noisy:
        click.echo(f"noisy: {result.noisy} config(s) missed the 95% interval target (tagged; fit down-weights them)")
    if result.wall_s > 0:
        click.echo(f"sweep wall {result.wall_s:.1f} s, of which measuring {result.inference_s:.1f} s "
                   f"({100.0 * result.inference_s / result.wall_s:.0f}%)")
    if tracking and not result.parent_run_id and result.total and result.skipped == result.total:
        click.echo("nothing new to measure: no sweep run added")
    away = None
    if result.parent_run_id:
        click.echo(f"sweep run id: {result.parent_run_id}")
        away = None if result.missing else _energy_view(result.parent_run_id)
    if result.fenced:
        click.echo(f"stopped: this worker was declared stale and its claims were taken over ({result.fenced}); "
                   "the configs it held are measured by the others")
        return
    if result.missing:
        click.echo(f"Error: {len(result.missing)} config(s) left unmeasured: the tracking server stayed away; "
                   "run the sweep again when it is back", err=True)
        sys.exit(1)
    if away:
        click.echo(f"Error: {away} at the end of the sweep; the measurements it could not log wait in the "
                   "journal named above", err=True)
        sys.exit(1)
    if result.total and len(result.failed) == result.total:
        click.echo("Error: every config of the sweep failed", err=True)
        sys.exit(1)


@main.command("ingest")
@click.argument("file")
@click.option("--experiment", type=Name("experiment"), help=EXPERIMENT_HELP)
def ingest_command(file: str, experiment: str | None) -> None:
    """Log the measurements of a JSONL FILE (from --output) as MLflow runs; skips those already there."""
    import os

    from mlflow_energy.tracking import ingest

    if os.path.isfile(file):
        _recover_killed(experiment)
    new_ids, skipped = ingest(file, experiment=experiment)
    click.echo(f"logged {len(new_ids)} run(s), skipped {skipped} already logged")


def _energy_view(run_id: str) -> str | None:
    """Print the energy view's address of the sweep run's experiment; the store's error when it does not answer."""
    from mlflow_energy.tracking import client, energy_view_url

    try:
        exp_id = client().get_run(run_id).info.experiment_id
    except Exception as exc:
        if not from_store(exc):
            raise
        return explain(exc)
    click.echo(f"energy view (mlflow ui --port 5000): {energy_view_url('http://127.0.0.1:5000', exp_id)}")
    return None


def _recover_killed(experiment: str | None) -> None:
    """End the RUNNING fit/ingest runs of this experiment whose process was killed (one line)."""
    from mlflow_energy import schema
    from mlflow_energy.tracking.runs import client
    from mlflow_energy.tracking.stale import recover_dead_processes

    try:
        exp = client().get_experiment_by_name(experiment) if experiment else None
        if exp is None and experiment:
            return
        exp_ids = [exp.experiment_id] if exp else [e.experiment_id for e in client().search_experiments()]
        ended = [r for e in exp_ids for r in recover_dead_processes(e, (schema.KIND_FIT, schema.KIND_MEASUREMENT))]
    except Exception:  # a cleanup only: the command itself says what is wrong with the store
        return
    if ended:
        click.echo(f"ended {len(ended)} RUNNING run(s) of a killed fit or ingest (reason in tag {schema.T_FAILURE})")
