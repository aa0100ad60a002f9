"""One call fits everything: the model, the law table and the cross-validation, as a :class:`FitResult`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy.errors import ConfigError
from mlflow_energy.fit.features import compute_flops
from mlflow_energy.fit.frame import FIT_PHASES
from mlflow_energy.fit.law import MIN_POINTS, PowerLaw
from mlflow_energy.fit.model import LAW_FORMS, EnergyModel, fit_core
from mlflow_energy.fit.scope import idle_powers, seen_of, time_frame
from mlflow_energy.fit.validation import (
    LEVELS,
    choose_law_forms,
    corrector_helps,
    cross_validate,
    family_laws,
    interval_coverage,
    interval_widths,
    within_setup_sd,
)


# ============================================================================ report
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def law_table(model: EnergyModel, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per fitted (or skipped) law: level, group, phase, n, a, b, b 95% CI, R2, MAPE."""
    rows = []
    for phase, pm in model.phases.items():
        col = f"energy_{phase}"
        have = frame[frame[col].notna()]
        for (fam, hw), g in have.groupby(["model", "hardware"]):
            law = pm.group.get(f"{fam}|{hw}")
            note = "" if law else (
                f"not fitted: {len(g)} run(s), fewer than {MIN_POINTS}" if len(g) < MIN_POINTS
                else "not fitted: FLOPs do not vary within the group")
            rows.append(_law_row("family_hardware", f"{fam}|{hw}", phase, law, len(g), note))
        for hw, law in pm.pooled.items():
            rows.append(_law_row("hardware_family_offset", hw, phase, law, law.n, f"slope: {law.slope_from}"))
        for hw, law in pm.cross.items():
            rows.append(_law_row("hardware", hw, phase, law, law.n, f"slope: {law.slope_from}"))
        rows.append(_law_row("overall", "all", phase, pm.overall, pm.overall.n, ""))
    return pd.DataFrame(rows)


def _law_row(level: str, group: str, phase: str, law: PowerLaw | None, n: int, note: str) -> dict[str, Any]:
    if law is None:
        return {"level": level, "group": group, "phase": phase, "n": n, "a": np.nan, "b": np.nan, "b_low": np.nan,
                "b_high": np.nan, "r2": np.nan, "mape": np.nan, "note": note}
    return {"level": level, "group": group, "phase": phase, "n": n, "a": math.exp(law.log_a), "b": law.b,
            "b_low": law.b_low, "b_high": law.b_high, "r2": law.r2, "mape": law.mape, "note": note}


@dataclass
class FitResult:
    """What :func:`fit_energy_model` returns."""

    model: EnergyModel
    frame: pd.DataFrame
    laws: pd.DataFrame
    cv_predictions: pd.DataFrame
    cv_summary: pd.DataFrame
    coverage: pd.DataFrame | None = None  # per interval level: honest grouped coverage (see interval_coverage)
    step_scaling: pd.DataFrame | None = None  # predicted energy ratio 50/30 steps vs the FLOPs ratio
    #: per (family, hardware): the law alone, its R2 and leave-one-config-out MAPE (:func:`family_laws`)
    family_laws: pd.DataFrame | None = None
    #: runs left out because the measurement protocol tagged them noisy (``fit --noisy exclude``)
    noisy_excluded: int = 0
    #: noisy runs fitted with a weight below 1 (``fit --noisy downweight``, the default)
    noisy_downweighted: int = 0
    #: the energy fitted: ``total`` or ``dynamic`` (see :func:`~mlflow_energy.fit.frame.normalise_runs`)
    target: str = "total"
    #: per scheme and phase: held-out MAPE of the power and the saturating law alone, and the form chosen
    law_forms_cv: pd.DataFrame | None = None
    #: the time law's grouped CV (phase ``total`` = seconds per image) and its interval coverage
    time_cv_summary: pd.DataFrame | None = None
    time_coverage: pd.DataFrame | None = None


