"""The saturating law: recovered from data drawn from it, chosen by grouped CV only where it predicts better,
served per setup, and kept by the model's state."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mlflow_energy import schema
from mlflow_energy.fit import fit_energy_model, normalise_runs
from mlflow_energy.fit.model import EnergyModel
from mlflow_energy.fit.saturation import fit_saturating, softplus
from mlflow_energy.flops import flops_frame
from mlflow_energy.measure.hardware import find_gpu
from mlflow_energy.predict.frame import predict_frame

H100, A100, L40S = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA L40S"
GPUS = (H100, A100, L40S)
FAMILIES = ("sd1.5", "sd2", "sdxl", "pixart-sigma")
POWER_LEVEL = {H100: math.log(1.0e-12), A100: math.log(0.8e-12), L40S: math.log(1.5e-12)}
FAMILY_STEP = {"sd1.5": 0.0, "sd2": 0.05, "sdxl": 0.1, "pixart-sigma": -0.05}


def _log_peak(hw: str) -> float:
    spec = find_gpu(hw)
    assert spec is not None
    return math.log(spec.descriptors()["hw_tflops"] * 1e12)


def _level(hw: str) -> float:
    """The floor in log J/FLOP: 1.3 x the GPU's TDP / peak (a GPU at its floor runs near TDP, near peak)."""
    spec = find_gpu(hw)
    assert spec is not None
    d = spec.descriptors()
    return math.log(1.3 * d["hw_tdp_w"] / (d["hw_tflops"] * 1e12))


