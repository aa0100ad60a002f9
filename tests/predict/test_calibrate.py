"""Intervals that follow the setup, calibration to a new setup, and the predict/calibrate commands,
on a real registered model in a SQLite store."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mlflow_energy import schema

sys.path.insert(0, str(Path(__file__).parent))
from test_predictor import register_synthetic  # noqa: E402

NAME = "energy-cal"
H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibrate")
    old = os.getcwd()
    os.chdir(tmp)
    try:
        uri = register_synthetic(tmp, NAME)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield tmp, uri
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.chdir(old)
        mlflow.set_tracking_uri("")


def _prior(uri: str):
    from mlflow_energy.predict import load_predictor

    mlflow.set_tracking_uri(uri)
    return load_predictor(f"models:/{NAME}/1")


def row(**changes):
    base = {"model": "tiny-sd2", "height": 48, "width": 48, "steps": 4, "guidance_scale": 7.5, "precision": "fp16",
            "batch_size": 1, "hardware": H100}
    base.update(changes)
    return base


def test_unknown_setup_gets_the_widest_interval_and_says_so(store):
    from mlflow_energy.predict import predict_frame

    _, uri = store
    model, _ = _prior(uri)
    src = model.sources[0]
    out = predict_frame(model, pd.DataFrame([row(), row(setup=src), row(setup=src, hardware="L40S")]))
    assert list(out["interval_level"]) == ["unseen_setup", "known", "unseen_hardware"]
    half = np.log(out["energy_total_j_high"] / out["energy_total_j"]).to_numpy()
    # fit stores the unseen_setup level: the widest of the cross-validated levels
    assert model.interval["unseen_setup"] == max(model.interval.values())
    assert half[0] == pytest.approx(model.interval["unseen_setup"])
    assert half[1] == pytest.approx(model.interval["known"]) and half[1] < half[0]
    # the stored unseen_setup level is what an unseen setup gets; a model from before it was
    # stored gives an unseen setup the widest level it has
    wider = dataclasses.replace(model, interval={**model.interval, "unseen_setup": 1.234})
    out2 = predict_frame(wider, pd.DataFrame([row()]))
    assert np.log(out2["energy_total_j_high"] / out2["energy_total_j"])[0] == pytest.approx(1.234)
    older = dataclasses.replace(model, interval={k: v for k, v in model.interval.items() if k != "unseen_setup"})
    out3 = predict_frame(older, pd.DataFrame([row()]))
    assert np.log(out3["energy_total_j_high"] / out3["energy_total_j"])[0] == pytest.approx(
        max(older.interval.values()))


def test_a_family_known_elsewhere_on_a_trained_gpu_is_not_unseen_family(store):
    from mlflow_energy.predict.frame import source_level

    _, uri = store
    model, _ = _prior(uri)
    hw = sorted(model.hardware)[0]
    # a trained GPU, a family the model knows but never saw on it (the group removed)
    total = model.phases[schema.PHASE_TOTAL]
    saved = (dict(total.group), {h: dict(p.offsets) for h, p in total.pooled.items()})
    try:
        total.group.pop(f"tiny-sd2|{hw}", None)
        total.pooled[hw].offsets.pop("tiny-sd2", None)
        assert model.level_of("tiny-sd2", hw) == "unseen_family"  # the model's own label, the mislabel
        assert source_level(model, "tiny-sd2", hw) == "unseen_hardware"
    finally:
        total.group.clear()
        total.group.update(saved[0])
        for h, offs in saved[1].items():
            total.pooled[h].offsets = offs


def test_bad_setup_and_cfg_passes_are_one_line(store):
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.predict import predict_frame

    _, uri = store
    model, _ = _prior(uri)
    with pytest.raises(ConfigError, match=r"row 0: setup='nowhere' is not allowed: expected empty .*training source"):
        predict_frame(model, pd.DataFrame([row(setup="nowhere")]))
    with pytest.raises(ConfigError, match=r"cfg_passes=3"):
        predict_frame(model, pd.DataFrame([row(cfg_passes=3)]))
    with pytest.raises(ConfigError, match=r"cfg_passes"):  # SD at guidance 7.5 runs CFG: one pass is not possible
        predict_frame(model, pd.DataFrame([row(cfg_passes=1)]))
    one = predict_frame(model, pd.DataFrame([row(guidance_scale=1.0, cfg_passes=1), row(guidance_scale=1.0)]))
    assert one["energy_total_j"][0] == pytest.approx(one["energy_total_j"][1])


def _truth(model, rows: pd.DataFrame, level: float, slope: float) -> np.ndarray:
    """A new setup: the prior times exp(level + slope * (log FLOPs - its mean))."""
    from mlflow_energy.predict import predict_frame

    p = predict_frame(model, rows)
    x = np.log(p.attrs["flops_total"])
    return p["energy_total_j"].to_numpy() * np.exp(level + slope * (x - x.mean()))


def test_one_point_corrects_the_level_and_narrows_as_far_as_the_evidence_goes(store):
    from mlflow_energy.predict import fit_calibration, predict_frame

    _, uri = store
    model, _ = _prior(uri)
    grid = pd.DataFrame([row(height=h, width=h, steps=s) for h in (32, 48, 64) for s in (2, 4, 8)])
    truth = _truth(model, grid, np.log(1.4), 0.0)
    one = grid.iloc[[4]].assign(energy_total_j=truth[4])
    cal = fit_calibration(model, one, name="lab")
    assert 0.9 * np.log(1.4) < cal.family_offset("tiny-sd2") < np.log(1.4)  # shrunk towards the prior, not far
    assert cal.slopes_kept == [] and cal.check == {"levels": pytest.approx(float("nan"), nan_ok=True)}
    out = predict_frame(model, grid.assign(setup="lab"), calibrations={"lab": cal})
    err = np.abs(out["energy_total_j"].to_numpy() / truth - 1)
    assert err.max() < 0.10
    prior_err = np.abs(predict_frame(model, grid)["energy_total_j"].to_numpy() / truth - 1)
    assert prior_err.min() > 0.25
    assert (out["interval_level"] == "calibrated").all() and (out["setup"] == "lab").all()
    half = np.log(out["energy_total_j_high"] / out["energy_total_j"]).to_numpy()
    assert (half < cal.unseen_half).all() and (half >= model.interval["known"] * 0.99).all()
    assert ((out["energy_total_j_low"] <= truth) & (truth <= out["energy_total_j_high"])).all()
    # a family of the setup without a measurement moves by the setup's correction, keeps the wide interval
    other = predict_frame(model, pd.DataFrame([row(model="tiny-sdxl", setup="lab")]), calibrations={"lab": cal})
    assert other["interval_level"][0] == "calibrated_setup"


def test_a_slope_within_a_family_is_learned_and_kept_only_where_it_predicts_better(store):
    """Two sizes of one family on the setup: a setup whose energy per pixel falls faster than the
    prior's (0.16 per log pixel, about 20% from 512 to 1024 px) is learned from them, and the
    leave-one-out check keeps the size slope; where the sizes only differ by noise it keeps none."""
    from mlflow_energy.predict import fit_calibration, predict_frame

    _, uri = store
    model, _ = _prior(uri)
    grid = pd.DataFrame([row(height=h, width=h, steps=s) for h in (32, 48, 64) for s in (2, 4, 8)])
    prior = predict_frame(model, grid)["energy_total_j"].to_numpy()
    pixels = np.log(grid["height"].to_numpy(dtype=float) ** 2)
    truth = prior * np.exp(0.2 - 0.16 * (pixels - pixels.mean()))
    corners = [0, 2, 6, 8]  # 32 and 64 px, 2 and 8 steps
    cal = fit_calibration(model, grid.iloc[corners].assign(energy_total_j=truth[corners]), name="lab")
    assert cal.slopes_kept == ["size"], cal.check
    assert cal.check["levels+size"] < cal.check["levels"]
    assert -0.16 < cal.slope("size") < -0.10 and cal.slope("steps") == 0.0
    levels_only = fit_calibration(model, grid.iloc[corners].assign(energy_total_j=truth[corners]), name="lab")
    levels_only.names, levels_only.coef = levels_only.names[:2], levels_only.coef[:2]
    levels_only.cov = [r[:2] for r in levels_only.cov[:2]]
    held = np.setdiff1d(np.arange(len(grid)), corners)
    err = {}
    for name, c in (("slopes", cal), ("levels", levels_only)):
        out = predict_frame(model, grid.assign(setup="lab"), calibrations={"lab": c})["energy_total_j"].to_numpy()
        err[name] = np.abs(np.log(out[held] / truth[held])).mean()
    assert err["slopes"] < 0.5 * err["levels"], err
    # the same four points, each off the prior by independent 3% noise only: a slope rarely passes
    kept = 0
    for seed in range(20):
        noisy = prior[corners] * np.exp(0.2 + np.random.default_rng(seed).normal(0, 0.03, 4))
        flat = fit_calibration(model, grid.iloc[corners].assign(energy_total_j=noisy), name="lab")
        assert set(flat.check) >= {"levels", "levels+size", "levels+steps"}
        kept += bool(flat.slopes_kept)
    assert kept <= 3, kept  # a bare "lower LOO error" rule keeps one in about half of these draws


def test_families_differing_in_level_in_order_of_size_never_pass_for_a_slope(store):
    """The trap: four families whose energies sit 1.0x/1.2x/1.4x/1.6x above the prior, in order of
    their size, one measurement each at one size. What comes back at another size is a pure level
    shift per family (within 2%), not a FLOP slope learned from the differences between families."""
    from mlflow_energy.flops import flops_frame
    from mlflow_energy.predict import fit_calibration, predict_frame

    _, uri = store
    model, _ = _prior(uri)
    families = ["tiny-sd2", "tiny-sdxl", "tiny-sd1.5", "tiny-sd3.5-medium"]
    small = pd.DataFrame([row(model=f, height=32, width=32, steps=4) for f in families])
    big = pd.DataFrame([row(model=f, height=64, width=64, steps=8) for f in families])
    size_order = np.argsort(flops_frame(small.drop(columns=["precision", "hardware"]))["flops_total"].to_numpy())
    level = np.empty(4)
    level[size_order] = [1.0, 1.2, 1.4, 1.6]
    prior_small = predict_frame(model, small, allow_extrapolation=True)["energy_total_j"].to_numpy()
    prior_big = predict_frame(model, big, allow_extrapolation=True)["energy_total_j"].to_numpy()
    cal = fit_calibration(model, small.assign(energy_total_j=prior_small * level), name="lab")
    assert cal.slopes_kept == []  # one point per family: nothing within a family to learn a slope from
    out = predict_frame(model, big.assign(setup="lab"), calibrations={"lab": cal})
    assert (out["interval_level"] == "calibrated").all()  # a calibrated family is no extrapolation
    got = out["energy_total_j"].to_numpy()
    assert np.abs(got / (prior_big * level) - 1).max() < 0.02
    again = predict_frame(model, small.assign(setup="lab"), calibrations={"lab": cal})["energy_total_j"].to_numpy()
    # about the same shift at both sizes: another size gets the family's level without the measured
    # size's own small part (its cell), which with levels this clear is nearly all of it
    np.testing.assert_allclose(got / prior_big, again / prior_small, rtol=0.02)


def test_calibrate_and_predict_commands(store):
    from mlflow_energy.cli import main

    tmp, uri = store
    model, _ = _prior(uri)
    grid = pd.DataFrame([row(height=h, width=h, steps=4) for h in (32, 64)])
    truth = _truth(model, grid, np.log(1.3), 0.0)
    path = tmp / "mine.jsonl"
    grid.assign(energy_total_j=truth).to_json(path, orient="records", lines=True)
    runner = CliRunner()
    res = runner.invoke(main, ["calibrate", str(path), "--model-uri", f"models:/{NAME}/1", "--registered-model", NAME,
                               "--setup", "lab-h100"])
    assert res.exit_code == 0, res.output
    assert "calibrated setup 'lab-h100'" in res.output
    mv = mlflow.MlflowClient().get_model_version_by_alias(NAME, schema.REGISTERED_ALIAS_CHAMPION)
    assert int(mv.version) >= 2
    run = mlflow.get_run(mv.run_id)
    assert run.data.params[schema.P_CALIBRATION_SETUP] == "lab-h100"
    args = ["predict", "--model-uri", f"models:/{NAME}@champion", "--model", "tiny-sd2", "--height", "48",
            "--width", "48", "--steps", "4", "--hardware", H100, "--setup", "lab-h100", "--json"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    got = json.loads(res.output.strip().splitlines()[-1])
    assert got["interval_level"] == "calibrated" and got["scope"]["energy_scope"] == "total"
    # the served pyfunc reads the calibration too
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert served.predict(pd.DataFrame([row(setup="lab-h100")]))["energy_total_j"][0] == pytest.approx(
        got["energy_total_j"])
    res = runner.invoke(main, args[:-3])  # no --setup: the one calibration of this hardware applies
    assert res.exit_code == 0 and "interval level: calibrated, setup 'lab-h100'" in res.output, res.output
    res = runner.invoke(main, [*args[:-5], "--hardware", "NVIDIA A100-SXM4-40GB"])  # another GPU: unseen setup
    assert res.exit_code == 0 and "interval level: unseen_setup" in res.output, res.output
    # bad input: one line, exit 2
    bad = tmp / "bad.csv"
    grid.assign(energy_total_j=[1.0, -2.0]).to_csv(bad, index=False)
    res = runner.invoke(main, ["calibrate", str(bad), "--model-uri", f"models:/{NAME}/1", "--registered-model", NAME])
    assert res.exit_code == 2 and res.output.strip() == (
        "Error: energy_total_j=-2.0 is not allowed: expected a number > 0 (J per image), row 1")
    res = runner.invoke(main, [*args[:-3], "--setup", "elsewhere"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "setup='elsewhere'" in res.output


def test_a_calibrated_model_applies_the_calibration_of_the_rows_hardware(store):
    """No setup column: the one calibration whose measurements ran on the row's hardware applies
    (the output names it); a named setup wins; two calibrations of one GPU: none, and the note says so."""
    from mlflow_energy.predict import fit_calibration, predict_frame

    _, uri = store
    model, _ = _prior(uri)
    grid = pd.DataFrame([row(height=h, width=h) for h in (32, 64)])
    truth = _truth(model, grid, np.log(1.3), 0.0)
    lab = fit_calibration(model, grid.assign(energy_total_j=truth), name="lab")
    assert lab.hardware == ["H100 SXM5 80GB"]
    plain = predict_frame(model, grid)
    out = predict_frame(model, grid, calibrations={"lab": lab})  # no setup column
    assert list(out["setup"]) == ["lab", "lab"] and (out["interval_level"] == "calibrated").all()
    np.testing.assert_allclose(out["energy_total_j"], predict_frame(
        model, grid.assign(setup="lab"), calibrations={"lab": lab})["energy_total_j"])
    assert (out["energy_total_j"] / plain["energy_total_j"] > 1.2).all()
    a100 = predict_frame(model, grid.assign(hardware="NVIDIA A100-SXM4-40GB"), calibrations={"lab": lab})
    assert (a100["setup"] == "").all() and (a100["interval_level"] == "unseen_setup").all()
    named = predict_frame(model, grid.assign(setup=model.sources[0]), calibrations={"lab": lab})
    assert (named["setup"] == model.sources[0]).all() and (named["interval_level"] == "known").all()
    other = fit_calibration(model, grid.assign(energy_total_j=truth * 0.8), name="other")
    both = predict_frame(model, grid, calibrations={"lab": lab, "other": other})
    assert (both["setup"] == "").all() and (both["interval_level"] == "unseen_setup").all()
    assert both["note"][0] == ("2 calibrations of H100 SXM5 80GB (lab, other): name one in the setup column; "
                               "answered as an unseen setup")


def test_a_slope_not_learned_widens_the_interval_away_from_what_was_measured() -> None:
    # One size of sd2 measured: its level is known there, its size scaling is not. Another size of
    # the family is as uncertain as the slope's prior says; with the size slope kept it is not.
    from mlflow_energy.predict.calibrate import SLOPE_PRIOR_SD
    from mlflow_energy.predict.calibration import Calibration, slope_values

    at = slope_values([512, 1024], [512, 1024], [20, 20], [1, 1])
    base = dict(name="lab", names=["setup", "family:sd2"], coef=[0.1, 0.0], cov=[[1e-4, 0.0], [0.0, 1e-4]],
                refs={"sd2": at[0].tolist()}, counts={"sd2": 2}, sigma2=0.03**2, unseen_half=2.0, n_points=2)
    fams = np.array(["sd2", "sd2"])
    _, half, _ = Calibration(**base, slope_prior_sd=dict(SLOPE_PRIOR_SD)).apply(fams, at)
    assert half[0] == pytest.approx(1.6449 * math.sqrt(0.03**2 + 2e-4), rel=1e-6)  # at the measured size
    assert half[1] == pytest.approx(1.6449 * math.sqrt(0.03**2 + 2e-4 + (SLOPE_PRIOR_SD["size"] * math.log(4)) ** 2),
                                    rel=1e-6)
    _, kept, _ = Calibration(**base, slope_prior_sd=dict(SLOPE_PRIOR_SD), slopes_kept=["size"]).apply(fams, at)
    assert kept[1] == pytest.approx(half[0])


def test_the_slope_priors_travel_with_the_calibration_and_widen_its_other_sizes(store):
    from mlflow_energy.predict import fit_calibration, predict_frame
    from mlflow_energy.predict.calibrate import SLOPE_PRIOR_SD
    from mlflow_energy.predict.calibration import calibrations_from_json, calibrations_to_json

    _, uri = store
    model, _ = _prior(uri)
    one = pd.DataFrame([row(height=48, width=48, steps=4)])
    cal = fit_calibration(model, one.assign(energy_total_j=predict_frame(model, one)["energy_total_j"] * 1.3),
                          name="lab")
    cal = calibrations_from_json(calibrations_to_json({"lab": cal}))["lab"]
    assert cal.slope_prior_sd == SLOPE_PRIOR_SD
    out = predict_frame(model, pd.DataFrame([row(height=h, width=h, steps=4, setup="lab") for h in (48, 32, 64)]),
                        calibrations={"lab": cal})
    half = np.log(out["energy_total_j_high"] / out["energy_total_j"]).to_numpy()
    assert half[1] > half[0] * 1.05 and half[2] > half[0] * 1.05


def test_a_level_measured_at_one_size_carries_to_another_size_without_that_sizes_own_part() -> None:
    # Four measurements of sd2, all at 512 px, 20% above the prior. At 512 px the calibration moves by
    # nearly all of it; at 1024 px by less (the family's level, not what belongs to 512 px alone),
    # and less sure of it. Before cells, both sizes moved alike.
    from mlflow_energy.predict.calibrate import CELL_SHARE, fit_regression
    from mlflow_energy.predict.calibration import Calibration, slope_values

    vals = slope_values([512] * 4, [512] * 4, [20, 30, 40, 50], [1] * 4)
    fams = np.array(["sd2"] * 4)
    coef, cov, names = fit_regression(np.full(4, math.log(1.2)), fams, vals, kept=[], tau=0.15, sigma=0.08)
    assert CELL_SHARE > 0 and any(n.startswith("cell:sd2|") for n in names)
    cal = Calibration("lab", names, coef.tolist(), cov.tolist(), {"sd2": vals.mean(axis=0).tolist()}, {"sd2": 4},
                      0.08**2, 1.0, 4)
    shift, half, level = cal.apply(np.array(["sd2", "sd2"]), slope_values([512, 1024], [512, 1024], [20, 20], [1, 1]))
    assert shift[0] > 0.85 * math.log(1.2)
    assert 0 < shift[1] < 0.9 * shift[0]
    assert half[1] > half[0]
    assert list(level) == ["calibrated", "calibrated"]
    # the cells travel with the calibration
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert np.allclose(again.apply(np.array(["sd2"]), slope_values([1024], [1024], [20], [1]))[0], shift[1])
