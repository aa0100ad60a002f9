"""``predict`` and ``calibrate``: one config's energy from a registered model; a model adapted to your setup."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Float, Int
from mlflow_energy.config import MAX_BATCH, MAX_GUIDANCE, MAX_SIDE, MAX_STEPS, PRECISIONS


def local_hardware() -> str:
    """This machine's accelerator as the meters name it: the NVML name of GPU 0, else the CPU model."""
    try:
        import torch

        if torch.cuda.is_available():
            from mlflow_energy.measure.meters import auto_meter

            return auto_meter("cuda").hardware
    except Exception:  # noqa: BLE001 - no usable GPU: the CPU's name (the predictor says what it accepts)
        pass
    from mlflow_energy.measure.cpu import cpu_model_name

    return cpu_model_name()


def _store(model_uri: str) -> str:
    """The tracking store ``model_uri`` is looked up in; a SQLite store that does not exist is refused
    here (MLflow would create an empty ``mlflow.db`` in the working directory and not find the model)."""
    import mlflow

    from mlflow_energy.errors import ConfigError

    store = mlflow.get_registry_uri() if model_uri.startswith("models:") else mlflow.get_tracking_uri()
    if model_uri.startswith(("models:", "runs:")) and store.startswith("sqlite:///"):
        path = store[len("sqlite:///"):]
        if path != ":memory:" and not os.path.exists(path):
            raise ConfigError("model_uri", model_uri, f"a model in a tracking store: there is none at {store} "
                              "(set MLFLOW_TRACKING_URI to the store that holds it)")
    return store


def _load(model_uri: str) -> Any:
    """``load_predictor(model_uri)``; a model not found names the tracking store searched."""
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.predict import load_predictor

    store = _store(model_uri)
    try:
        return load_predictor(model_uri)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, f"{exc.allowed}; tracking store searched: {store}") from None


@main.command("predict")
@click.option("--model-uri", required=True, help="Registered or logged energy model (models:/NAME@champion).")
@click.option("--model", "family", required=True, help="Model family (mlflow-energy families).")
@click.option("--height", type=Int("height", minimum=1, maximum=MAX_SIDE), required=True, help="Image height (px).")
@click.option("--width", type=Int("width", minimum=1, maximum=MAX_SIDE), required=True, help="Image width (px).")
@click.option("--steps", type=Int("steps", minimum=1, maximum=MAX_STEPS), required=True, help="Denoising steps.")
@click.option("--guidance-scale", type=Float("guidance_scale", minimum=0.0, maximum=MAX_GUIDANCE),
              help="Guidance scale (default: the family's).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp16", show_default=True)
@click.option("--batch-size", type=Int("batch_size", minimum=1, maximum=MAX_BATCH, unset_value=1), default=1,
              show_default=True)
@click.option("--hardware", help="GPU name (default: this machine's, as the meters name it).")
@click.option("--cfg-passes", type=Int("cfg_passes", minimum=1, maximum=2),
              help="Denoiser passes per step, 1 or 2 (default: what pipe(prompt) does for the family).")
@click.option("--setup", default="", help="A training source or a calibration of the model (default: an unseen "
                                          "setup, its leave-one-setup-out interval).")
