"""Grouped CV of a saturating per-call law against the plain power law on the public ML.ENERGY data.

The saturating law (not yet wired into ``mlflow-energy fit``): energy per call
``e = k_g * F * (1 + (F_sat / F)^c) * exp(t_attn f_attn + t_conv f_conv)`` with
``F_sat = peak FLOP/s of the GPU (spec table) x tau``; ``tau`` and ``c`` from a grid on within
(family, GPU) variation, the op-type weights from cross-family variation per GPU, and for an
unseen GPU an intercept linear in log(TDP / peak) fitted over the seen GPUs. Levels as in the fit:
the (family, GPU) intercept, else the GPU's, else the overall one. The plain power law is
``fit.cross_validate``'s law alone. The public data carry totals only: no per-phase figures.

Usage: python benchmarks/law_cv.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.config import InferenceConfig
from mlflow_energy.fit import cross_validate
from mlflow_energy.fit.features import call_terms, compute_flops, hardware_descriptors_of
from mlflow_energy.fit.frame import normalise_runs
from mlflow_energy.flops.optypes import op_fractions
from mlflow_energy.tracking.mlenergy import _PRECISIONS, default_csvs, hardware_name, read_rows, source_of


def public_frame() -> pd.DataFrame:
    out = []
    for path in default_csvs():
        rows, skipped = read_rows(path)
        src, ds, rt = source_of(pd.concat([rows, skipped]))
        for i, r in rows.iterrows():
            prec = _PRECISIONS.get(str(r["precision"]), str(r["precision"]))
            cfg = InferenceConfig(model=r["family"], height=int(r["height"]), width=int(r["width"]),
                                  steps=int(r["steps"]), guidance_scale=float(r["guidance_scale"]), precision=prec,
                                  batch_size=int(r["batch_size"]))
            out.append({"run_id": f"{ds}-{i}", schema.P_MODEL: r["family"], schema.P_HEIGHT: cfg.height,
                        schema.P_WIDTH: cfg.width, schema.P_STEPS: cfg.steps,
                        schema.P_GUIDANCE_SCALE: cfg.guidance_scale, schema.P_PRECISION: prec,
                        schema.P_BATCH_SIZE: cfg.batch_size, schema.M_ENERGY_TOTAL: float(r["energy_j_per_image"]),
                        schema.T_HARDWARE: hardware_name(r["gpu_variant"]), schema.T_ENERGY_SOURCE: src,
                        schema.T_DATA_SOURCE: ds, schema.T_RUNTIME: rt, schema.T_CONFIG_HASH: cfg.config_hash()})
    f = compute_flops(normalise_runs(pd.DataFrame(out)))
    hw = hardware_descriptors_of(f["hardware"].unique())
    f["x"], f["lc"] = call_terms(f, "total")
    f["y"] = np.log(f["energy_total"]) - f["lc"]
    fr = op_fractions(f)
    f["fa"], f["fc"] = fr["attention"], fr["conv"]
    f["lpeak"] = np.log(f["hardware"].map(lambda h: hw[h]["hw_tflops"] * 1e12))
    f["jpf"] = np.log(f["hardware"].map(lambda h: hw[h]["hw_tdp_w"] / (hw[h]["hw_tflops"] * 1e12)))
    f["grp"] = f["model"] + "|" + f["hardware"]
    return f


def _sp(t):
    return np.logaddexp(0, t)


def _demean(v, g):
    return v - pd.Series(v).groupby(np.asarray(g)).transform("mean").to_numpy()


def fit(tr: pd.DataFrame, ops: bool = True) -> dict:
    best = None
    r = (tr["y"] - tr["x"]).to_numpy()
    for lt in np.linspace(np.log(1e-7), 0.0, 57):
        for c in (0.5, 0.75, 1.0, 1.5, 2.0):
            s = _sp(c * (tr["lpeak"] + lt - tr["x"])).to_numpy()
            sse = ((_demean(r, tr["grp"]) - _demean(s, tr["grp"])) ** 2).sum()
            if best is None or sse < best[0]:
                best = (sse, lt, c)
    _, lt, c = best
    res = r - _sp(c * (tr["lpeak"] + lt - tr["x"])).to_numpy()
    th = np.zeros(2)
    if ops:
        X = np.c_[_demean(tr["fa"].to_numpy(), tr["hardware"]), _demean(tr["fc"].to_numpy(), tr["hardware"])]
        th = np.linalg.lstsq(X, _demean(res, tr["hardware"]), rcond=None)[0]
    res = res - np.c_[tr["fa"], tr["fc"]] @ th
    per_hw = pd.Series(res).groupby(tr["hardware"].to_numpy()).mean()
    jpf = tr.groupby("hardware")["jpf"].first()[per_hw.index]
    k, a = np.polyfit(jpf, per_hw.values, 1) if len(per_hw) >= 2 else (0.0, res.mean())
    return {"lt": lt, "c": c, "th": th, "k": k, "a": a, "cross": per_hw.to_dict(),
            "grp": pd.Series(res).groupby(tr["grp"].to_numpy()).mean().to_dict()}


def predict(m: dict, te: pd.DataFrame) -> np.ndarray:
    base = te["x"] + _sp(m["c"] * (te["lpeak"] + m["lt"] - te["x"])) + np.c_[te["fa"], te["fc"]] @ m["th"]
    lv = [m["grp"].get(g, m["cross"].get(h, m["a"] + m["k"] * j)) for g, h, j in zip(te["grp"], te["hardware"],
                                                                                      te["jpf"], strict=True)]
    return (base + np.array(lv) + te["lc"]).to_numpy()


def cv(f: pd.DataFrame, scheme: str, ops: bool = True) -> float:
    keys = (f["grp"] + "|" + f["config_hash"]) if scheme == "loco" else f[
        {"lofo": "model", "loho": "hardware", "loso": "data_source"}[scheme]]
    errs: list[float] = []
    for k in keys.unique():
        te, tr = f[keys == k], f[keys != k]
        errs += list(np.abs(np.exp(predict(fit(tr, ops), te) - np.log(te["energy_total"])) - 1))
    return float(np.mean(errs))


def main() -> None:
    f = public_frame()
    _, plain = cross_validate(f)
    plain = plain.set_index("scheme")["mape_law"]
    print("| scheme | plain power law | saturating | saturating + op types |\n|---|---|---|---|")
    for s in ("loco", "lofo", "loho", "loso"):
        print(f"| {s} | {plain[s]:.1%} | {cv(f, s, ops=False):.1%} | {cv(f, s):.1%} |")
    m = fit(f)
    print(f"tau {np.exp(m['lt']):.2g} s, c {m['c']}, op weights (attention, conv) {m['th'].round(3)}, "
          f"log-J/FLOP slope over GPUs {m['k']:.3f}")
    f["pred"] = np.exp(predict(m, f))
    print("\n| family | GPU | measured E(bs16)/E(bs1) | predicted |\n|---|---|---|---|")
    for (fam, hw), d in f.groupby(["model", "hardware"]):
        d = d.set_index("batch_size")
        if 1 in d.index and 16 in d.index and d.index.is_unique:
            print(f"| {fam} | {hw} | {d.loc[16, 'energy_total'] / d.loc[1, 'energy_total']:.2f} | "
                  f"{d.loc[16, 'pred'] / d.loc[1, 'pred']:.2f} |")


if __name__ == "__main__":
    main()
