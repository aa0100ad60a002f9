"""Calibration by simulation on the public ML.ENERGY data: does calibrating ever hurt, and how much does it help?

Each (data source, GPU) of the ML.ENERGY v2 and v3 leaderboards is treated in turn as a *new
setup*: the model is fitted (with its grouped CV, which sets its interval widths) on every other
setup; then it is calibrated on k measurements per family of the held-out setup
(:func:`mlflow_energy.predict.fit_calibration`) and predicts the setup's *other* rows of those
families, next to the uncalibrated model on the very same rows (k = 0). Two ways to pick the k points:

* ``setup``: k rows per family drawn at random (any size, steps, batch);
* ``size``: k rows per family all at *one* resolution, predicting the family's rows at its other
  resolutions. Families whose levels differ, in order of their size, are the trap of a slope
  learned between families; this is where it would show.

A family with at most k rows gives k = its rows - 1 (one row is always left to predict).

Usage (writes the tables as Markdown to stdout and, with --csv, every prediction):

    python benchmarks/calibration_sim.py --draws 20 [--csv sim.csv]

Each line says, per mode and k: MAPE and 90% interval coverage calibrated, the MAPE of the same rows
uncalibrated, in how many (setup, draw) cells calibration was worse than none, and the change in MAPE
with its 90% interval over the simulation's own noise (the cells bootstrapped): "worse" only where the
whole interval lies above zero. Draws that picked the same calibration rows count once (a family with
at most k rows at one size is picked whole: at k = 8 in ``size`` mode a setup may have two distinct
calibrations, whatever the number of draws).
Reproducible: fixed seeds; the fits are deterministic (LightGBM deterministic, one thread).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import pandas as pd

KS = (1, 2, 4, 8)
MODES = ("setup", "size")
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


def _pick(held: pd.DataFrame, k: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Calibration rows: k per family (at one resolution in ``size`` mode; a family with one resolution
    is left out there), leaving at least one row of each picked family to predict."""
    pick = np.zeros(len(held), dtype=bool)
    for _, idx in held.groupby("model").indices.items():
        if mode == "size":
            res = held["height"].to_numpy()[idx] * held["width"].to_numpy()[idx]
            if len(set(res)) < 2:
                continue
            idx = idx[res == rng.choice(sorted(set(res)))]
            take = min(k, len(idx))
        else:
            take = min(k, len(idx) - 1)
        if take > 0:
            pick[rng.choice(idx, size=take, replace=False)] = True
    return pick


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
        # an unseen setup may lie outside what the rest has seen (a GPU, a family): the prior answers anyway
        prior = predict_frame(model, inputs, allow_extrapolation=True)
        rng = np.random.default_rng(seed)
        for mode in MODES:
            for k in KS:
                for d in range(draws):
                    pick = _pick(held, k, mode, rng)
                    if not pick.any():
                        continue
                    fams = set(held["model"][pick])
                    rest = ~pick & held["model"].isin(fams).to_numpy()
                    if mode == "size":  # the picked families' other resolutions
                        res = held["height"] * held["width"]
                        picked_res = dict(zip(held["model"][pick], res[pick], strict=False))
                        rest &= (res != held["model"].map(picked_res)).to_numpy()
                    if not rest.any():
                        continue
                    cal = fit_calibration(model, inputs[pick].assign(energy_total_j=truth[pick]), name="sim")
                    out = predict_frame(model, inputs[rest].assign(setup="sim"), calibrations={"sim": cal},
                                        allow_extrapolation=True)
                    t, p, p0 = truth[rest], out["energy_total_j"].to_numpy(), prior["energy_total_j"].to_numpy()[rest]
                    rows.append(pd.DataFrame({
                        "mode": mode, "setup": key, "k": k, "draw": d,
                        "pick": ",".join(map(str, np.flatnonzero(pick))), "row": np.flatnonzero(rest),
                        "model": inputs["model"][rest].to_numpy(),
                        "measured_j": t, "predicted_j": p, "prior_j": p0, "ape": np.abs(p / t - 1),
                        "ape_prior": np.abs(p0 / t - 1),
                        "covered": (out["energy_total_j_low"].to_numpy() <= t) & (t <= out["energy_total_j_high"]
                                                                                  .to_numpy()),
                        "covered_prior": (prior["energy_total_j_low"].to_numpy()[rest] <= t)
                        & (t <= prior["energy_total_j_high"].to_numpy()[rest]),
                        "log_halfwidth": np.log(out["energy_total_j_high"].to_numpy() / p),
                        "slopes": ",".join(cal.slopes_kept) or "none",
                    }))
    return pd.concat(rows, ignore_index=True)