@click.option("--allow-extrapolation", is_flag=True, default=False,
              help="Answer a config outside what the model has seen (family, precision, hardware kind, size/steps/"
                   "batch range), with interval level 'extrapolated' and the widest interval.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
def predict_command(model_uri: str, family: str, height: int, width: int, steps: int, guidance_scale: float | None,
                    precision: str, batch_size: int, hardware: str | None, cfg_passes: int | None, setup: str,
                    allow_extrapolation: bool, as_json: bool) -> None:
    """Energy per image of one config, with its 90% interval, the interval's level and its scope."""
    import pandas as pd

    from mlflow_energy.predict import predict_frame

    model, calibrations = _load(model_uri)
    row = {"model": family, "height": height, "width": width, "steps": steps, "guidance_scale": guidance_scale,
           "precision": precision, "batch_size": batch_size, "hardware": hardware or local_hardware(),
           "cfg_passes": cfg_passes, "setup": setup}
    df = pd.DataFrame([row]).astype({"guidance_scale": float, "cfg_passes": float})
    out = predict_frame(model, df, calibrations=calibrations, allow_extrapolation=allow_extrapolation).iloc[0]
    scope = {"energy_scope": out["energy_scope"], "energy_sources": list(model.sources),
             "what": "J per image of the whole pipeline (text encode, denoise, decode) as the training "
                     "meters counted it" + (" (idle power excluded)" if out["energy_scope"] == "dynamic" else
                                            " (the device's total, idle power included)")}
    if as_json:
        record = {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}
        record = {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}  # NaN: null
        click.echo(json.dumps({"input": row, **record, "scope": scope, "seen": model.seen}))
        return
    click.echo(f"{family} {height}x{width}, {steps} steps, {precision}, batch {batch_size} on {row['hardware']}")
    click.echo(f"energy per image: {out['energy_total_j']:.4g} J ({out['energy_total_wh']:.4g} Wh), "
               f"90% interval {out['energy_total_j_low']:.4g} to {out['energy_total_j_high']:.4g} J")
    if out["energy_dynamic_j"] == out["energy_dynamic_j"]:  # not NaN: the model has a time law
        click.echo(f"dynamic energy (idle power excluded): {out['energy_dynamic_j']:.4g} J, 90% interval "
                   f"{out['energy_dynamic_j_low']:.4g} to {out['energy_dynamic_j_high']:.4g} J")
        click.echo(f"time per image: {out['time_total_s']:.4g} s, 90% interval {out['time_total_s_low']:.4g} to "
                   f"{out['time_total_s_high']:.4g} s")
    used = f", setup '{out['setup']}'" if out["setup"] else ""
    click.echo(f"interval level: {out['interval_level']}{used}"
               + ("  (an unseen setup: pass --setup with a training source or a calibration to narrow it)"
                  if out["interval_level"] == "unseen_setup" else ""))
    if out["note"]:
        click.echo(f"note: {out['note']}")
    click.echo(f"scope: {scope['what']}; sources {', '.join(model.sources)}")
    click.echo(f"phases: text encode {out['energy_text_encode_j']:.4g} J, denoise {out['energy_denoise_j']:.4g} J, "
               f"decode {out['energy_decode_j']:.4g} J; {out['co2e_g']:.3g} gCO2e")


@main.command("calibrate")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--model-uri", required=True, help="The energy model to adapt (models:/NAME@champion).")
@click.option("--registered-model", required=True, help="Registered model name; the new version gets @champion.")
@click.option("--setup", default=None, help="Name of this setup (the predictor's setup column selects it).")
@click.option("--experiment", default=None,
              help="Take the measurements from the runs of this experiment instead of FILE.")
def calibrate_command(file: str | None, model_uri: str, registered_model: str, setup: str | None,
                      experiment: str | None) -> None:
    """Adapt MODEL_URI to your setup from FILE (CSV or JSONL: the predictor's input columns plus energy_total_j, or
    energy_dynamic_j with idle power excluded, per image) and register the result as a new version with alias
    @champion."""
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.predict.calibrate import calibrate, read_measurements, runs_measurements

    if (file is None) == (experiment is None):
        raise ConfigError("FILE / --experiment", file or experiment, "exactly one of a measurements file or "
                          "--experiment NAME")
    _store(model_uri)
    data = read_measurements(file) if file else runs_measurements(experiment)  # type: ignore[arg-type]
    mv, cal = calibrate(data, model_uri=model_uri, registered_model=registered_model, setup=setup)
    import math

    click.echo(f"calibrated setup '{cal.name}' ({', '.join(cal.hardware)}) from {cal.n_points} measurement(s) "
               f"({cal.measured_scope} energy) of {len(cal.families)} family(ies); within-setup log sd "
               f"{cal.sigma2 ** 0.5:.3f}")
    for fam in cal.families:
        click.echo(f"  {fam}: level x{math.exp(cal.family_offset(fam)):.3f} ({cal.counts[fam]} point(s))")
    check = ", ".join(f"{k} {v:.3f}" for k, v in cal.check.items() if v == v)
    slopes = ", ".join(f"{v} {cal.slope(v):+.3f} per log unit" for v in cal.slopes_kept)
    click.echo("slopes kept: " + (slopes or "none, levels only") + (
        f" (leave-one-out mean |log error|: {check})" if check else
        " (one measurement per family: nothing within a family to learn a slope from)"))
    click.echo(f"registered: models:/{registered_model}/{mv.version} = models:/{registered_model}@champion; "
               f"rows on {', '.join(cal.hardware)} use it, or name it with setup='{cal.name}'")
