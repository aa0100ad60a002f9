"""Calibration by simulation on the public ML.ENERGY data: MAPE and interval coverage vs points per family.

Each (data source, GPU) of the ML.ENERGY v2 and v3 leaderboards is treated in turn as a *new
setup*: the model is fitted (with its grouped CV, which sets its interval widths) on every other
setup; then, for k = 0, 1, 2, 4, 8 measurements per family drawn at random from the held-out
setup, the model is calibrated on those k points (:func:`mlflow_energy.predict.fit_calibration`)
and predicts the setup's *other* rows of those families (k = 0: no calibration, the unseen-setup
interval). A family with at most k rows gives k = its rows - 1 (one row is always left to predict).

Usage (writes the table as Markdown to stdout and, with --csv, every prediction):

    python benchmarks/calibration_sim.py --draws 20 [--csv sim.csv]

Reproducible: fixed seeds; the fits are deterministic (LightGBM deterministic, one thread).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import pandas as pd

KS = (0, 1, 2, 4, 8)
COLS = ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "hardware")


def public_frame() -> pd.DataFrame:
    """The ML.ENERGY rows as the fit reads them (imported into a throw-away SQLite store)."""
    import mlflow

    from mlflow_energy.fit import runs_frame
    from mlflow_energy.tracking.mlenergy import import_mlenergy

    tmp = tempfile.mkdtemp(prefix="calsim-")
    old = os.getcwd()
    os.chdir(tmp)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        import_mlenergy(experiment="mlenergy")
        return runs_frame("mlenergy")
    finally:
        os.chdir(old)


def simulate(frame: pd.DataFrame, draws: int, seed: int = 0) -> pd.DataFrame:
    from mlflow_energy.fit import fit_energy_model
    from mlflow_energy.predict import fit_calibration, predict_frame

    frame = frame.assign(setup_key=frame["data_source"].astype(str) + " / " + frame["hardware"].astype(str))
    rows = []
    for key in sorted(frame["setup_key"].unique()):
        held = frame[frame["setup_key"] == key].reset_index(drop=True)
        train = frame[frame["setup_key"] != key].reset_index(drop=True)
        model = fit_energy_model(train, n_boot=0, max_folds=12).model
        inputs = pd.DataFrame({c: held["hardware_raw" if c == "hardware" else c] for c in COLS})
        truth = held["energy_total"].to_numpy(dtype=float)
        rng = np.random.default_rng(seed)
        for k in KS:
            for d in range(draws if k else 1):
                pick = np.zeros(len(held), dtype=bool)
                for _, idx in held.groupby("model").indices.items():
                    take = min(k, len(idx) - 1)
                    if take > 0:
                        pick[rng.choice(idx, size=take, replace=False)] = True
                rest = ~pick
                if k == 0:
                    out = predict_frame(model, inputs[rest])
                else:
                    cal = fit_calibration(model, inputs[pick].assign(energy_total_j=truth[pick]), name="sim")
                    out = predict_frame(model, inputs[rest].assign(setup="sim"), calibrations={"sim": cal})
                t = truth[rest]
                p = out["energy_total_j"].to_numpy()
                rows.append(pd.DataFrame({
                    "setup": key, "k": k, "draw": d, "model": inputs["model"][rest].to_numpy(), "measured_j": t,
                    "predicted_j": p, "ape": np.abs(p / t - 1),
                    "covered": (out["energy_total_j_low"].to_numpy() <= t) & (t <= out["energy_total_j_high"].to_numpy()),
                    "log_halfwidth": np.log(out["energy_total_j_high"].to_numpy() / p),
                    "level": out["interval_level"].to_numpy(),
                }))
    return pd.concat(rows, ignore_index=True)


def table(sim: pd.DataFrame) -> str:
    def agg(g: pd.DataFrame) -> pd.Series:
        return pd.Series({"n": len(g), "MAPE %": 100 * g["ape"].mean(), "within 10 %": 100 * (g["ape"] <= 0.10).mean(),
                          "coverage %": 100 * g["covered"].mean(),
                          "median half-width x": float(np.exp(g["log_halfwidth"].median()))})

    overall = sim.groupby("k").apply(agg, include_groups=False).reset_index().assign(setup="all")
    per = sim.groupby(["setup", "k"]).apply(agg, include_groups=False).reset_index()
    t = pd.concat([overall, per], ignore_index=True)[["setup", "k", "n", "MAPE %", "within 10 %", "coverage %",
                                                       "median half-width x"]]
    lines = ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    for r in t.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=20, help="random draws of the k calibration points per setup and k")
    p.add_argument("--csv", help="write every prediction here")
    p.add_argument("--from-csv", help="print the table of an earlier --csv instead of simulating")
    args = p.parse_args()
    sim = pd.read_csv(args.from_csv) if args.from_csv else simulate(public_frame(), args.draws)
    if args.csv:
        sim.to_csv(args.csv, index=False)
    print(table(sim))


if __name__ == "__main__":
    main()
