"""``fit`` and ``import-mlenergy``: runs to a registered energy model, public data to runs."""

from __future__ import annotations

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Int, Name, NumberOrText


@main.command("fit")
@click.option("--experiment", type=Name("experiment", required=True), required=True,
              help="Experiment holding the measurement runs.")
@click.option("--registered-model", required=True, help="Registered model name; the new version gets @champion.")
@click.option("--allow-mixed-sources", is_flag=True, default=False,
              help="Fit Zeus measurements, estimates and external datasets together.")
@click.option("--bootstrap", type=Int("bootstrap", minimum=0, unset_value=200), default=200, show_default=True,
              help="Bootstrap resamples of each slope (0: no slope intervals).")
@click.option("--n-estimators", type=Int("n_estimators", minimum=1, unset_value=100), default=100,
              show_default=True, help="Boosting rounds of the corrector.")
@click.option("--max-folds", type=Int("max_folds", minimum=2, unset_value=40), default=40, show_default=True,
              help="Most folds per cross-validation scheme (configs beyond it are grouped).")
@click.option("--no-plots", is_flag=True, default=False, help="Skip the plot artifacts.")
@click.option("--target", type=click.Choice(["total", "dynamic"]), default="total", show_default=True,
              help="Energy to fit: the device total (idle included) or dynamic (idle power x time subtracted).")
@click.option("--noisy", "noisy_mode", type=click.Choice(["downweight", "exclude", "keep"]), default="downweight",
              show_default=True,
              help="Runs the measurement protocol tagged noisy: weigh each (target / its interval)^2, "
                   "leave them out, or fit them like the others.")
@click.option("--keep-noisy", is_flag=True, default=False, help="Same as --noisy keep.")
@click.option("--law", type=click.Choice(["auto", "power", "saturating"]), default="auto", show_default=True,
              help="Form of each phase's law: the one grouped CV prefers, the power law, or the saturating law "
                   "(GPUs in the spec table only).")
def fit_command(experiment: str, registered_model: str, allow_mixed_sources: bool, bootstrap: int,
                n_estimators: int, max_folds: int, no_plots: bool, target: str, noisy_mode: str,
                keep_noisy: bool, law: str) -> None:
    """Fit the energy law on the runs of EXPERIMENT, log the fit run, register the model."""
    import mlflow

    from mlflow_energy import schema, tracking
    from mlflow_energy.cli.measure import _recover_killed
    from mlflow_energy.fit import (
        check_sources,
        fit_energy_model,
        fit_fingerprint,
        format_summary,
        log_fit,
        runs_frame,
        version_card,
        weigh_noisy,
    )
    from mlflow_energy.fit.model import STATE_VERSION
    from mlflow_energy.predict import log_and_register

    _recover_killed(experiment)
    frame = runs_frame(experiment, target=target)
    superseded = int(frame.attrs.get("superseded", 0))  # runs_frame printed how many; the fit run logs it
    sources = check_sources(frame, allow_mixed=allow_mixed_sources)
    noisy_mode = "keep" if keep_noisy else noisy_mode
    frame, noisy = weigh_noisy(frame, noisy_mode)
    what = {"downweight": "down-weighted", "exclude": "left out"}.get(noisy_mode, "")
    click.echo(f"{len(frame)} measurement run(s) from '{experiment}', energy source(s): {', '.join(sources)}; "
               f"target: {target} energy" + (f"; {noisy} noisy run(s) {what}" if noisy else ""))
    settings = {"target": target, "noisy": noisy_mode, "bootstrap": bootstrap, "n_estimators": n_estimators,
                "max_folds": max_folds, "allow_mixed_sources": allow_mixed_sources, "law": law,
                "model_state": STATE_VERSION}  # a release that changes the model refits, not reuses
    fingerprint = fit_fingerprint(frame, settings)
    same = _version_with(registered_model, fingerprint)
    if same is not None:
        tracking.client().set_registered_model_alias(registered_model, schema.REGISTERED_ALIAS_CHAMPION, same)
        click.echo(f"identical fit (same {len(frame)} runs and settings): reusing models:/{registered_model}/{same}, "
                   f"no new version; models:/{registered_model}@{schema.REGISTERED_ALIAS_CHAMPION} points at it")
        return
    result = fit_energy_model(frame, n_boot=bootstrap, n_estimators=n_estimators, max_folds=max_folds, law=law)
    result.target = target
    if noisy_mode == "exclude":
        result.noisy_excluded = noisy
    elif noisy_mode == "downweight":
        result.noisy_downweighted = noisy
    # Create the run explicitly: under `mlflow run` (MLFLOW_RUN_ID set) a bare start_run()
    # would resume the project's own run, possibly in another experiment.
    # A killed fit cannot end its run: each run carries its worker and a heartbeat, and the next
    # fit or ingest ends those whose process is gone.
    from mlflow_energy.tracking.stale import Heartbeat, worker_id

    exp_id = tracking.experiment_id(experiment)
    mlflow.set_experiment(experiment_id=exp_id)
    run_id = tracking.start_run(exp_id, kind=schema.KIND_FIT, run_name=f"fit-{registered_model}",
                                tags={schema.T_WORKER: worker_id()})
    beat = Heartbeat(run_id).start()
    try:
        with mlflow.start_run(run_id=run_id) as run:
            log_fit(result, experiment=experiment, allow_mixed=allow_mixed_sources,
                    registered_model=registered_model, plots=not no_plots)
            mlflow.log_metric(schema.M_FIT_SUPERSEDED, float(superseded))
            description, tags = version_card(result, experiment=experiment, fingerprint=fingerprint)
            mv = log_and_register(result, registered_model, description=description, tags=tags)
    finally:
        beat.stop()
    click.echo(format_summary(result))
    click.echo(f"fit run: {run.info.run_id} (experiment '{experiment}'; artifacts fit/ and plots/)")
    click.echo(f"registered: models:/{registered_model}/{mv.version} = models:/{registered_model}@"
               f"{schema.REGISTERED_ALIAS_CHAMPION}")


def _version_with(registered_model: str, fingerprint: str) -> str | None:
    """The version of ``registered_model`` an identical fit registered, if any."""
    from mlflow_energy import schema, tracking
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.tracking.filters import literal

    try:
        name = literal(registered_model)
    except ConfigError:  # both quote kinds: no filter can spell it, so no version is reused
        return None
    for mv in tracking.client().search_model_versions(f"name = {name}"):
        if mv.tags.get(schema.T_FIT_FINGERPRINT) == fingerprint:
            return str(mv.version)
    return None


@main.command("import-mlenergy")
@click.argument("csv", required=False, type=click.Path(dir_okay=False))
@click.option("--experiment", type=Name("experiment", required=True), required=True,
              help="Experiment to log the runs into (created if missing).")
@click.option("--carbon-intensity", type=NumberOrText("carbon_intensity"),
              help="Grid intensity for carbon/co2e_g: WORLD (default), a country code (DEU) or a number in g/kWh.")
def import_mlenergy_command(csv: str | None, experiment: str, carbon_intensity: str | float | None) -> None:
    """Log the ML.ENERGY leaderboard v2 and v3 text-to-image rows as runs (default: both packaged copies)."""
    from mlflow_energy.tracking import import_mlenergy

    rep = import_mlenergy(csv, experiment=experiment, intensity=carbon_intensity)
    click.echo(f"logged {rep.logged} run(s) into '{experiment}'; {rep.already_present} already present; "
               f"skipped {rep.skipped_no_family} row(s) whose model has no family "
               f"({', '.join(rep.skipped_models) or 'none'})")
