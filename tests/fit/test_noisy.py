"""Noisy runs in the fit: down-weighted by their interval (default), left out, or kept."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from test_fit import FAMILIES, HARDWARE, log_runs, synthetic_runs  # same folder, on sys.path under pytest

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit import family_laws, fit_line, normalise_runs, runs_frame, weigh_noisy


def main_cli():
    from mlflow_energy.cli import main

    return main


def _frame(noisy, ci, target=0.05) -> pd.DataFrame:
    n = len(noisy)
    return pd.DataFrame({"model": ["a"] * n, "hardware": ["h"] * n, "noisy": noisy, "ci95_frac": ci,
                         "protocol_target": [target] * n})


def test_weights_follow_the_interval_against_the_target():
    frame = _frame([False, True, True, True, True, True], [0.01, 0.05 * 1.0001, 0.10, 0.50, np.nan, np.inf])
    weighed, n = weigh_noisy(frame)
    assert n == 5
    w = weighed["weight"].to_numpy()
    assert w[0] == 1.0 and w[1] == pytest.approx(1.0, abs=1e-3)  # just missed the target: almost full weight
    assert w[2] == pytest.approx(0.25) and w[3] == pytest.approx(0.01)  # 2x and 10x the target
    assert w[4] == pytest.approx(0.25)  # no interval logged: as if twice the target
    assert w[5] == pytest.approx(0.01)  # an infinite interval still weighs something: the floor
    # a looser target weighs the same interval more
    assert weigh_noisy(_frame([True], [0.10], target=0.08))[0]["weight"].iloc[0] == pytest.approx(0.64)


def test_exclude_and_keep_modes_and_a_bad_mode():
    frame = _frame([False, False, False, True], [0.01, 0.01, 0.01, 0.2])
    dropped, n = weigh_noisy(frame, "exclude")
    assert n == 1 and len(dropped) == 3 and (dropped["weight"] == 1.0).all()
    kept, n = weigh_noisy(frame, "keep")
    assert n == 0 and len(kept) == 4 and (kept["weight"] == 1.0).all()
    with pytest.raises(ConfigError, match="noisy='drop'.*downweight, exclude, keep"):
        weigh_noisy(frame, "drop")


def test_a_weight_of_two_is_a_run_counted_twice():
    rng = np.random.default_rng(1)
    x = np.log(np.geomspace(1e9, 1e11, 6))
    y = -20 + 0.9 * x + rng.normal(0, 0.05, len(x))
    w = np.array([1, 2, 1, 1, 2, 1], dtype=float)
    weighted = fit_line(x, y, w=w)
    repeated = fit_line(np.repeat(x, w.astype(int)), np.repeat(y, w.astype(int)))
    assert weighted.b == pytest.approx(repeated.b) and weighted.log_a == pytest.approx(repeated.log_a)
    assert fit_line(x, y).b != pytest.approx(weighted.b)


def test_a_down_weighted_noisy_config_keeps_the_span_without_bending_the_law():
    flops = np.repeat(np.geomspace(1e9, 4e10, 6), 3)  # 6 configs x 3 runs, 40x
    energy = 2e-9 * flops**0.95
    frame = pd.DataFrame({"model": "fam", "hardware": "cpu", "config_hash": np.repeat(list("abcdef"), 3),
                          "flops_total": flops, "energy_total": energy, "noisy": False, "ci95_frac": 0.02,
                          "protocol_target": 0.05})
    # the largest config is noisy and one of its runs is far off (+60%)
    frame.loc[15:17, ["noisy", "ci95_frac"]] = [True, 0.5]
    frame.loc[17, "energy_total"] *= 1.6
    (kept,) = family_laws(weigh_noisy(frame, "keep")[0]).to_dict("records")
    (weighed,) = family_laws(weigh_noisy(frame)[0]).to_dict("records")
    (left_out,) = family_laws(weigh_noisy(frame, "exclude")[0]).to_dict("records")
    assert abs(weighed["b"] - 0.95) < abs(kept["b"] - 0.95) / 5  # the outlier barely moves the law
    assert weighed["flops_span"] == pytest.approx(40.0) and left_out["flops_span"] < 40.0 / 1.5


def test_runs_carry_the_protocol_target_into_the_frame():
    raw = synthetic_runs(families=FAMILIES[:1], hardware=HARDWARE[:1], sizes=(32,), steps=(1, 2), batches=(1,))
    raw[schema.M_ENERGY_CI95_FRAC] = [0.02, 0.12]
    raw[schema.M_PROTOCOL_TARGET] = [0.05, 0.06]
    frame = normalise_runs(raw)
    assert frame["ci95_frac"].tolist() == [0.02, 0.12] and frame["protocol_target"].tolist() == [0.05, 0.06]
    old = normalise_runs(raw.drop(columns=[schema.M_PROTOCOL_TARGET, schema.M_ENERGY_CI95_FRAC]))
    assert (old["protocol_target"] == 0.05).all() and old["ci95_frac"].isna().all()


@pytest.mark.parametrize(("args", "said", "param"), [
    ([], "2 noisy run(s) down-weighted", schema.P_FIT_NOISY_DOWNWEIGHTED),
    (["--noisy", "exclude"], "2 noisy run(s) left out", schema.P_FIT_NOISY_EXCLUDED),
])
def test_fit_command_down_weights_or_leaves_out_noisy_runs(tracking_uri, args, said, param):
    frame = synthetic_runs(families=FAMILIES[:2], hardware=HARDWARE[:1], sizes=(32, 48, 64), steps=(1, 4, 16),
                           batches=(1,))
    ids = log_runs(frame, "noisy")
    client = mlflow.MlflowClient()
    for run_id in ids[:2]:
        client.set_tag(run_id, schema.T_NOISY, "true")
        client.log_metric(run_id, schema.M_ENERGY_CI95_FRAC, 0.10)
    assert runs_frame("noisy")["noisy"].sum() == 2
    result = CliRunner().invoke(main_cli(), ["fit", "--experiment", "noisy", "--registered-model", "noisy-energy",
                                             "--bootstrap", "0", "--max-folds", "3", "--no-plots", *args],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert said in result.output
    run = client.get_run(client.get_model_version_by_alias("noisy-energy", "champion").run_id)
    assert run.data.params[param] == "2" and run.data.params[schema.P_FIT_TARGET] == "total"
    # the per-family law of the total is logged either way
    assert "LOCO MAPE" in result.output
    b = run.data.metrics[schema.family_law_key(FAMILIES[0], "b")]
    assert math.isfinite(b) and 0.5 < b < 1.2
    assert run.data.metrics[schema.family_law_key(FAMILIES[0], "loco_mape")] < 0.2
    if not args:
        assert "down-weighted (weights 0.25-0.25)" in result.output
    bad = CliRunner().invoke(main_cli(), ["fit", "--experiment", "noisy", "--registered-model", "x", "--noisy", "no"])
    assert bad.exit_code == 2 and "--noisy" in bad.output
