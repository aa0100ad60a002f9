"""The energy-law fit on synthetic runs with a known law, read back from a real MLflow store."""

from __future__ import annotations

import math
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import (
    check_sources,
    cross_validate,
    drop_noisy,
    family_laws,
    fit_energy_model,
    fit_line,
    normalise_runs,
    runs_frame,
)

FAMILIES = ("tiny-sd2", "tiny-sdxl", "tiny-sd1.5")
HARDWARE = ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB")
# The true law is on one call (what the GPU runs at once: the whole batch): energy per call =
# scale x (FLOPs per call)^b, and a phase runs FLOPs per image / FLOPs per call calls per image.
TRUE_B = {"text_encode": 0.7, "denoise": 0.9, "decode": 0.8}
HW_SCALE = {"NVIDIA H100 80GB HBM3": 1.0, "NVIDIA A100-SXM4-40GB": 1.8}
FP32_FACTOR = 1.6  # fp32 costs more per FLOP: the law cannot see it, the corrector can
FP32_STEPS = (2, 8)  # runs at these step counts are fp32


HW_WATTS = {"NVIDIA H100 80GB HBM3": 400.0, "NVIDIA A100-SXM4-40GB": 250.0}  # average power while busy


def synthetic_runs(*, families=FAMILIES, hardware=HARDWARE, sizes=(32, 48, 64), steps=(1, 2, 4, 8),
                   batches=(1, 4), noise=0.03, seed=0, source="zeus:nvml", phases=True, times=True,
                   idle_w: float | None = None) -> pd.DataFrame:
    """Runs as ``tracking.load_runs`` returns them (schema names), energy from a known law; time per
    image = energy / the GPU's average power (:data:`HW_WATTS`, 200 W for others), with its own noise."""
    from mlflow_energy.flops import flops_frame

    rng = np.random.default_rng(seed)
    time_rng = np.random.default_rng(seed + 1000)  # its own stream: the energies are those of runs without times
    rows = []
    for fam in families:
        for hw in hardware:
            for size in sizes:
                for st in steps:
                    for bs in batches:
                        prec = "fp32" if st in FP32_STEPS else "fp16"
                        rows.append({"model": fam, "height": size, "width": size, "steps": st, "batch_size": bs,
                                     "guidance_scale": 7.5, "precision": prec, "hardware": hw})
    df = pd.DataFrame(rows)
    fl = flops_frame(df[["model", "height", "width", "steps", "guidance_scale", "batch_size"]])
    out = []
    for i, r in df.iterrows():
        fam_scale = 1.0 + 0.2 * FAMILIES.index(r["model"])
        energies = {}
        prec = FP32_FACTOR if r["precision"] == "fp32" else 1.0
        for phase, b in TRUE_B.items():
            f = fl[f"flops_{phase}"].iloc[i]
            unit = fl["flops_denoise_per_step" if phase == "denoise" else f"flops_{phase}"].iloc[i]
            per_call = unit * r["batch_size"]
            energies[phase] = (f / per_call * HW_SCALE.get(r["hardware"], 1.0) * fam_scale * 1e-9 * per_call**b * prec
                               * math.exp(rng.normal(0, noise)))
        row = {
            "run_id": f"run{i:04d}", schema.P_MODEL: r["model"], schema.P_HEIGHT: r["height"],
            schema.P_WIDTH: r["width"], schema.P_STEPS: r["steps"], schema.P_GUIDANCE_SCALE: r["guidance_scale"],
            schema.P_PRECISION: r["precision"], schema.P_BATCH_SIZE: r["batch_size"],
            schema.M_ENERGY_TOTAL: sum(energies.values()),
            "hardware": r["hardware"], "energy_source": source,
            "config_hash": f"{r['model']}-{r['height']}-{r['steps']}-{r['batch_size']}",
        }
        if phases:
            row.update({schema.energy_key(p): e for p, e in energies.items()})
        if times:
            row[schema.M_TIME_TOTAL] = sum(energies.values()) / HW_WATTS.get(r["hardware"], 200.0) * math.exp(
                time_rng.normal(0, noise))
        if idle_w is not None:
            row[schema.M_IDLE_POWER] = idle_w
        out.append(row)
    return pd.DataFrame(out)


