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

Last, a per-call term (``--per-call``): part of a call's energy may not grow with its FLOPs, a cost per
kernel launch (``ops``, aten ops that launch a kernel) or per byte moved (``bytes``), counted from one
denoiser call's trace (:mod:`mlflow_energy.flops.traffic`, the packaged table); or energy per FLOP may
fall with the call's arithmetic intensity (FLOP per byte). For each coefficient on a grid, the term is
taken off the measured energy, the saturating law is cross-validated alone on the rest (every scheme)
and the term is put back into its held-out predictions. A term would enter the law only if one
coefficient lowers the held-out MAPE under every scheme; the SDXL 1024/512 px ratio at batch 1 and 2
is printed for each, and for the coefficient leave-one-config-out picks, each held-out group's MAPE.

With ``--nested`` too, each grouped scheme again with the term chosen inside each fold by
leave-one-config-out on the training rows alone, so that no held-out figure picks it.

Usage: python benchmarks/law_cv.py [--per-call [--nested]]
"""

from __future__ import annotations

import math
import sys
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


# (J per kernel launch, J per byte read or written) on a grid; 2e-3 J is ~7 µs at 300 W, 2e-10 J/B a byte
# streamed at ~1.5 TB/s with the board at ~300 W (an A100 running a memory-bound op)
_TERMS = [("ops", (k, 0.0)) for k in (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3)] + [
    ("bytes", (0.0, d)) for d in (2.5e-11, 5e-11, 1e-10, 2e-10, 4e-10, 8e-10)] + [
    ("ops+bytes", (k, d)) for k, d in ((1e-3, 1e-10), (2e-3, 1e-10), (2e-3, 2e-10))]


def call_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``frame`` (with ``flops_*`` columns): denoiser calls per image and one call's ``ops`` and
    ``bytes`` (the packaged table)."""
    from mlflow_energy.fit.features import call_terms
    from mlflow_energy.flops.traffic import call_counts_frame

    passes = [InferenceConfig(model=r.model, height=int(r.height), width=int(r.width), steps=int(r.steps),
                              guidance_scale=float(r.guidance_scale), batch_size=int(r.batch_size)).validate().passes
              for r in frame.itertuples()]
    keys = pd.DataFrame({"model": frame["model"], "height": frame["height"].astype(int),
                         "width": frame["width"].astype(int), "call_batch": frame["batch_size"].astype(int) * passes,
                         "precision": frame["precision"]})
    counts = call_counts_frame(keys)
    return pd.DataFrame({"calls_per_image": np.exp(call_terms(frame, "total")[1]), "ops": counts["ops"].to_numpy(),
                         "bytes": counts["bytes"].to_numpy(), "flops_call": counts["flops"].to_numpy()},
                        index=frame.index)


def _sdxl_ratios(cv: pd.DataFrame, frame: pd.DataFrame, column: str) -> dict[tuple[str, str, int], float]:
    """Held-out 1024/512 px ratio of SDXL per (scheme, GPU, batch) from CV predictions."""
    rows = frame.set_index("run_id")
    out = {}
    d = cv.join(rows[["height", "batch_size"]], on="run_id").query("model == 'sdxl'")
    for (scheme, hw, b), g in d.groupby(["scheme", "hardware", "batch_size"]):
        g = g.set_index("height")
        if {512, 1024} <= set(g.index) and g.index.is_unique:
            out[(scheme, hw, int(b))] = g.loc[1024, column] / g.loc[512, column]
    return out


def _cv_with_term(frame: pd.DataFrame, energy: np.ndarray, extra: np.ndarray, factor: np.ndarray) -> pd.DataFrame:
    """Held-out predictions of ``factor`` x (the saturating law fitted on ``(energy - extra) / factor``) + ``extra``."""
    from mlflow_energy.fit.validation import cross_validate

    pred, _ = cross_validate(frame.assign(energy_total=(energy - extra) / factor), law_forms={"total": "saturating"},
                             corrector=False)
    pred = pred.query("phase == 'total'").copy()
    rows = pd.Series(np.arange(len(frame)), index=frame["run_id"].to_numpy()).loc[pred["run_id"]].to_numpy()
    pred["pred_j"] = pred["law_j"] * factor[rows] + extra[rows]
    pred["measured_j"] = energy[rows]
    return pred


