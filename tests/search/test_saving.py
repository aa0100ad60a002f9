"""A saving a user would take: the user's baseline, a default quality floor, the saving's 90% interval.

Predict mode uses :class:`AnalyticPredictor` (a labelled analytic stand-in of the predictor contract)
and, for the demo's search step, a model really fitted on the small family and registered; measure
mode measures tiny-sd2 on this CPU.
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.errors import ConfigError
from mlflow_energy.families import get_family
from mlflow_energy.predict import AnalyticPredictor
from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace, search
from mlflow_energy.search.baseline import Z90, parse_baseline, quality_floor

sys.path.insert(0, str(Path(__file__).parent))
from test_search import register_priced  # noqa: E402

CPU = "Intel(R) Xeon(R) CPU @ 2.20GHz"


def _parent(exp: str) -> mlflow.entities.Run:
    client = mlflow.MlflowClient()
    exp_id = client.get_experiment_by_name(exp).experiment_id
    (run,) = client.search_runs([exp_id], f"tags.`{schema.T_KIND}` = '{schema.KIND_SEARCH}'")
    return run


class LevelledPredictor(AnalyticPredictor):
    """The analytic stand-in with the fitted model's two interval levels: a wide default (+-30%, the
    setup-level error both configs share) and a narrow ``known`` level (+-3%, one config's own residual)."""

    def predict(self, model_input, params=None):  # noqa: ANN001, ANN201
        out = super().predict(model_input)
        known = (params or {}).get("interval_level") == "known"
        factor = 1.03 if known else 1.3
        out["energy_total_j_low"] = out["energy_total_j"] / factor
        out["energy_total_j_high"] = out["energy_total_j"] * factor
        out["interval_level"] = "known" if known else "unseen_setup"
        return out


# ------------------------------------------------------------------ 1. the user's size, family, baseline
def test_baseline_is_the_first_family_at_the_users_size_or_what_the_flags_name(tracking_uri: str) -> None:
    ev = PredictEvaluator(AnalyticPredictor(), "H100")
    # sdxl first: the saving is against sdxl's default, even when sd2 (cheaper) wins; the change is said
    space = SearchSpace.from_options({"model": ["sdxl,sd2"], "resolution": ["768"], "steps": ["20:40"]})
    result = search(space, ev, Constraints(), trials=12, seed=0, experiment="fam", plots=False, quality_floor=False)
    base = result.default_config
    assert (base.model, base.height, base.width, base.steps) == ("sdxl", 768, 768, get_family("sdxl").default_steps)
    assert all(result.trials[schema.P_HEIGHT] == 768)
    assert result.best_config.model == "sd2"
    assert any("family sd2 instead of sdxl" in n for n in result.notes)
    params = _parent("fam").data.params
    assert params[schema.baseline_param(schema.P_MODEL)] == "sdxl" and params[schema.baseline_param("height")] == "768"
    # --baseline names it
    assert parse_baseline(["steps=30,guidance_scale=5", "resolution=512"]) == {
        "steps": 30, "guidance_scale": 5.0, "height": 512, "width": 512}
    result = search(SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["10:40"]}), ev,
                    trials=6, seed=0, experiment="named", plots=False, quality_floor=False, baseline={"steps": 30})
    assert result.default_config.steps == 30
    expected = AnalyticPredictor().predict(ev._frame([result.default_config]))["energy_total_j"][0]
    assert result.default_energy_j == pytest.approx(expected)
    # a size the space leaves out is the baseline's for every trial, not the family's default
    result = search(SearchSpace.from_options({"model": ["sd2"], "steps": ["10:40"]}), ev, trials=4, seed=0,
                    experiment="size", plots=False, quality_floor=False, baseline={"height": 512, "width": 512})
    assert set(result.trials[schema.P_HEIGHT]) == {512} and result.best_config.height == 512