def log_runs(frame: pd.DataFrame, experiment: str) -> list[str]:
    """Log ``synthetic_runs`` rows as FINISHED measurement runs (params, metrics, tags per schema)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    ids = []
    now = int(time.time() * 1000)
    for _, r in frame.iterrows():
        run = client.create_run(exp_id)
        params = [Param(k, str(r[k])) for k in (schema.P_MODEL, schema.P_HEIGHT, schema.P_WIDTH, schema.P_STEPS,
                                                schema.P_GUIDANCE_SCALE, schema.P_PRECISION, schema.P_BATCH_SIZE)]
        metrics = [Metric(k, float(r[k]), now, 0) for k in (schema.M_ENERGY_TOTAL, *map(schema.energy_key, TRUE_B))
                   if k in r and pd.notna(r[k])]
        tags = [RunTag(schema.T_KIND, schema.KIND_MEASUREMENT), RunTag(schema.T_HARDWARE, r["hardware"]),
                RunTag(schema.T_ENERGY_SOURCE, r["energy_source"]), RunTag(schema.T_CONFIG_HASH, r["config_hash"])]
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    return ids


@pytest.fixture(scope="module")
def fitted():
    frame = normalise_runs(synthetic_runs())
    return fit_energy_model(frame, n_boot=200, max_folds=12)


def test_fit_line_recovers_a_known_slope_with_a_covering_interval():
    rng = np.random.default_rng(1)
    x = np.log(np.geomspace(1e10, 1e13, 30))
    y = math.log(2e-10) + 0.85 * x + rng.normal(0, 0.05, len(x))
    law = fit_line(x, y, n_boot=200, rng=rng)
    assert abs(law.b - 0.85) < 0.03
    assert law.b_low < 0.85 < law.b_high
    assert law.b_high - law.b_low < 0.1
    assert law.r2 > 0.99 and law.mape < 0.1


def test_group_laws_recover_the_true_slopes(fitted):
    laws = fitted.laws
    for phase in ("text_encode", "denoise", "decode"):
        b = TRUE_B[phase]
        groups = laws[(laws["level"] == "family_hardware") & (laws["phase"] == phase)]
        assert len(groups) == len(FAMILIES) * len(HARDWARE)
        assert groups["b"].notna().all()
        # precision is noise to the law: the slope stays close, the interval covers it
        assert (groups["b"] - b).abs().max() < 0.1, groups[["group", "b"]]
        assert ((groups["b_low"] < b) & (b < groups["b_high"])).mean() >= 0.8
        pooled = laws[(laws["level"] == "hardware_family_offset") & (laws["phase"] == phase)]
        assert pooled["note"].str.contains("within_family").all()
        assert (pooled["b"] - b).abs().max() < 0.05
    assert set(fitted.model.phases) == {"text_encode", "denoise", "decode", "total"}


def test_cross_validation_reports_every_scheme_and_the_law_learns_the_precision_effect(fitted):
    s = fitted.cv_summary.set_index(["scheme", "phase"])
    for scheme in ("loco", "lofo", "loho"):
        row = s.loc[(scheme, "total")]
        assert row["n"] > 0
        assert row["spearman_corrected"] > (0.7 if scheme == "loho" else 0.9)
    # fp32 costs 1.6x per FLOP, which FLOPs cannot show: with both precisions in the runs, the law
    # carries an offset per precision class (fp32 the reference), measured within family and GPU
    offsets = fitted.model.precision_offsets
    assert offsets["fp32"] == 0.0 and offsets["half"] == pytest.approx(-math.log(FP32_FACTOR), abs=0.05)
    loco = s.loc[("loco", "total")]
    assert loco["mape_law"] < 0.08, loco  # the noise is 3%; without the offset the law is off by ~25% on fp32
    assert all(v > 0 for v in fitted.model.interval.values())


def test_one_precision_class_has_no_offset_and_predictions_carry_the_offset():
    from mlflow_energy.fit.model import precision_offsets
    from mlflow_energy.predict import predict_frame

    one = fit_energy_model(normalise_runs(synthetic_runs(steps=(1, 4), families=FAMILIES[:2])), n_boot=0,
                           max_folds=4)
    assert one.model.precision_offsets == {} and precision_offsets(one.frame) == {}
    both = fit_energy_model(normalise_runs(synthetic_runs(families=FAMILIES[:2])), n_boot=0, max_folds=4)
    rows = pd.DataFrame([{"model": "tiny-sd2", "height": 48, "width": 48, "steps": 4, "guidance_scale": 7.5,
                          "precision": p, "batch_size": 1, "hardware": HARDWARE[0], "setup": ""}
                         for p in ("fp32", "fp16", "bf16")])
    e = predict_frame(both.model, rows)["energy_total_j"].to_numpy()
    assert e[0] / e[1] == pytest.approx(FP32_FACTOR, rel=0.08) and e[1] == pytest.approx(e[2])


def test_groups_with_fewer_than_three_runs_are_reported_not_fitted():
    frame = synthetic_runs(families=("tiny-sd2",), hardware=HARDWARE[:1], sizes=(32, 64), steps=(1, 4),
                           batches=(1,))
    small = synthetic_runs(families=("tiny-sdxl",), hardware=HARDWARE[:1], sizes=(32, 64), steps=(2,), batches=(1,),
                           seed=3)
    small["run_id"] = small["run_id"] + "b"
    result = fit_energy_model(normalise_runs(pd.concat([frame, small], ignore_index=True)), n_boot=50, max_folds=5)
    row = result.laws[(result.laws["group"].str.startswith("tiny-sdxl|")) & (result.laws["phase"] == "total")
                      & (result.laws["level"] == "family_hardware")].iloc[0]
    assert row["n"] == 2 and math.isnan(row["b"]) and "fewer than 3" in row["note"]


def test_total_only_runs_fit_and_leave_phase_models_out():
    frame = normalise_runs(synthetic_runs(phases=False, families=FAMILIES[:2], sizes=(32, 64), steps=(1, 4)))
    result = fit_energy_model(frame, n_boot=50, max_folds=6)
    assert list(result.model.phases) == ["total"]
    assert set(result.cv_summary["phase"]) == {"total"}
    from mlflow_energy.predict import predict_frame

    out = predict_frame(result.model, pd.DataFrame([{"model": "tiny-sd2", "height": 48, "width": 48, "steps": 2,
                                                     "guidance_scale": 7.5, "precision": "fp16", "batch_size": 1,
                                                     "hardware": "H100"}]))
    phases = out[["energy_text_encode_j", "energy_denoise_j", "energy_decode_j"]].iloc[0]
    assert phases.notna().all() and phases.sum() == pytest.approx(out["energy_total_j"][0])
    assert phases["energy_denoise_j"] > phases["energy_text_encode_j"]  # split by FLOP share


def test_mixed_energy_sources_are_refused_unless_allowed():
    a = synthetic_runs(families=FAMILIES[:1], hardware=HARDWARE[:1], sizes=(32,), steps=(1, 2))
    b = a.assign(energy_source="estimate:cpu-tdp", run_id=a["run_id"] + "e")
    frame = normalise_runs(pd.concat([a, b], ignore_index=True))
    with pytest.raises(ConfigError, match="--allow-mixed-sources"):
        check_sources(frame)
    assert check_sources(frame, allow_mixed=True) == ["estimate:cpu-tdp", "zeus:nvml"]
    nvml_rapl = normalise_runs(pd.concat([a, a.assign(energy_source="zeus:rapl")], ignore_index=True))
    assert len(check_sources(nvml_rapl)) == 2  # both Zeus counters: one category


def test_leave_one_family_out_predicts_an_unseen_family_from_the_cross_family_law():
    frame = normalise_runs(synthetic_runs(families=FAMILIES, hardware=HARDWARE[:1], noise=0.01))
    from mlflow_energy.fit import compute_flops

    pred, summary = cross_validate(compute_flops(frame), schemes=("lofo",), max_folds=10)
    assert set(pred["model"]) == set(FAMILIES)
    row = summary.set_index("phase").loc["total"]
    assert row["spearman_corrected"] > 0.9
    assert row["mape_corrected"] < 0.5


def test_fit_command_end_to_end(tracking_uri):
    frame = synthetic_runs(families=FAMILIES[:2], sizes=(32, 64), steps=(1, 4), batches=(1, 4))
    ids = log_runs(frame, "synthetic")
    read = runs_frame("synthetic")
    assert len(read) == len(ids) and set(read["hardware"]) == {"H100 SXM5 80GB", "A100 SXM4 40GB/80GB"}
    result = CliRunner().invoke(main_cli(), ["fit", "--experiment", "synthetic", "--registered-model", "energy",
                                             "--bootstrap", "50", "--max-folds", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "loco" in result.output and "models:/energy@champion" in result.output
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("energy", "champion")
    run = client.get_run(mv.run_id)
    assert run.data.tags[schema.T_KIND] == schema.KIND_FIT
    assert run.data.metrics[schema.cv_key("lofo", "total", "mape_corrected")] >= 0
    assert run.data.metrics[schema.fit_key("overall", "denoise", "b")] == pytest.approx(TRUE_B["denoise"], abs=0.1)
    # the form of each phase's law, and the comparison grouped CV chose it by
    assert {run.data.params[schema.fit_law_param(p)] for p in ("text_encode", "denoise", "decode", "total")} <= {
        "power", "saturating"}
    forms = pd.read_csv(client.download_artifacts(mv.run_id, schema.A_FIT_LAW_FORMS_CSV))
    assert set(forms["phase"]) == {"text_encode", "denoise", "decode", "total"}
    assert "law per phase" in mv.description
    arts = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {"plots/energy_vs_flops_total.png", "plots/family_laws_total.png", "plots/predicted_vs_measured.png",
            "plots/residuals.png"} <= arts
    groups = client.download_artifacts(mv.run_id, schema.A_FIT_GROUPS_CSV)
    assert len(pd.read_csv(groups)) > 0
    source_ids = open(client.download_artifacts(mv.run_id, schema.A_FIT_SOURCE_RUNS)).read().split()
    assert sorted(source_ids) == sorted(ids)
    assert len(run.inputs.dataset_inputs) == 1
    # a second fit moves the alias to the new version
    again = CliRunner().invoke(main_cli(), ["fit", "--experiment", "synthetic", "--registered-model", "energy",
                                            "--bootstrap", "0", "--max-folds", "3", "--no-plots"])
    assert again.exit_code == 0, again.output
    assert int(client.get_model_version_by_alias("energy", "champion").version) == int(mv.version) + 1


def test_fit_command_refuses_an_unknown_law_form(tracking_uri):
    result = CliRunner().invoke(main_cli(), ["fit", "--experiment", "synthetic", "--registered-model", "energy",
                                             "--law", "cubic"])
    assert result.exit_code == 2
    assert "'cubic' is not one of 'auto', 'power', 'saturating'" in result.output


def test_fit_command_refuses_mixed_sources_with_one_line(tracking_uri):
    a = synthetic_runs(families=FAMILIES[:1], hardware=HARDWARE[:1], sizes=(32,), steps=(1, 2))
    log_runs(pd.concat([a, a.assign(energy_source="external:mlenergy-v2")], ignore_index=True), "mixed")
    result = CliRunner().invoke(main_cli(), ["fit", "--experiment", "mixed", "--registered-model", "m"])
    assert result.exit_code == 2
    assert "--allow-mixed-sources" in result.output and "Traceback" not in result.output


def main_cli():
    from mlflow_energy.cli import main

    return main


def test_the_corrector_is_kept_only_where_grouped_cv_shows_it_helps(fitted):
    from mlflow_energy.fit.validation import corrector_helps

    # the corrector is on exactly where grouped CV says it helps
    assert fitted.model.corrector_used == corrector_helps(fitted.cv_summary)
    s = fitted.cv_summary
    worse = s.assign(mape_corrected=s["mape_law"] * 1.1)
    assert not corrector_helps(worse)
    # on data the law already explains exactly, a corrector fitted to noise is switched off
    clean = normalise_runs(synthetic_runs(families=FAMILIES, hardware=HARDWARE[:1], steps=(1, 4), noise=0.05,
                                          seed=2).assign(**{schema.P_PRECISION: "fp16"}))
    clean_fit = fit_energy_model(clean, n_boot=0, max_folds=6)
    assert not corrector_helps(clean_fit.cv_summary) and not clean_fit.model.corrector_used
    from mlflow_energy.predict import predict_frame

    row = {"model": "tiny-sd2", "height": 48, "width": 48, "steps": 2, "guidance_scale": 7.5,
           "precision": "fp16", "batch_size": 1, "hardware": "H100"}
    out = predict_frame(clean_fit.model, pd.DataFrame([row]))
    assert out["energy_total_j"][0] == pytest.approx(out["energy_total_j_law"][0])


def test_interval_levels_have_honest_grouped_coverage_near_nominal():
    # two data sources with a 25% offset between them: the unseen-source level must be wider
    a = synthetic_runs(noise=0.05, seed=4).assign(data_source="lab-a")
    b = synthetic_runs(noise=0.05, seed=5).assign(data_source="lab-b")
    b[schema.M_ENERGY_TOTAL] *= 1.25
    b["run_id"] = b["run_id"] + "b"
    raw = pd.concat([a, b], ignore_index=True)
    raw[schema.T_DATA_SOURCE] = raw.pop("data_source")
    result = fit_energy_model(normalise_runs(raw), n_boot=0, max_folds=12)
    cov = result.coverage.set_index("level")
    assert {"known", "unseen_family", "unseen_hardware", "unseen_source"} <= set(cov.index)
    # configs: many groups, so the leave-one-group-out coverage is a fair estimate
    assert abs(cov.loc["known", "coverage"] - 0.9) <= 0.05
    iv = result.model.interval
    assert iv["unseen_source"] > iv["known"]


def test_step_scaling_is_exactly_the_flops_ratio(fitted):
    rr = fitted.step_scaling["ratio_of_ratios"]
    assert len(rr) == len(FAMILIES) * len(HARDWARE)
    assert np.allclose(rr, 1.0, atol=1e-9)
    assert (fitted.step_scaling["flops_ratio"] > 1.6).all()


def test_releases_of_one_external_dataset_fit_together_as_data_sources():
    a = synthetic_runs(families=FAMILIES[:1], hardware=HARDWARE[:1], sizes=(32,), steps=(1, 2))
    frame = normalise_runs(pd.concat([a.assign(energy_source="external:mlenergy-v2"),
                                      a.assign(energy_source="external:mlenergy-v3", run_id=a["run_id"] + "3")],
                                     ignore_index=True))
    assert check_sources(frame) == ["external:mlenergy-v2", "external:mlenergy-v3"]
    assert set(frame["data_source"]) == {"external:mlenergy-v2", "external:mlenergy-v3"}
    with pytest.raises(ConfigError, match="--allow-mixed-sources"):
        check_sources(pd.concat([frame, frame.assign(energy_source="external:other")]))


# ------------------------------------------------------------------ the measurement protocol and the fit

def test_family_law_recovers_slope_and_predicts_unseen_configs():
    rng = np.random.default_rng(0)
    flops = np.repeat(np.geomspace(1e9, 1e11, 8), 3)  # 8 configs x 3 runs, 100x FLOPs span
    energy = 2e-9 * flops**0.95 * np.exp(rng.normal(0, 0.03, len(flops)))
    frame = pd.DataFrame({"model": "fam", "hardware": "cpu", "config_hash": np.repeat(list("abcdefgh"), 3),
                          "flops_total": flops, "energy_total": energy})
    (row,) = family_laws(frame).to_dict("records")
    assert row["b"] == pytest.approx(0.95, abs=0.03)
    assert row["r2"] > 0.99 and row["flops_span"] == pytest.approx(100.0)
    assert 0 < row["loco_mape"] < 0.06
    # a fixed overhead per image (Python, not FLOPs) bends the law: slope and LOCO error show it
    bent = frame.assign(energy_total=frame["energy_total"] + 40.0)
    (row,) = family_laws(bent).to_dict("records")
    assert row["b"] < 0.8


def test_groups_with_too_few_configs_get_no_family_law():
    frame = pd.DataFrame({"model": "fam", "hardware": "cpu", "config_hash": list("abc"),
                          "flops_total": [1e9, 2e9, 4e9], "energy_total": [1.0, 2.0, 4.0]})
    assert family_laws(frame).empty


def test_noisy_runs_are_dropped_unless_the_group_would_be_too_small():
    frame = pd.DataFrame({"model": ["a"] * 5 + ["b"] * 3, "hardware": "h",
                          "noisy": [False, False, False, True, True, False, False, True]})
    kept, dropped = drop_noisy(frame)
    assert dropped == 2 and list(kept["model"]) == ["a"] * 3 + ["b"] * 3


def test_dynamic_target_reads_dynamic_energy_or_dynamic_scope():
    raw = synthetic_runs(families=FAMILIES[:1], hardware=HARDWARE[:1], sizes=(32,), steps=(1, 2), batches=(1,))
    raw[schema.dynamic_energy_key("total")] = [np.nan, 0.5 * raw[schema.M_ENERGY_TOTAL].iloc[1]]
    raw[schema.T_ENERGY_SCOPE] = ["total", "total"]
    for p in schema.PHASES:
        raw[schema.dynamic_energy_key(p)] = [np.nan, 0.5 * raw[schema.energy_key(p)].iloc[1]]
    total = normalise_runs(raw)
    dynamic = normalise_runs(raw, target="dynamic")
    assert len(total) == 2 and len(dynamic) == 1  # the first run has no dynamic energy and is not dynamic
    assert dynamic["energy_total"].iloc[0] == pytest.approx(0.5 * total["energy_total"].iloc[1])
    raw[schema.T_ENERGY_SCOPE] = ["dynamic", "total"]
    assert len(normalise_runs(raw, target="dynamic")) == 2  # a dynamic-scope run is its own dynamic energy
    with pytest.raises(ConfigError, match="target='board'"):
        normalise_runs(raw, target="board")


def test_unseen_setup_stands_on_its_own_quantile_once_enough_setups_were_held_out():
    from mlflow_energy.fit.validation import MIN_SETUPS, interval_coverage, interval_widths

    rng = np.random.default_rng(0)

    def held(scheme: str, sources: list[str], spread: float) -> pd.DataFrame:
        n = 10 * len(sources)
        return pd.DataFrame({"scheme": scheme, "phase": "total", "run_id": [f"{scheme}{i}" for i in range(n)],
                             "model": "m", "hardware": "H100", "data_source": np.repeat(sources, 10),
                             "measured_j": 1.0, "law_j": np.exp(rng.uniform(-spread, spread, n))})

    families = held("lofo", ["a", "b"], 0.5).assign(model=lambda d: np.repeat(["f1", "f2"], 10))
    many = [f"s{i}" for i in range(MIN_SETUPS + 1)]
    pred = pd.concat([families, held("losetup", many, 0.1)], ignore_index=True)
    widths = interval_widths(pred, column="law_j")
    assert widths["unseen_setup"] < 0.1 < 0.3 < widths["unseen_family"]
    cov = interval_coverage(pred, column="law_j").set_index("level")
    assert cov.loc["unseen_setup", "log_halfwidth"] == pytest.approx(widths["unseen_setup"])
    # too few setups: never narrower than any level
    few = pd.concat([families, held("losetup", many[:MIN_SETUPS - 1], 0.1)], ignore_index=True)
    widths = interval_widths(few, column="law_j")
    assert widths["unseen_setup"] == max(widths.values()) == widths["unseen_family"]