def runs(*, law: str, sources: dict[str, float], noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Total-only runs of real families on three GPUs, energy per denoiser call from a known law.

    ``law="saturating"``: ``log e = level + log f + softplus(c (log(tau peak) - log f))`` with one
    ``tau`` per source (``sources``: name -> tau in seconds), c = 1. ``law="power"``: J/FLOP that
    *rises* with the call's size (``e ~ f^1.15``), which no saturating curve can bend to.
    """
    rng = np.random.default_rng(seed)
    grid = [(fam, hw, side, bs, src) for fam in FAMILIES for hw in GPUS for side in (512, 1024)
            for bs in (1, 2, 4, 8, 16) for src in sources]
    df = pd.DataFrame(grid, columns=["model", "hardware", "height", "batch_size", "source"]).assign(
        width=lambda d: d["height"], steps=20, guidance_scale=5.0)
    fl = flops_frame(df[["model", "height", "width", "steps", "guidance_scale", "batch_size"]])
    out = []
    for i, r in df.iterrows():
        per_call = fl["flops_denoise_per_step"].iloc[i] * r["batch_size"]
        calls = fl["flops_total"].iloc[i] / per_call
        x = math.log(per_call)
        if law == "saturating":
            log_e = _level(r["hardware"]) + FAMILY_STEP[r["model"]] + x + float(
                softplus(np.array(math.log(sources[r["source"]]) + _log_peak(r["hardware"]) - x)))
        else:  # levels that owe nothing to the spec table
            log_e = POWER_LEVEL[r["hardware"]] + FAMILY_STEP[r["model"]] + 1.15 * x - 0.15 * math.log(1e13)
        out.append({
            "run_id": f"r{i}", schema.P_MODEL: r["model"], schema.P_HEIGHT: int(r["height"]),
            schema.P_WIDTH: int(r["width"]), schema.P_STEPS: 20, schema.P_GUIDANCE_SCALE: 5.0,
            schema.P_PRECISION: "fp16", schema.P_BATCH_SIZE: int(r["batch_size"]),
            schema.M_ENERGY_TOTAL: calls * math.exp(log_e + rng.normal(0, noise)), "hardware": r["hardware"],
            "energy_source": r["source"], "config_hash": f"{r['model']}-{r['height']}-{r['batch_size']}",
        })
    return normalise_runs(pd.DataFrame(out))


def test_the_law_recovers_its_saturation_point_per_setup_and_its_op_weights():
    rng = np.random.default_rng(1)
    n = 60
    x = rng.uniform(math.log(1e11), math.log(1e15), n)
    models = np.array(["a", "b", "c"] * (n // 3))
    sources = np.array(["fast"] * (n // 2) + ["slow"] * (n // 2))
    hardware = np.array(["H100"] * n)
    peak = np.full(n, math.log(1e15))
    conv = {"a": 0.6, "b": 0.1, "c": 0.3}
    conv_share = np.array([conv[m] for m in models])
    tau = np.where(sources == "fast", 1e-5, 1e-2)
    y = math.log(2e-12) + x + softplus(1.0 * (np.log(tau) + peak - x)) + 0.4 * conv_share
    law = fit_saturating(x, y, models=models, hardware=hardware, log_peak=peak, conv=conv_share,
                         attention=np.zeros(n), sources=sources)
    assert law is not None
    assert math.exp(law.setup_log_tau["fast|H100"]) == pytest.approx(1e-5, rel=0.5)
    assert math.exp(law.setup_log_tau["slow|H100"]) == pytest.approx(1e-2, rel=0.5)
    assert law.w_conv == pytest.approx(0.4, abs=0.05)
    # a known setup is predicted with its own saturation point, to within 2%
    pred, names = law.log_predict(x, models=models, hardware=hardware, log_peak=peak, conv=conv_share,
                                  attention=np.zeros(n), sources=sources)
    assert np.abs(np.exp(pred - y) - 1).max() < 0.02
    assert set(names) == {"setup_group"}
    # without a source the shared law answers: between the two setups
    shared, names = law.log_predict(x, models=models, hardware=hardware, log_peak=peak, conv=conv_share,
                                    attention=np.zeros(n))
    assert set(names) == {"group"}
    assert np.log(1e-5) < law.log_tau < np.log(1e-2)
    # the state survives JSON
    again = type(law).from_dict(json.loads(json.dumps(law.to_dict())))
    assert np.allclose(again.log_predict(x, models=models, hardware=hardware, log_peak=peak, conv=conv_share,
                                         attention=np.zeros(n), sources=sources)[0], pred)


def test_the_law_is_not_fitted_without_a_peak_or_a_varying_call():
    x = np.log([1e12, 2e12, 4e12, 8e12])
    y = x - 27.0
    kw = {"models": np.array(["m"] * 4), "hardware": np.array(["cpu"] * 4)}
    assert fit_saturating(x, y, log_peak=np.full(4, np.nan), **kw) is None  # a CPU: no peak in the spec table
    assert fit_saturating(np.full(4, x[0]), y, log_peak=np.full(4, math.log(1e15)), **kw) is None


@pytest.fixture(scope="module")
def saturating_fit():
    return fit_energy_model(runs(law="saturating", sources={"xdit": 1e-6, "diffusers": 3e-3}), n_boot=0,
                            max_folds=8)


def test_grouped_cv_chooses_the_saturating_law_where_it_predicts_better(saturating_fit):
    forms = saturating_fit.law_forms_cv
    assert saturating_fit.model.phases["total"].law_form == "saturating"
    total = forms[forms["phase"] == "total"].set_index("scheme")
    assert {"lofo", "loho", "loso", "losetup"} <= set(total.index)
    grouped = total.loc[["lofo", "loho", "loso", "losetup"]]
    assert grouped["mape_saturating"].mean() < grouped["mape_power"].mean()
    assert set(total["chosen"]) == {"saturating"}
    # the chosen law is the one cross-validated: its held-out MAPE is the comparison's
    cv = saturating_fit.cv_summary.set_index(["scheme", "phase"])
    assert cv.loc[("loho", "total"), "mape_law"] == pytest.approx(total.loc["loho", "mape_saturating"])


def test_a_known_setup_keeps_its_own_batch_scaling_and_an_unseen_one_gets_the_shared_law(saturating_fit):
    model = saturating_fit.model
    rows = pd.DataFrame([{"model": "pixart-sigma", "height": 1024, "width": 1024, "steps": 20, "guidance_scale": 5.0,
                          "precision": "fp16", "batch_size": b, "hardware": "H100", "setup": s}
                         for s in ("xdit", "diffusers", "") for b in (1, 16)])
    out = predict_frame(model, rows)
    ratio = out["energy_total_j"].to_numpy()[1::2] / out["energy_total_j"].to_numpy()[::2]
    # the truth: xdit saturates at 1e-6 s x peak (flat with batch), diffusers at 3e-3 s (a large gain)
    fl = flops_frame(rows[["model", "height", "width", "steps", "guidance_scale", "batch_size"]].iloc[:2])
    f1, f16 = fl["flops_denoise_per_step"].to_numpy() * np.array([1, 16])
    peak = _log_peak(H100)

    def truth(tau: float) -> float:  # energy per image: (e_call(16 f) / 16) / e_call(f)
        return math.exp(float(softplus(np.array(math.log(tau) + peak - math.log(f16)))
                              - softplus(np.array(math.log(tau) + peak - math.log(f1)))))
    assert ratio[0] == pytest.approx(truth(1e-6), rel=0.05)
    assert ratio[1] == pytest.approx(truth(3e-3), rel=0.05)
    assert ratio[1] < ratio[2] < ratio[0]  # no setup: the shared saturation point, between the two
    assert list(out["interval_level"]) == ["known"] * 4 + ["unseen_setup"] * 2


def test_the_state_keeps_the_saturating_law_and_reads_older_power_law_states(saturating_fit):
    model = saturating_fit.model
    rows = pd.DataFrame([{"model": "sdxl", "height": 768, "width": 768, "steps": 20, "guidance_scale": 5.0,
                          "precision": "fp16", "batch_size": 4, "hardware": "A100", "setup": ""}])
    again = EnergyModel.from_json(model.to_json())
    assert again.phases["total"].law_form == "saturating"
    assert predict_frame(again, rows)["energy_total_j"].iloc[0] == pytest.approx(
        predict_frame(model, rows)["energy_total_j"].iloc[0], rel=1e-12)
    state = json.loads(model.to_json())
    state["version"] = 2
    for phase in state["phases"].values():
        phase.pop("saturating")
    old = EnergyModel.from_json(json.dumps(state))
    assert old.phases["total"].law_form == "power"


def test_grouped_cv_keeps_the_power_law_where_saturation_cannot_fit():
    result = fit_energy_model(runs(law="power", sources={"zeus": 1.0}), n_boot=0, max_folds=6)
    assert result.model.phases["total"].law_form == "power"
    total = result.law_forms_cv.query("phase == 'total'")
    assert total["mape_power"].mean() < total["mape_saturating"].mean()
    # a forced saturating law is what the caller asked for
    forced = fit_energy_model(runs(law="power", sources={"zeus": 1.0}), n_boot=0, cv=False, law="saturating")
    assert forced.model.phases["total"].law_form == "saturating" and forced.law_forms_cv is None


def test_an_unknown_law_is_refused_with_the_allowed_values():
    with pytest.raises(Exception, match="law.*bogus.*auto or one of power, saturating"):
        fit_energy_model(runs(law="power", sources={"zeus": 1.0}), n_boot=0, cv=False, law="bogus")


def test_the_law_learns_how_memory_bound_calls_cost_from_within_and_across_families():
    """Energy per FLOP falls with arithmetic intensity (``intensity^-0.5``) within each family and across them;
    the law finds the weight on its grid and predicts every call within 2%, where the law without it cannot."""
    rng = np.random.default_rng(3)
    n = 90
    models = np.array(["a", "b", "c"] * (n // 3))
    x = rng.uniform(math.log(1e12), math.log(1e15), n)
    # intensity grows with the call (weights amortised), with a level of its own per family
    li = 0.3 * (x - math.log(1e13)) + np.array([{"a": -0.6, "b": 0.0, "c": 0.5}[m] for m in models]) \
        + rng.normal(0, 0.2, n)
    hardware, peak = np.array(["H100"] * n), np.full(n, math.log(1e15))
    y = math.log(2e-12) + x + softplus(np.log(1e-4) + peak - x) - 0.5 * li
    law = fit_saturating(x, y, models=models, hardware=hardware, log_peak=peak, intensity=li)
    assert law is not None and law.w_intensity == -0.5
    pred, _ = law.log_predict(x, models=models, hardware=hardware, log_peak=peak, intensity=li)
    assert np.abs(np.exp(pred - y) - 1).max() < 0.02
    plain = fit_saturating(x, y, models=models, hardware=hardware, log_peak=peak)
    assert plain is not None and plain.w_intensity == 0.0
    pred0, _ = plain.log_predict(x, models=models, hardware=hardware, log_peak=peak)
    assert np.abs(np.exp(pred0 - y) - 1).max() > 0.05
    # a family never seen: its level from the GPU's, its intensity from its own call
    held = models == "c"
    fit = fit_saturating(x[~held], y[~held], models=models[~held], hardware=hardware[~held], log_peak=peak[~held],
                         intensity=li[~held])
    assert fit is not None
    out, names = fit.log_predict(x[held], models=models[held], hardware=hardware[held], log_peak=peak[held],
                                 intensity=li[held])
    assert set(names) == {"hardware"}
    assert np.abs(np.exp(out - y[held]) - 1).mean() < 0.05


def test_the_call_intensity_of_real_configs_and_of_a_family_without_bytes():
    from mlflow_energy.fit.features import compute_flops
    from mlflow_energy.fit.saturation import INTENSITY_REF, call_intensity

    df = compute_flops(pd.DataFrame({"model": ["sdxl", "sdxl", "sdxl"], "height": [512, 1024, 1024],
                                     "width": [512, 1024, 1024], "steps": 30, "guidance_scale": [5.0, 5.0, 1.0],
                                     "batch_size": [1, 1, 4]}))
    li = call_intensity(df, "total")
    flops = flops_frame(df[["model", "height", "width", "steps", "guidance_scale", "batch_size"]])
    # 512 px, one CFG call of 2 samples: FLOPs over the bytes of mlflow_energy.flops.memory
    per_call = float(flops["flops_denoise_per_step"].iloc[0])
    assert li[0] == pytest.approx(math.log(per_call / 14.89e9 / INTENSITY_REF), abs=0.01)
    assert li[0] < li[1] < li[2]  # bigger images, then more samples per call: more FLOPs per byte
    assert call_intensity(df, "text_encode") is None
    unknown = df.assign(model="no-such-family")
    assert (call_intensity(unknown.assign(flops_total=1e12, flops_denoise_per_step=1e10), "total") == 0).all()