def test_the_search_parent_has_short_rounded_display_metrics(tracking_uri: str) -> None:
    """The energy view reads a search at a glance: the best config's J/img and the saving in percent,
    three significant digits, beside the full-precision metrics."""
    from mlflow_energy.tracking.ui import VIEW_METRICS, rounded

    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["10:40"]})
    result = search(space, PredictEvaluator(AnalyticPredictor(), "H100"), trials=6, seed=0, experiment="shown",
                    plots=False, quality_floor=False)
    m = _parent("shown").data.metrics
    assert m[schema.M_VIEW_BEST_ENERGY] == rounded(result.best_metrics[schema.M_ENERGY_TOTAL])
    assert m[schema.M_VIEW_SAVED_PCT] == rounded(100 * m[schema.M_SEARCH_SAVED_FRAC]) > 0
    assert {schema.M_VIEW_BEST_ENERGY, schema.M_VIEW_SAVED_PCT} <= set(VIEW_METRICS)


def test_the_quality_model_leaves_out_superseded_runs_and_the_search_parent_counts_them(tracking_uri: str,
                                                                                       capsys) -> None:
    """A config measured twice under claims counts once in the quality model fitted from runs (the late,
    superseded run's fidelity would bend the line); the search says how many it left out, and logs it."""
    from mlflow_energy.search.quality import fit_quality_model

    client = mlflow.MlflowClient()
    exp = client.create_experiment("measured")
    for steps, psnr, late in ((5, 20.0, False), (10, 24.0, False), (20, 28.0, False), (10, 60.0, True)):
        tags = {schema.T_KIND: schema.KIND_MEASUREMENT, schema.T_CONFIG_HASH: f"h{steps}", schema.T_HARDWARE: "H100"}
        run = client.create_run(exp, tags={**tags, **({schema.T_SUPERSEDED: "true"} if late else {})}).info.run_id
        client.log_param(run, schema.P_MODEL, "sd2")
        client.log_param(run, schema.P_STEPS, str(steps))
        client.log_metric(run, schema.M_QUALITY_PSNR, psnr)
        client.set_terminated(run, "FINISHED")
    qm = fit_quality_model(["measured"])
    assert "left out 1 superseded measurement run(s)" in capsys.readouterr().out
    at10 = qm.predict(None, pd.DataFrame({schema.P_MODEL: ["sd2"], schema.P_STEPS: [10]}))["quality_psnr_db"][0]
    assert at10 == pytest.approx(24.0)
    ev = PredictEvaluator(AnalyticPredictor(), "H100")
    ev.quality_model = qm
    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["10:40"]})
    search(space, ev, Constraints(), trials=4, seed=0, experiment="counted", plots=False, quality_floor=False)
    assert _parent("counted").data.metrics[schema.M_SEARCH_SUPERSEDED] == 1


# ------------------------------------------------------------------ 2. a quality floor by default
def test_predict_mode_has_a_quality_floor_by_default(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["2:50"],
                                      "guidance_scale": ["1,7.5"]})
    ev = PredictEvaluator(AnalyticPredictor(), "H100")
    result = search(space, ev, Constraints(), trials=25, seed=0, experiment="floor")
    base_psnr = result.baseline_metrics[schema.M_QUALITY_PSNR]
    assert result.quality_floor == quality_floor(base_psnr) == 30.0  # sd2 at its 50 steps: near the reference
    assert result.best_metrics[schema.M_QUALITY_PSNR] >= 30.0
    assert result.best_config.steps > 2 and result.best_config.guidance_scale == 7.5
    # a changed guidance has no predicted quality from the stored proxy: it cannot pass the floor
    one_pass = result.trials[result.trials[schema.P_GUIDANCE_SCALE] == 1.0]
    assert not one_pass.empty and not one_pass["feasible"].any()
    parent = _parent("floor")
    assert parent.data.metrics[schema.M_SEARCH_QUALITY_FLOOR] == 30.0
    assert parent.data.params[schema.constraint_param("min_psnr")] == "30.0"
    assert "stored fidelity proxy" in parent.data.params[schema.P_SEARCH_QUALITY_SOURCE]
    assert "quality floor: PSNR >= 30 dB" in result.summary()
    # switched off: the cheapest config (2 steps, one pass) wins, and the output says there is no floor
    off = search(space, PredictEvaluator(AnalyticPredictor(), "H100"), trials=25, seed=0, experiment="off",
                 plots=False, quality_floor=False)
    assert off.energy_saved_frac > result.energy_saved_frac
    assert "no quality floor (switched off)" in off.summary()


