"""The power law against the saturating law in grouped CV on the public ML.ENERGY data, and batch scaling.

Both forms are cross-validated alone (no corrector) by :func:`mlflow_energy.fit.validation.choose_law_forms`,
the function ``mlflow-energy fit`` uses to pick each phase's law; then the chosen model predicts
the energy per image at batch 16 over batch 1 for every (family, GPU) measured at both: for the
setup that measured it (``setup`` = its energy source; in sample), each of the two configs held
out in leave-one-config-out, and for an unseen setup (no ``setup``).
The public data carry totals only: the comparison is of the total.

Then, for the chosen law, how sure each scheme's held-out MAPE is: a 95% interval from resampling the
held-out *groups* (families, GPUs, sources, setups) with replacement, and each group's own MAPE, so
that an aim can be read against what so few groups can tell.

Usage: python benchmarks/law_cv.py
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.config import InferenceConfig
from mlflow_energy.fit import fit_energy_model
from mlflow_energy.fit.frame import normalise_runs
from mlflow_energy.predict.frame import predict_frame
from mlflow_energy.tracking.mlenergy import _PRECISIONS, default_csvs, hardware_name, read_rows, source_of


def public_frame() -> pd.DataFrame:
    """The packaged ML.ENERGY rows that map to a family, as the fit reads runs."""
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
    return normalise_runs(pd.DataFrame(out))


_GROUP = {"loco": None, "lofo": "model", "loho": "hardware", "loso": "data_source", "losetup": ("data_source", "hardware")}


def group_uncertainty(cv: pd.DataFrame, column: str, draws: int = 4000, seed: int = 0) -> list[str]:
    """Per scheme: held-out MAPE, its 95% interval over resampled groups, and each group's MAPE."""
    rng = np.random.default_rng(seed)
    lines = ["| scheme | groups | MAPE | 95% interval (groups resampled) | per group |", "|---|---|---|---|---|"]
    for scheme, key in _GROUP.items():
        d = cv.query("scheme == @scheme and phase == 'total'")
        if key is None or d.empty:
            continue
        err = (d[column] / d["measured_j"] - 1.0).abs()
        by = d[list(key)].astype(str).agg(" / ".join, axis=1) if isinstance(key, tuple) else d[key].astype(str)
        groups = [err[by == g].to_numpy() for g in sorted(by.unique())]
        names = sorted(by.unique())
        boots = []
        for _ in range(draws):
            pick = rng.integers(0, len(groups), len(groups))
            boots.append(np.concatenate([groups[i] for i in pick]).mean())
        lo, hi = np.percentile(boots, [2.5, 97.5])
        per = ", ".join(f"{n} {g.mean():.0%}" for n, g in zip(names, groups, strict=True))
        lines.append(f"| {scheme} | {len(groups)} | {err.mean():.1%} | {lo:.1%} .. {hi:.1%} | {per} |")
    return lines


def main() -> None:
    frame = public_frame()
    t0 = time.perf_counter()
    result = fit_energy_model(frame, n_boot=0)
    print(f"{len(frame)} rows; fit with both forms cross-validated: {time.perf_counter() - t0:.1f} s\n")
    names = {"loco": "leave-one-config-out", "lofo": "leave-one-family-out", "loho": "leave-one-GPU-out",
             "loso": "leave-one-source-out", "losetup": "leave-one-setup-out"}
    print("| scheme | power law | saturating law |\n|---|---|---|")
    for _, r in result.law_forms_cv.query("phase == 'total'").iterrows():
        print(f"| {names[r['scheme']]} | {r['mape_power']:.1%} | {r['mape_saturating']:.1%} |")
    pm = result.model.phases["total"]
    print(f"\nlaw of the total: {pm.law_form}")
    sat = pm.saturating
    if sat is not None:
        print(f"tau {math.exp(sat.log_tau):.2g} s, c {sat.c:g}, op weights attention {sat.w_attention:+.3f} "
              f"conv {sat.w_conv:+.3f}, level over log(TDP/peak): slope {sat.gpu_slope:.3f}; per setup tau: "
              + ", ".join(f"{k} {math.exp(v):.2g} s" for k, v in sorted(sat.setup_log_tau.items())))
    column = "corrected_j" if result.model.corrector_used else "law_j"
    print("\nHow sure: the chosen model's held-out MAPE of the total, groups resampled\n")
    print("\n".join(group_uncertainty(result.cv_predictions, column)))
    cv = result.cv_predictions.query("scheme == 'loco' and phase == 'total'").set_index("run_id")
    print("\n| family | GPU | measured E(bs16)/E(bs1) | predicted, its setup | held out (loco) | "
          "predicted, unseen setup |\n|---|---|---|---|---|---|")
    for (fam, hw, src), d in frame.groupby(["model", "hardware", "energy_source"]):
        d = d.set_index("batch_size")
        if not (1 in d.index and 16 in d.index and d.index.is_unique):
            continue
        row = d.loc[1]
        ask = pd.DataFrame([{"model": fam, "height": int(row["height"]), "width": int(row["width"]),
                             "steps": int(row["steps"]), "guidance_scale": float(row["guidance_scale"]),
                             "precision": row["precision"], "batch_size": b, "hardware": hw, "setup": s}
                            for s in (src, "") for b in (1, 16)])
        e = predict_frame(result.model, ask)["energy_total_j"].to_numpy()
        ids = (d.loc[1, "run_id"], d.loc[16, "run_id"])
        held = f"{cv.loc[ids[1], column] / cv.loc[ids[0], column]:.2f}" if all(i in cv.index for i in ids) else "n/a"
        print(f"| {fam} | {hw} | {d.loc[16, 'energy_total'] / d.loc[1, 'energy_total']:.2f} | "
              f"{e[1] / e[0]:.2f} | {held} | {e[3] / e[2]:.2f} |")


if __name__ == "__main__":
    main()
