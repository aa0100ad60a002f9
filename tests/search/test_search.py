"""Search: constraints, infeasibility, run nesting, shared storage, measure mode, CLI.

Predict-mode tests use :class:`AnalyticPredictor` (a labelled analytic stand-in, ``E = a * FLOPs^b``,
of the predictor contract) and, in one test, a model really fitted, registered and loaded by URI.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.cli import main
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.predict import AnalyticPredictor
from mlflow_energy.search import (
    Constraints,
    MeasureEvaluator,
    NoFeasibleConfigError,
    PredictEvaluator,
    SearchSpace,
    search,
)
from mlflow_energy.search.quality import QualityModel

SMALL = {"model": ["sd2"], "steps": ["1:12"], "resolution": ["256,384"], "batch_size": ["1,4"], "precision": ["fp16"]}


def _quality_model() -> QualityModel:
    """PSNR = 10 + 8 ln(steps) for sd2: >= 28 dB needs steps >= 10 (9.5 rounds up)."""
    steps = [2, 4, 8, 16, 32]
    return QualityModel.fit(pd.DataFrame({
        "model": ["sd2"] * 5, "steps": steps,
        "quality/psnr_db": [10 + 8 * math.log(s) for s in steps], "quality/ssim": [0.5 + 0.1 * math.log(s) for s in steps],
    }))


def _runs(exp_name: str, kind: str) -> list:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(exp_name)
    return client.search_runs([exp.experiment_id], f"tags.`{schema.T_KIND}` = '{kind}'", max_results=1000)


def test_feasible_optimum_matches_brute_force(tracking_uri: str, tmp_path: Path) -> None:
    space = SearchSpace.from_options(SMALL)
    evaluator = PredictEvaluator(AnalyticPredictor(), "H100", quality_model=_quality_model())
    constraints = Constraints(min_steps=6, max_steps=11, min_psnr=28.0, max_latency_s=1.0)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search(space, evaluator, constraints, trials=20, seed=0, storage=storage, study_name="s",
                        experiment="search", plots=False)
    optuna_warnings = [w for w in caught if issubclass(w.category, (FutureWarning, optuna.exceptions.ExperimentalWarning))
                       or "/optuna/" in w.filename.replace("\\", "/")]
    assert not optuna_warnings, [str(w.message) for w in optuna_warnings]

    # brute force over the whole grid (48 configs)
    from mlflow_energy.search.study import _config

    configs = [_config(v, evaluator) for v in space.grid()]
    assert len(configs) == space.size() == 48
    scored = evaluator.predict(configs)
    steps = pd.Series([c.steps for c in configs])
    ok = ((steps >= 6) & (steps <= 11) & (scored[schema.M_QUALITY_PSNR] >= 28.0)
          & (scored[schema.M_TIME_TOTAL] <= 1.0))
    best = scored[ok][schema.M_ENERGY_TOTAL].idxmin()
    assert result.best_metrics[schema.M_ENERGY_TOTAL] == pytest.approx(scored[schema.M_ENERGY_TOTAL][best])
    assert (result.best_config.steps, result.best_config.height, result.best_config.batch_size) == (10, 256, 4)
    # the unconstrained optimum (1 step) is cheaper: the constraints did bind
    assert scored[schema.M_ENERGY_TOTAL].min() < result.best_metrics[schema.M_ENERGY_TOTAL]
    assert result.energy_saved_j > 0 and 0 < result.energy_saved_frac < 1
    assert result.default_config.steps == 50  # sd2's default config, priced by the same predictor

    # Optuna sees the same constraints (Trial.set_constraint) and agrees on the best trial
    study = optuna.load_study(study_name="s", storage=storage)
    assert set(study.best_trial.constraints) == {"min_steps", "max_steps", "min_psnr", "max_latency_s"}
    assert study.best_value == pytest.approx(result.best_metrics[schema.M_ENERGY_TOTAL])
    infeasible = [t for t in study.trials if any(v > 0 for v in t.constraints.values())]
    assert infeasible and all(not row.feasible for row in result.trials.itertuples() if row.trial in
                              {t.number for t in infeasible})


def test_trial_runs_are_children_in_the_same_experiment(tracking_uri: str) -> None:
    space = SearchSpace.from_options(SMALL)
    evaluator = PredictEvaluator(AnalyticPredictor(), "H100", quality_model=_quality_model())
    result = search(space, evaluator, Constraints(min_steps=4), trials=12, seed=1, experiment="nested",
                    multi_objective=True, quality_floor=False)
    exp_id = mlflow.MlflowClient().get_experiment_by_name("nested").experiment_id
    (parent,) = _runs("nested", schema.KIND_SEARCH)
    children = _runs("nested", schema.KIND_TRIAL)
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"
    assert len(children) == 12
    assert parent.info.run_name == "search-" + "+".join(SMALL["model"]) + "-energy-psnr"
    assert all(c.info.run_name.startswith(f"t{c.data.tags[schema.T_TRIAL_NUMBER]}-") for c in children)
    assert parent.data.metrics[schema.M_SEARCH_ENERGY_MIN] <= parent.data.metrics[schema.M_SEARCH_ENERGY_MEDIAN]
    assert {c.info.experiment_id for c in children} == {exp_id}
    assert {c.data.tags[schema.T_PARENT_RUN_ID] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags[schema.T_ENERGY_SOURCE] == schema.SOURCE_PREDICTOR for c in children)
    feasible = [c for c in children if c.data.metrics[schema.M_SEARCH_FEASIBLE] == 1.0]
    assert len(feasible) == result.n_feasible
    assert all(int(c.data.params[schema.P_STEPS]) >= 4 for c in feasible)
    # parent: best config, saving, Pareto front (CSV and plot), Optuna's plots
    assert parent.data.params[schema.best_param(schema.P_STEPS)] == str(result.best_config.steps)
    assert parent.data.metrics[schema.best_metric(schema.M_ENERGY_TOTAL)] == pytest.approx(result.best_metrics[schema.M_ENERGY_TOTAL])
    assert parent.data.metrics[schema.M_SEARCH_SAVED_J] == pytest.approx(result.energy_saved_j)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, "search")}
    assert {schema.A_PARETO_CSV, schema.A_PARETO_PNG, schema.A_SEARCH_TRIALS_CSV} <= artifacts
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id, schema.A_OPTUNA_PLOTS_DIR)}
    assert f"{schema.A_OPTUNA_PLOTS_DIR}/optimization_history.png" in plots
    # the front is feasible and non-dominated: energy up, quality up
    front = result.pareto
    assert len(front) >= 2 and front["feasible"].all()
    assert front[schema.M_ENERGY_TOTAL].is_monotonic_increasing
    assert front[schema.M_QUALITY_PSNR].is_monotonic_increasing


def test_all_infeasible_names_the_least_violating_config(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "steps": ["1:10"], "resolution": ["256"]})
    evaluator = PredictEvaluator(AnalyticPredictor(), "H100")
    with pytest.raises(NoFeasibleConfigError) as info:
        search(space, evaluator, Constraints(min_steps=25), trials=8, seed=0, experiment="none", quality_floor=False)
    message = str(info.value)
    assert "no feasible config in 8 trials" in message
    assert "min_steps: steps=" in message and "< 25" in message
    (parent,) = _runs("none", schema.KIND_SEARCH)
    assert parent.info.status == "FAILED"
    assert "min_steps" in parent.data.tags[schema.T_FAILURE]
    # the least-violating config is the one with the most steps the sampler tried
    children = _runs("none", schema.KIND_TRIAL)
    most = max(int(c.data.params[schema.P_STEPS]) for c in children)
    assert f"steps={most} " in message


def test_predict_mode_refuses_what_it_cannot_score(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "steps": ["10:20"]})
    # no quality model: the stored fidelity proxy prices steps and scheduler (the param says so)
    proxied = search(space, PredictEvaluator(AnalyticPredictor(), "H100"), Constraints(min_psnr=20), trials=2)
    source = mlflow.MlflowClient().get_run(proxied.parent_run_id).data.params[schema.P_SEARCH_QUALITY_SOURCE]
    assert source.startswith("stored fidelity proxy")
    with pytest.raises(ConfigError, match="family the quality model has data for"):
        search(SearchSpace.from_options({"model": ["sdxl"]}), PredictEvaluator(
            AnalyticPredictor(), "H100", quality_model=_quality_model()), Constraints(min_psnr=20), trials=2)

    class NoLatency(AnalyticPredictor):
        def predict(self, model_input, params=None):  # noqa: ANN001, ANN201
            return super().predict(model_input).drop(columns="time_total_s")

    with pytest.raises(ConfigError, match="max_latency_s.*avg-power-w"):
        search(space, PredictEvaluator(NoLatency(), "H100"), Constraints(max_latency_s=1), trials=2)
    # with an assumed average power the latency is energy / power
    ev = PredictEvaluator(NoLatency(), "H100", avg_power_w=200.0)
    result = search(space, ev, Constraints(max_latency_s=10), trials=3, plots=False, quality_floor=False)
    m = result.best_metrics
    assert m[schema.M_TIME_TOTAL] == pytest.approx(m[schema.M_ENERGY_TOTAL] / 200.0)
    assert mlflow.MlflowClient().get_run(result.parent_run_id).data.params[schema.P_SEARCH_AVG_POWER] == "200.0"


@pytest.mark.parametrize(
    ("dims", "field"),
    [
        ({"model": ["sd9"]}, "model"),
        ({"model": ["sd2"], "steps": ["10:5"]}, "steps"),
        ({"model": ["sd2"], "precision": ["fp8"]}, "precision"),
        ({"model": ["sd2"], "height": ["500"]}, "height"),
        ({"model": ["sd2"], "resolution": ["512:1000:128"]}, "resolution"),
        ({"model": ["sd2"], "scheduler": ["Nope"]}, "scheduler"),
        ({"steps": ["1:4"]}, "model"),
    ],
)
def test_bad_space_is_one_config_error(tracking_uri: str, dims: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        search(SearchSpace.from_options(dims), PredictEvaluator(AnalyticPredictor(), "H100"), trials=1, quality_floor=False)
    assert info.value.field == field


def test_two_processes_share_one_sqlite_study(tracking_uri: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/shared.db"
    script = textwrap.dedent(f"""
        import sys
        from mlflow_energy.predict import AnalyticPredictor
        from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace, search
        space = SearchSpace.from_options({SMALL!r})
        search(space, PredictEvaluator(AnalyticPredictor(), "H100"), Constraints(min_steps=3), trials=int(sys.argv[1]),
               seed=int(sys.argv[2]), storage={storage!r}, study_name="shared", experiment="workers", plots=False,
               quality_floor=False)
    """)
    mlflow.MlflowClient().create_experiment("workers")
    root = str(Path(__file__).resolve().parents[2])  # the source tree, whatever the install mode
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", script, n, seed], stderr=subprocess.PIPE, text=True, env=env)
             for n, seed in (("5", "0"), ("7", "1"))]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 12
    assert len(_runs("workers", schema.KIND_TRIAL)) == 12
    assert len(_runs("workers", schema.KIND_SEARCH)) == 2


def test_measure_mode_on_a_tiny_family(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["tiny-sd2"], "steps": ["1:4"], "resolution": ["32"]})
    evaluator = MeasureEvaluator(device="cpu", repeats=1, warmup=0, reference_steps=8)
    result = search(space, evaluator, Constraints(min_psnr=15.0), trials=5, seed=0, experiment="live", plots=False)
    trials = _runs("live", schema.KIND_TRIAL)
    assert len(trials) == 5
    for run in trials:  # measurement runs of the run schema, completed as trials of the search
        assert run.data.tags[schema.T_PARENT_RUN_ID] == result.parent_run_id
        assert {schema.M_ENERGY_TOTAL, schema.M_FLOPS_TOTAL} <= set(run.data.metrics)
        assert 0 < run.data.metrics[schema.M_QUALITY_SSIM] <= 1
        assert run.data.metrics[schema.constraint_metric("min_psnr")] <= 0 or run.data.metrics[schema.M_SEARCH_FEASIBLE] == 0
    # more steps, closer to the reference
    by_steps = result.trials.groupby(schema.P_STEPS)[schema.M_QUALITY_PSNR].first().sort_index()
    assert by_steps.is_monotonic_increasing and len(by_steps) >= 2
    assert result.best_metrics[schema.M_QUALITY_PSNR] >= 15.0


def register_priced(df: pd.DataFrame, name: str, *, hardware: str, source: str) -> None:
    """Fit the real energy model on the configs of ``df`` priced by the analytic stand-in (as runs of
    ``hardware`` measured by ``source``), register it as NAME@champion."""
    from mlflow_energy.fit import fit_energy_model, normalise_runs
    from mlflow_energy.predict import log_and_register

    priced = AnalyticPredictor().predict(df.assign(hardware="H100"))
    raw = df.assign(**{schema.T_HARDWARE: hardware, schema.T_ENERGY_SOURCE: source})
    for phase in schema.PHASES:
        raw[schema.energy_key(phase)] = priced[f"energy_{phase}_j"]
    result = fit_energy_model(normalise_runs(raw), n_boot=0, cv=False, n_estimators=20)
    mlflow.set_experiment("fit")
    with mlflow.start_run():
        log_and_register(result, name)


def _register_fitted_model(name: str) -> None:
    """The real energy model on sd2/sdxl runs priced by the analytic stand-in on an H100."""
    grid = itertools.product(["sd2", "sdxl"], [256, 512], [2, 5, 10, 20, 40], ["fp16", "fp32"])
    df = pd.DataFrame([dict(model=m, height=r, width=r, steps=s, guidance_scale=7.5, precision=p, batch_size=1)
                       for m, r, s, p in grid])
    register_priced(df, name, hardware="NVIDIA H100 80GB HBM3", source=schema.SOURCE_ZEUS_NVML)


def test_cli_with_a_registered_model(tracking_uri: str, tmp_path: Path) -> None:
    _register_fitted_model("energy")
    spec = tmp_path / "space.yaml"
    spec.write_text("space:\n  model: [sd2, sdxl]\n  steps: '5:40'\n  resolution: 512\n"
                    "constraints:\n  min_steps: 12\nsearch:\n  trials: 15\n  hardware: H100\n  baseline: steps=40\n")
    runner = CliRunner()
    ok = runner.invoke(main, ["search", "--spec", str(spec), "--model-uri", "models:/energy@champion",
                              "--precision", "fp16", "--experiment", "cli", "--no-plots"])
    assert ok.exit_code == 0, ok.output
    assert "best config" in ok.output and "predicted" in ok.output.splitlines()[0]
    assert ok.output.startswith(("saving", "no saving"))
    assert "J per image (predicted)" in ok.output and "measured" not in ok.output
    (parent,) = _runs("cli", schema.KIND_SEARCH)
    assert int(parent.data.params[schema.best_param(schema.P_STEPS)]) >= 12
    assert parent.data.params[schema.P_SEARCH_MODEL_URI] == "models:/energy@champion"

    bad = runner.invoke(main, ["search", "--spec", str(spec), "--model-uri", "models:/energy@champion",
                               "--max-steps", "8", "--experiment", "cli", "--trials", "4"])
    assert bad.exit_code == 2 and "max_steps=8" in bad.output  # min_steps 12 > max_steps 8: input error
    infeasible = runner.invoke(main, ["search", "--spec", str(spec), "--model-uri", "models:/energy@champion",
                                      "--steps", "5:10", "--experiment", "cli", "--trials", "4"])
    assert infeasible.exit_code == 1
    lines = infeasible.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no feasible config") and "min_steps" in lines[0]
    assert "Traceback" not in infeasible.output

    # No --hardware: a model fitted on one GPU predicts for that GPU.
    no_hw = tmp_path / "space-no-hardware.yaml"
    no_hw.write_text(spec.read_text().replace("  hardware: H100\n", ""))
    implied = runner.invoke(main, ["search", "--spec", str(no_hw), "--model-uri", "models:/energy@champion",
                                   "--precision", "fp16", "--experiment", "implied", "--no-plots"])
    assert implied.exit_code == 0, implied.output
    (parent,) = _runs("implied", schema.KIND_SEARCH)
    from mlflow_energy.measure.hardware import canonical_hardware

    assert parent.data.params[schema.P_SEARCH_HARDWARE] == canonical_hardware("NVIDIA H100 80GB HBM3")


# ------------------------------------------------------------------ honest saving
def test_default_runs_on_the_search_device_and_precision_and_a_loss_is_said_plainly(tracking_uri: str) -> None:
    from mlflow_energy.search.study import default_config

    cpu = PredictEvaluator(AnalyticPredictor(), "Intel(R) Xeon(R) CPU @ 2.20GHz")
    gpu = PredictEvaluator(AnalyticPredictor(), "H100")
    assert cpu.device == "cpu" and gpu.device == "cuda"
    fp32_only = SearchSpace.from_options({"model": ["sd2"], "steps": ["10:20"], "precision": ["fp32"]})
    assert default_config("sd2", fp32_only, cpu).precision == "fp32"
    # a GPU search whose space allows only bf16 prices the default in bf16, never in fp16
    bf16_only = SearchSpace.from_options({"model": ["sd2"], "steps": ["10:20"], "precision": ["bf16"]})
    assert default_config("sd2", bf16_only, gpu, precision="bf16").precision == "bf16"
    assert default_config("sd2", SearchSpace.from_options({"model": ["sd2"]}), gpu).precision == "fp16"

    # steps above the default (50) only: the best config costs more than the default
    space = SearchSpace.from_options({"model": ["sd2"], "steps": ["60:70"], "resolution": ["768"]})
    result = search(space, gpu, Constraints(), trials=5, seed=0, experiment="loss", plots=False, quality_floor=False)
    assert result.energy_saved_j < 0
    text = result.summary()
    assert text.startswith("no saving: the best config found") and "keep the baseline" in text
    parent = _runs("loss", schema.KIND_SEARCH)[0]
    best = {k for k in parent.data.params if k.startswith("best_")}
    assert best == {schema.best_param(k) for k in ("model", "steps", "height", "width")}


def test_cfg_passes_is_a_dimension_and_a_pass_count_the_guidance_cannot_run_prunes_only_its_trial(
        tracking_uri: str) -> None:
    # SD 2 decides its passes by the guidance scale (1 pass at scale 1, 2 above): of the four
    # combinations two are runnable; the other two are pruned with the reason, the search goes on.
    space = SearchSpace.from_options({"model": ["sd2"], "steps": ["20"], "resolution": ["512"],
                                      "guidance_scale": ["1.0,7.5"], "cfg_passes": ["1,2"]})
    assert space.size() == 4
    evaluator = PredictEvaluator(AnalyticPredictor(), "H100")
    result = search(space, evaluator, Constraints(), trials=12, seed=0, experiment="passes", quality_floor=False,
                    baseline={"guidance_scale": 7.5})
    assert (result.best_config.guidance_scale, result.best_config.passes) == (1.0, 1)
    assert result.best_config.cfg_passes == 1  # the searched value, carried to the best config
    trials = _runs("passes", schema.KIND_TRIAL)
    refused = [t for t in trials if "cfg_passes" in t.data.tags.get(schema.T_FAILURE, "")]
    assert refused, [t.data.tags for t in trials]
    ran = {(float(t.data.params[schema.P_GUIDANCE_SCALE]), int(t.data.params[schema.P_CFG_PASSES]))
           for t in trials if schema.M_ENERGY_TOTAL in t.data.metrics}
    assert ran <= {(1.0, 1), (7.5, 2)} and ran

    # FLUX.1-dev's true CFG runs 1 or 2 passes at one scale: the second pass is priced, and costs
    one = evaluator.predict([InferenceConfig(model="flux.1-dev", cfg_passes=p, guidance_scale=3.5).validate()
                             for p in (1, 2)])[schema.M_ENERGY_DENOISE]
    assert one.iloc[1] == pytest.approx(2 * one.iloc[0], rel=0.05)


@pytest.mark.parametrize("values", [["3"], ["1:2"], ["0,1"]])
def test_cfg_passes_values_are_one_or_two(values: list[str]) -> None:
    with pytest.raises(ConfigError, match="cfg_passes"):
        SearchSpace.from_options({"model": ["sd2"], "cfg_passes": values})


def test_a_pass_count_no_family_and_scale_of_the_space_can_run_is_one_line(tracking_uri: str) -> None:
    space = SearchSpace.from_options({"model": ["sd2"], "guidance_scale": ["1.0"], "cfg_passes": ["2"]})
    with pytest.raises(ConfigError, match=r"cfg_passes=2 is not allowed: expected 1 for sd2 at guidance_scale 1"):
        search(space, PredictEvaluator(AnalyticPredictor(), "H100"), Constraints(), trials=2, experiment="x",
               quality_floor=False)