def _candidates(counts: pd.DataFrame) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(term, coefficient, J per image off the law, factor on the law) for each candidate, no term first."""
    calls, ones = counts["calls_per_image"].to_numpy(), np.ones(len(counts))
    out = [("none", "-", np.zeros(len(counts)), ones)]
    for term, (k, d) in _TERMS:
        extra = (k * counts["ops"].to_numpy() + d * counts["bytes"].to_numpy()) * calls
        out.append((term, f"{k:g} J/op, {d:g} J/B", extra, ones))
    log_i = np.log(counts["flops_call"].to_numpy() / counts["bytes"].to_numpy())
    for g in (0.25, 0.5, 1.0):  # energy per FLOP as intensity^-g around the median intensity
        out.append(("intensity", f"exponent -{g:g}", np.zeros(len(counts)), np.exp(-g * (log_i - np.median(log_i)))))
    return out


def _per_group(base: pd.DataFrame, best: pd.DataFrame) -> list[str]:
    """Per grouped scheme: each held-out group's MAPE without the term and with it."""
    lines = ["| scheme | groups better | per group: without -> with |", "|---|---|---|"]
    for scheme, key in _GROUP.items():
        if key is None:
            continue
        per = []
        for cv in (base, best):
            d = cv[cv["scheme"] == scheme]
            by = d[list(key)].astype(str).agg(" / ".join, axis=1) if isinstance(key, tuple) else d[key].astype(str)
            per.append((d["pred_j"] / d["measured_j"] - 1).abs().groupby(by.to_numpy()).mean())
        better = int((per[1] < per[0]).sum())
        cells = ", ".join(f"{g} {per[0][g]:.0%} -> {per[1][g]:.0%}" for g in per[0].index)
        lines.append(f"| {scheme} | {better} of {len(per[0])} | {cells} |")
    return lines


def per_call_terms(frame: pd.DataFrame) -> None:
    """Grouped CV of the saturating law with a per-call term taken off first, for each coefficient."""
    from mlflow_energy.fit.features import compute_flops
    from mlflow_energy.fit.validation import CV_SCHEMES

    frame = compute_flops(frame)
    counts = call_counts(frame)
    energy = frame["energy_total"].to_numpy(dtype=float)
    data = pd.DataFrame({"scheme": "data", "run_id": frame["run_id"], "model": frame["model"],
                         "hardware": frame["hardware"], "j": energy})
    measured = _sdxl_ratios(data, frame, "j")
    gpus = sorted({hw for _, hw, _ in measured})
    print(f"\nPer-call terms: ops per SDXL call {int(counts['ops'][frame['model'] == 'sdxl'].iloc[0])}; "
          "term per image = coefficient x count per call x calls per image\n")
    print("| term | coefficient | share of energy (median, max) | " + " | ".join(CV_SCHEMES)
          + " | SDXL 1024/512 held out, batch 1, 2 (" + "; ".join(gpus) + "): loco | lofo |\n|"
          + "---|" * (len(CV_SCHEMES) + 5))
    results = []
    for term, label, extra, factor in _candidates(counts):
        share = extra / energy
        head = f"| {term} | {label} | {np.median(share):.0%}, {share.max():.0%} | "
        if share.max() >= 0.9:
            print(head + "the term reaches a measured energy |" + " |" * (len(CV_SCHEMES) + 1))
            continue
        cv = _cv_with_term(frame, energy, extra, factor)
        mape = {s: (g["pred_j"] / g["measured_j"] - 1).abs().mean() for s, g in cv.groupby("scheme")}
        results.append((mape.get("loco", np.inf), term, label, cv))
        ratios = _sdxl_ratios(cv, frame, "pred_j")
        sdxl = [" ; ".join(", ".join(f"{ratios.get((scheme, hw, b), float('nan')):.2f}" for b in (1, 2)) for hw in gpus)
                for scheme in ("loco", "lofo")]
        print(head + " | ".join(f"{mape[s]:.1%}" if s in mape else "n/a" for s in CV_SCHEMES)
              + f" | {sdxl[0]} | {sdxl[1]} |")
    print("\nmeasured SDXL 1024/512, batch 1, 2, 4, 8: " + "; ".join(
        hw + " " + ", ".join(f"{measured.get(('data', hw, b), float('nan')):.2f}" for b in (1, 2, 4, 8)) for hw in gpus))
    _, term, label, best = min(results[1:], key=lambda r: r[0])
    print(f"\nThe candidate leave-one-config-out picks ({term}, {label}) against no term, per held-out group:\n")
    print("\n".join(_per_group(results[0][3], best)))
    if "--nested" in sys.argv[1:]:
        cands = _candidates(counts)
        keep = {("none", "-"), ("ops", "0.002 J/op, 0 J/B"), ("bytes", "0 J/op, 2e-10 J/B"),
                ("ops+bytes", "0.002 J/op, 1e-10 J/B"), ("intensity", "exponent -0.25"), ("intensity", "exponent -0.5"),
                ("intensity", "exponent -1")}
        _nested(frame, energy, [c for c in cands if (c[0], c[1]) in keep])