BOOT = 2000  # bootstrap resamples of the cells for the interval of the MAPE difference


def gain_interval(g: pd.DataFrame, keys: list[str], seed: int = 0) -> tuple[float, float, float]:
    """Calibrated minus uncalibrated MAPE in points, with its 90% interval over the simulation's own
    noise: the (setup, draw) cells resampled with replacement, each cell's rows kept together."""
    cells = g.groupby(keys)[["ape", "ape_prior"]].agg(["sum", "count"])
    s, sp = (cells[(c, "sum")].to_numpy() for c in ("ape", "ape_prior"))
    n = cells[("ape", "count")].to_numpy()
    diff = 100 * (s.sum() - sp.sum()) / n.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(BOOT, len(n)))
    boot = 100 * (s[idx].sum(axis=1) - sp[idx].sum(axis=1)) / n[idx].sum(axis=1)
    lo, hi = np.percentile(boot, [5, 95])
    return float(diff), float(lo), float(hi)


def distinct(sim: pd.DataFrame) -> pd.DataFrame:
    """One cell per distinct calibration: draws that picked the same rows (a family with fewer rows than
    k is picked whole) repeat one calibration, which is one piece of evidence, not several."""
    if "pick" not in sim.columns:
        return sim
    return sim.drop_duplicates(["mode", "setup", "k", "pick", "row"]).reset_index(drop=True)


def table(sim: pd.DataFrame) -> str:
    sim = distinct(sim)

    def agg(g: pd.DataFrame) -> pd.Series:
        keys = [c for c in ("setup", "draw") if c in g.columns]  # a cell: one setup's calibration from one draw
        cells = g.groupby(keys)[["ape", "ape_prior"]].mean()
        diff, lo, hi = gain_interval(g, keys)
        verdict = "worse" if lo > 0 else ("better" if hi < 0 else "within noise")
        return pd.Series({
            "n": len(g), "MAPE %": 100 * g["ape"].mean(), "uncalibrated MAPE %": 100 * g["ape_prior"].mean(),
            "coverage %": 100 * g["covered"].mean(), "uncalibrated coverage %": 100 * g["covered_prior"].mean(),
            "median half-width x": float(np.exp(g["log_halfwidth"].median())),
            "cells worse than none": f"{int((cells['ape'] > cells['ape_prior'] + 1e-12).sum())}/{len(cells)}",
            "slopes kept %": 100 * (g.drop_duplicates(keys)["slopes"] != "none").mean(),
            "MAPE change, points (90% interval)": f"{diff:+.2f} ({lo:+.2f} .. {hi:+.2f}): {verdict}",
        })

    t = sim.groupby(["mode", "k"]).apply(agg, include_groups=False).reset_index()
    per = sim.groupby(["mode", "setup", "k"]).apply(agg, include_groups=False).reset_index()
    lines = []
    for title, df in (("all held-out setups", t), ("per held-out setup", per)):
        lines += [f"**{title}**", "", "| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
        for r in df.itertuples(index=False):
            lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r) + " |")
        lines.append("")
    worse = int(per["MAPE change, points (90% interval)"].str.endswith(": worse").sum())
    lines.append(f"lines where calibration is worse than none beyond the simulation's noise: {worse} of {len(per)} "
                 f"per setup, {int(t['MAPE change, points (90% interval)'].str.endswith(': worse').sum())} of {len(t)} "
                 "overall")
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