def fit_energy_model(frame: pd.DataFrame, *, n_boot: int = 200, n_estimators: int = 100, max_folds: int = 40,
                     seed: int = 0, cv: bool = True, law: str = "auto") -> FitResult:
    """Fit the full model on ``frame`` (output of :func:`runs_frame`) and cross-validate it.

    ``law``: ``auto`` (each phase takes the form grouped CV prefers, :func:`choose_law_forms`;
    the power law without CV), ``power`` or ``saturating`` for every phase.

    Example:
        >>> from mlflow_energy.fit import fit_energy_model, runs_frame
        >>> result = fit_energy_model(runs_frame("mlenergy"))           # doctest: +SKIP
        >>> result.cv_summary.query("phase == 'total'")                 # doctest: +SKIP
    """
    frame = compute_flops(frame)
    missing = frame["flops_total"].isna()
    frame = frame.loc[~missing].reset_index(drop=True)
    if len(frame) < MIN_POINTS:
        raise ConfigError("runs", len(frame), f"at least {MIN_POINTS} runs whose FLOPs can be counted")
    if law != "auto" and law not in LAW_FORMS:
        raise ConfigError("law", law, "auto or one of " + ", ".join(LAW_FORMS))
    forms_cv = None
    if law == "auto" and cv:
        forms, forms_cv = choose_law_forms(frame, max_folds=max_folds, seed=seed)
    else:
        forms = dict.fromkeys(FIT_PHASES, "power" if law == "auto" else law)
    model = fit_core(frame, n_boot=n_boot, n_estimators=n_estimators, seed=seed, law_forms=forms)
    if cv:
        pred, summary = cross_validate(frame, max_folds=max_folds, n_estimators=n_estimators, seed=seed,
                                       law_forms=forms)
    else:
        pred, summary = pd.DataFrame(columns=["scheme", "phase", "measured_j", "corrected_j"]), pd.DataFrame()
    model.corrector_used = corrector_helps(summary)
    column = "corrected_j" if model.corrector_used else "law_j"
    model.interval = interval_widths(pred, column=column) if len(pred) else dict.fromkeys(
        LEVELS, math.log(2.0))
    coverage = interval_coverage(pred, column=column) if len(pred) else None
    model.within_setup_sd = within_setup_sd(pred, column=column) if len(pred) else float("nan")
    scopes = sorted(set(frame["energy_scope"])) if "energy_scope" in frame.columns else []
    if len(scopes) == 1:
        model.energy_scope = scopes[0]
    model.seen = seen_of(frame)
    model.idle_w, model.idle_source = idle_powers(frame, model.hardware)
    time_summary, time_coverage = fit_time_law(model, frame, cv=cv, max_folds=max_folds, seed=seed)
    return FitResult(model, frame, law_table(model, frame), pred, summary, coverage, step_scaling(model, frame),
                     family_laws(frame), law_forms_cv=forms_cv, time_cv_summary=time_summary,
                     time_coverage=time_coverage)


def fit_time_law(model: EnergyModel, frame: pd.DataFrame, *, cv: bool = True, max_folds: int = 40, seed: int = 0
                 ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Fit the law of seconds per image on the runs that carry a time, into ``model.time``, with its
    grouped CV and 90% intervals (``model.time_interval``); ``(CV summary, coverage)`` or Nones
    when too few runs carry a time."""
    tf = time_frame(frame)
    if len(tf) < MIN_POINTS:
        return None, None
    # the form of the law as for energy: grouped CV chooses (on the public data the saturating law
    # halves the held-out-GPU error of time: 46% -> 22%); the law alone, no corrector
    forms = choose_law_forms(tf, max_folds=max_folds, seed=seed)[0] if cv else {}
    try:
        model.time = fit_core(tf, corrector=False, law_forms=forms)
    except ConfigError:
        return None, None
    model.time.corrector_used = False
    if not cv:
        model.time_interval = dict.fromkeys(LEVELS, math.log(2.0))
        return None, None
    pred, summary = cross_validate(tf, max_folds=max_folds, seed=seed, corrector=False, law_forms=forms)
    pred = pred[pred["phase"] == "total"]
    model.time_interval = interval_widths(pred, column="law_j") if len(pred) else dict.fromkeys(LEVELS, math.log(2.0))
    return summary, (interval_coverage(pred, column="law_j") if len(pred) else None)


def step_scaling(model: EnergyModel, frame: pd.DataFrame, low: int = 30, high: int = 50) -> pd.DataFrame:
    """Per fitted (family, hardware): the predicted energy ratio of ``high`` over ``low`` steps at the
    family's most frequent training shape, against the FLOPs ratio (1.0 = exactly as FLOPs)."""
    from mlflow_energy.fit.features import compute_flops

    rows = []
    for (fam, hw), g in frame.groupby(["model", "hardware"]):
        base = g.iloc[[0]].copy()
        pair = pd.concat([base.assign(steps=low), base.assign(steps=high)], ignore_index=True)
        try:
            flopped = compute_flops(pair)
        except ConfigError:
            continue
        cor, _ = model.log_predict_both(flopped)
        e = np.exp(cor["total"])
        f = flopped["flops_total"].to_numpy(dtype=float)
        rows.append({"model": fam, "hardware": hw, "energy_ratio": e[1] / e[0], "flops_ratio": f[1] / f[0],
                     "ratio_of_ratios": (e[1] / e[0]) / (f[1] / f[0])})
    return pd.DataFrame(rows, columns=["model", "hardware", "energy_ratio", "flops_ratio", "ratio_of_ratios"])