def _nested(frame: pd.DataFrame, energy: np.ndarray, cands: list[tuple[str, str, np.ndarray, np.ndarray]]) -> None:
    """Each grouped scheme with the candidate chosen inside each fold, by leave-one-config-out on the training
    rows alone (10 folds): the held-out group never helps pick the term."""
    from mlflow_energy.fit.features import hardware_descriptors_of
    from mlflow_energy.fit.model import fit_core
    from mlflow_energy.fit.validation import _folds, cross_validate

    law = {"total": "saturating"}
    print("\nNested: the term chosen per fold by leave-one-config-out on the training rows\n")
    print("| scheme | no term | chosen per fold | picks |\n|---|---|---|---|")
    for scheme, key in _GROUP.items():
        if key is None:
            continue
        errs: dict[str, list[float]] = {"none": [], "nested": []}
        picks = []
        for test in _folds(frame, scheme, 40, 0):
            train = np.setdiff1d(np.arange(len(frame)), test)
            inner = []
            for _, _, extra, factor in cands:
                adj = frame.iloc[train].assign(energy_total=(energy[train] - extra[train]) / factor[train])
                _, summ = cross_validate(adj, schemes=("loco",), max_folds=10, law_forms=law, corrector=False)
                inner.append(float(summ.query("phase == 'total'")["mape_law"].iloc[0]))
            pick = int(np.argmin(inner))
            picks.append(f"{cands[pick][0]} {cands[pick][1]}")
            held = frame.iloc[test]
            for name, i in (("none", 0), ("nested", pick)):
                _, _, extra, factor = cands[i]
                model = fit_core(frame.iloc[train].assign(energy_total=(energy[train] - extra[train]) / factor[train]),
                                 law_forms=law, corrector=False)
                model.hardware = {**hardware_descriptors_of(held["hardware"].unique()), **model.hardware}
                log_e, _ = model.log_predict(held, corrected=False)
                pred = np.exp(log_e["total"]) * factor[test] + extra[test]
                errs[name].extend(np.abs(pred / energy[test] - 1).tolist())
        counts = pd.Series(picks).value_counts()
        print(f"| {scheme} | {np.mean(errs['none']):.1%} | {np.mean(errs['nested']):.1%} | "
              + ", ".join(f"{k} x{v}" for k, v in counts.items()) + " |")


if __name__ == "__main__":
    if "--per-call" in sys.argv[1:]:
        per_call_terms(public_frame())
    else:
        main()