# ------------------------------------------------------------------ 3. the saving's interval
def test_predicted_saving_interval_shares_the_models_error(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["20:50"]})
    result = search(space, PredictEvaluator(LevelledPredictor(), "H100"), trials=15, seed=0, experiment="iv",
                    plots=False, quality_floor=False)
    s = result.saving
    ratio = 1 - s.frac
    half = math.log(1 - s.low) - math.log(ratio)
    assert half == pytest.approx(math.hypot(math.log(1.03), math.log(1.03)))  # the known level, not +-30%
    assert s.low < s.frac < s.high and s.beyond_noise
    metrics = _parent("iv").data.metrics
    assert metrics[schema.M_SEARCH_SAVED_FRAC_LOW] == pytest.approx(s.low)
    assert metrics[schema.M_SEARCH_SAVED_FRAC_HIGH] == pytest.approx(s.high)
    assert result.headline().startswith(f"saving {100 * s.frac:.1f}% energy per image (90% interval")
    # families differ: their errors do not cancel, the rows' own widths combine
    two = SearchSpace.from_options({"model": ["sdxl,sd2"], "resolution": ["512"], "steps": ["40"]})
    wide = search(two, PredictEvaluator(LevelledPredictor(), "H100"), trials=6, seed=0, experiment="iv2",
                  plots=False, quality_floor=False).saving
    assert math.log(1 - wide.low) - math.log(1 - wide.frac) == pytest.approx(math.hypot(math.log(1.3), math.log(1.3)))


def test_a_saving_inside_the_noise_is_said_so(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["49"]})
    result = search(space, PredictEvaluator(LevelledPredictor(), "H100"), trials=2, seed=0, experiment="noise",
                    plots=False, quality_floor=False)
    assert result.best_config.steps == 49 and 0 < result.energy_saved_frac < 0.03
    assert result.saving.low < 0 < result.saving.high
    assert result.headline().startswith("no saving beyond noise")


@pytest.mark.slow
def test_measure_mode_defaults_to_this_machine_and_the_baseline_itself_is_no_saving(tracking_uri: str) -> None:
    out = CliRunner().invoke(main, [
        "search", "--mode", "measure", "--model", "tiny-sd2", "--resolution", "32", "--steps", "4",
        "--precision", "fp32", "--repeats", "3", "--warmup", "0", "--reference-steps", "8", "--trials", "2",
        "--experiment", "live", "--no-plots",
    ])
    assert out.exit_code == 0, out.output
    parent = _parent("live")
    assert parent.data.params[schema.P_DEVICE] == "cpu"  # as `measure`, not cuda
    # the only config is the baseline: measured once, no 0.x% saving from noise
    assert out.output.splitlines()[0].startswith("no saving: the baseline (tiny-sd2 at 32x32")
    assert parent.data.metrics[schema.M_SEARCH_SAVED_FRAC] == 0.0
    # the floor follows the baseline's own PSNR against the 8-step reference
    base_psnr = parent.data.metrics[schema.M_SEARCH_BASELINE_PSNR]
    assert parent.data.metrics[schema.M_SEARCH_QUALITY_FLOOR] == quality_floor(base_psnr) < 30.0


def test_measured_interval_comes_from_both_configs_repeats() -> None:
    from mlflow_energy.search.baseline import measured_saving

    s = measured_saving(50.0, 5.0, 100.0, 4.0)
    rel = math.hypot(5.0 / 1.959963984540054 / 50.0, 4.0 / 1.959963984540054 / 100.0)
    assert math.log(1 - s.low) - math.log(0.5) == pytest.approx(Z90 * rel)
    assert math.isnan(measured_saving(50.0, None, 100.0, 4.0).low)  # one repeat: no interval, none invented


# ------------------------------------------------------------------ 6. the Pareto plot marks the baseline
def test_pareto_plot_is_logged_with_the_baseline_marked(tracking_uri: str, tmp_path: Path) -> None:
    from mlflow_energy.search.trial_runs import pareto_plot

    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["5:50"]})
    result = search(space, PredictEvaluator(AnalyticPredictor(), "H100"), trials=10, seed=0, experiment="plot")
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.parent_run_id, "search")}
    assert schema.A_PARETO_PNG in artifacts
    labels = pareto_plot(result.trials, result.pareto, schema.M_QUALITY_PSNR, tmp_path / "p.png",
                         baseline=(result.default_energy_j, result.baseline_metrics[schema.M_QUALITY_PSNR]))
    assert "baseline" in labels and (tmp_path / "p.png").stat().st_size > 0


# ------------------------------------------------------------------ 7. latency, refusals
def test_latency_uses_the_predictors_time_over_an_assumed_power(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["10:50"]})
    ev = PredictEvaluator(AnalyticPredictor(watts=400.0), "H100", avg_power_w=50.0)
    result = search(space, ev, Constraints(max_latency_s=10.0), trials=6, seed=0, experiment="lat", plots=False,
                    quality_floor=False)
    m = result.best_metrics
    assert m[schema.M_TIME_TOTAL] == pytest.approx(m[schema.M_ENERGY_TOTAL] / 400.0)  # the predictor's, not / 50 W
    assert schema.P_SEARCH_AVG_POWER not in _parent("lat").data.params


def test_the_space_stays_inside_what_the_model_has_seen_and_a_refused_trial_is_pruned(tracking_uri: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class Seen(AnalyticPredictor):
        def predict(self, model_input, params=None):  # noqa: ANN001, ANN201
            df = pd.DataFrame(model_input)
            if (df["batch_size"] > 2).any() or (df["steps"] > 40).any():
                raise MlflowException("row 0: outside what the model has seen (batch 1-2, steps 2-40)",
                                      error_code=INVALID_PARAMETER_VALUE)
            return super().predict(model_input)

    space = SearchSpace.from_options({"model": ["sd2"], "resolution": ["512"], "steps": ["30:50"],
                                      "batch_size": ["1,2,4"]})
    result = search(space, PredictEvaluator(Seen(), "H100"), trials=15, seed=0, experiment="seen", plots=False,
                    quality_floor=False, baseline={"steps": 30})
    # a categorical value it refuses leaves the space before any trial; a refused point of a range is pruned
    assert "batch_size=4 left out: outside what the energy model has seen" in result.notes
    assert set(result.trials[schema.P_BATCH_SIZE]) <= {1, 2}
    assert result.n_refused > 0 and result.best_config.steps <= 40
    parent = _parent("seen")
    assert parent.info.status == "FINISHED" and parent.data.metrics[schema.M_SEARCH_N_REFUSED] == result.n_refused
    client = mlflow.MlflowClient()
    failed = client.search_runs([parent.info.experiment_id], "attributes.status = 'FAILED'")
    assert len(failed) == result.n_refused
    assert all("outside what the model has seen" in r.data.tags[schema.T_FAILURE] for r in failed)
    # a baseline it refuses is one line before any trial, naming the way out
    with pytest.raises(ConfigError, match="baseline=.*steps=50.*--baseline"):
        search(space, PredictEvaluator(Seen(), "H100"), trials=2, experiment="seen2", quality_floor=False)


# ------------------------------------------------------------------ 5. the demo's search step
def _demo_search_args(registered: str, experiment: str) -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "MLproject").read_text()
    command = " ".join(text.split("main:", 1)[1].split("measure:", 1)[0].split())
    segment = re.search(r"mlflow-energy search (.*?) &&", command).group(1)
    segment = segment.replace("{registered_model}", registered).replace("{experiment}", experiment)
    return shlex.split(segment)


def _register_small_model(name: str) -> None:
    """The real energy model, fitted on small-sd2 runs priced by the analytic stand-in on this CPU."""
    grid = itertools.product([96, 128, 160, 224], [1, 2, 4, 6, 8], [1, 2, 4], [1.0, 4.0, 7.5])
    df = pd.DataFrame([dict(model="small-sd2", height=r, width=r, steps=s, guidance_scale=g, precision="fp32",
                            batch_size=b) for r, s, b, g in grid])
    register_priced(df, name, hardware=CPU, source=schema.SOURCE_ZEUS_RAPL)


@pytest.mark.slow
def test_the_demos_search_keeps_one_family_at_one_size_under_a_psnr_floor(tracking_uri: str) -> None:
    _register_small_model("demo-energy")
    args = _demo_search_args("demo-energy", "demo")
    assert args[args.index("--model") + 1] == "small-sd2" and args[args.index("--resolution") + 1] == "128"
    for dim in ("--steps", "--scheduler", "--guidance-scale", "--precision", "--batch-size"):
        assert dim in args
    assert not {"--min-psnr", "--no-quality-floor"} & set(args)  # the default floor
    out = CliRunner().invoke(main, ["search", *args, "--trials", "15", "--no-plots"])
    assert out.exit_code == 0, out.output
    headline = out.output.splitlines()[0]
    assert re.match(r"(no )?saving", headline) and "at 128x128" in headline and "PSNR" in headline
    assert "90% interval" in headline or headline.startswith("no saving:")
    parent = _parent("demo")
    assert {schema.M_SEARCH_SAVED_FRAC, schema.M_SEARCH_QUALITY_FLOOR} <= set(parent.data.metrics)
    trials = mlflow.MlflowClient().search_runs([parent.info.experiment_id],
                                               f"tags.`{schema.T_KIND}` = '{schema.KIND_TRIAL}'")
    assert {(r.data.params.get(schema.P_MODEL), r.data.params.get(schema.P_HEIGHT)) for r in trials
            if r.info.status == "FINISHED"} == {("small-sd2", "128")}


@pytest.mark.slow
def test_a_clip_model_adds_a_clip_floor_from_the_baseline(tracking_uri: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_energy.search import MeasureEvaluator, quality

    # no CLIP model can exist here (no torchmetrics, no downloads): a stand-in score of the images
    monkeypatch.setattr(quality, "clip_score", lambda images, prompt, model: float(images.mean()) * 100)
    space = SearchSpace.from_options({"model": ["tiny-sd2"], "resolution": ["32"], "steps": ["2:4"]})
    ev = MeasureEvaluator(repeats=2, warmup=0, reference_steps=8, clip_model=str(tmp_path))
    result = search(space, ev, trials=3, seed=0, experiment="clip", plots=False)
    base_clip = result.baseline_metrics[schema.M_QUALITY_CLIP]
    params = _parent("clip").data.params
    assert float(params[schema.constraint_param("min_clip_score")]) == pytest.approx(round(base_clip - 1.0, 2))
    assert schema.constraint_param("min_psnr") in params


def test_the_stored_fidelity_proxy_covers_every_measurable_family() -> None:
    from mlflow_energy.families import family_names
    from mlflow_energy.search.fidelity import STEPS, stored_quality_model, stored_rows

    bases = {get_family(n).base for n in family_names(measurable_only=True) if n.startswith("tiny-")}
    assert bases == {r["model"] for r in stored_rows()}
    qm = stored_quality_model()
    frame = pd.DataFrame({"model": sorted(bases) * 2, "steps": [STEPS[0]] * len(bases) + [STEPS[-1]] * len(bases)})
    psnr = qm.predict(None, frame)["quality_psnr_db"].to_numpy()
    assert (psnr[len(bases):] > psnr[:len(bases)] + 5).all()  # 32 steps converge far closer than one or two
