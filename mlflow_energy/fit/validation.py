"""Honest evaluation: grouped cross-validation and calibrated conformal intervals.

Schemes: leave one config out (within its family and GPU), one family, one GPU, one data
source, or one setup (a data source on one GPU) out (``loco``, ``lofo``, ``loho``, ``loso``,
``losetup``). Each calibrates the interval of one prediction level (``known``, ``unseen_family``,
``unseen_hardware``, ``unseen_source``, ``unseen_setup``): the split-conformal quantile of the
held-out |log residuals|. ``unseen_setup``, the default for a row that names no setup, is
calibrated by leaving whole setups out when there are at least :data:`MIN_SETUPS` of them, and
is the widest of all levels otherwise (:func:`interval_widths`). Coverage is estimated honestly
by leaving one group out of the calibration too: every held-out group is scored against the
quantile of the other groups' residuals (:func:`interval_coverage`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit.features import hardware_descriptors_of
from mlflow_energy.fit.frame import FIT_PHASES
from mlflow_energy.fit.law import MIN_POINTS
from mlflow_energy.fit.model import fit_core

ALPHA = 0.10  # 90% prediction interval


# ============================================================================ cross-validation
CV_SCHEMES = ("loco", "lofo", "loho", "loso", "losetup")
_LEVEL_OF_SCHEME = {"loco": "known", "lofo": "unseen_family", "loho": "unseen_hardware", "loso": "unseen_source",
                    "losetup": "unseen_setup"}
LEVELS: tuple[str, ...] = tuple(_LEVEL_OF_SCHEME.values())
#: The level of a row for a setup the model has never seen (another harness, GPU, runtime).
LEVEL_UNSEEN_SETUP = "unseen_setup"
#: Setups (data sources on one GPU) needed before ``unseen_setup`` is its own leave-one-setup-out
#: quantile; with fewer, it is the widest level (a new setup may differ in every way the schemes test).
MIN_SETUPS = 3
_GROUP_OF_SCHEME = {"loco": "model", "lofo": "model", "loho": "hardware", "loso": "data_source"}


def _groups(frame: pd.DataFrame, scheme: str) -> pd.Series | None:
    """The group each row is held out with under ``scheme`` (``None``: the column is missing).

    A setup (``losetup``) is one data source (harness, runtime, energy scope) on one GPU.
    """
    if scheme == "losetup":
        source = frame["data_source"].astype(str) if "data_source" in frame.columns else ""
        return source + "|" + frame["hardware"].astype(str)
    col = _GROUP_OF_SCHEME[scheme]
    return frame[col] if col in frame.columns else None


def _folds(frame: pd.DataFrame, scheme: str, max_folds: int, seed: int) -> list[np.ndarray]:
    """Test-index arrays of each fold."""
    if scheme == "loco":
        keys = frame["model"] + "|" + frame["hardware"] + "|" + frame["config_hash"].astype(str)
        # a config alone in its (family, hardware) group leaves nothing to fit within the group
        sizes = frame.groupby(["model", "hardware"])["config_hash"].transform("nunique")
        keys = keys.where(sizes >= MIN_POINTS + 1)
    else:
        groups = _groups(frame, scheme)
        if groups is None:
            return []
        keys = groups if groups.nunique() >= 2 else pd.Series(np.nan, index=frame.index)
    uniq = keys.dropna().unique()
    if len(uniq) == 0:
        return []
    if len(uniq) > max_folds:
        rng = np.random.default_rng(seed)
        assign = dict(zip(rng.permutation(uniq), np.arange(len(uniq)) % max_folds, strict=True))
        fold_of = keys.map(assign)
        return [np.flatnonzero(fold_of.to_numpy() == k) for k in range(max_folds)]
    return [np.flatnonzero(keys.to_numpy() == u) for u in uniq]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float(r) if r is not None and np.isfinite(r) else float("nan")


def cross_validate(frame: pd.DataFrame, *, schemes: Sequence[str] = CV_SCHEMES, max_folds: int = 40,
                   n_estimators: int = 100, seed: int = 0, law_forms: dict[str, str] | None = None,
                   corrector: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grouped cross-validation; every fold refits laws and correctors on the rest.

    Returns ``(predictions, summary)``: one row per held-out run and phase (measured, law,
    law + corrector), and per scheme and phase: n, MAPE and Spearman rho of both.
    ``law_forms`` sets each phase's law (see :func:`~mlflow_energy.fit.model.fit_core`);
    ``corrector=False`` fits the laws alone (the corrected column then equals the law's).
    """
    preds = []
    for scheme in schemes:
        for test in _folds(frame, scheme, max_folds, seed):
            train = frame.drop(index=frame.index[test])
            if len(train) < MIN_POINTS:
                continue
            try:
                model = fit_core(train, n_estimators=n_estimators, seed=seed, law_forms=law_forms,
                                 corrector=corrector)
            except ConfigError:
                continue
            held = frame.iloc[test]
            # a GPU left out is predicted as the predictor would: from its spec-table descriptors
            model.hardware = {**hardware_descriptors_of(held["hardware"].unique()), **model.hardware}
            law, _ = model.log_predict(held, corrected=False)
            cor, _ = model.log_predict(held, corrected=True)
            for phase in law:
                meas = held[f"energy_{phase}"].to_numpy(dtype=float)
                for i in range(len(held)):
                    if not (meas[i] > 0):
                        continue
                    preds.append({
                        "scheme": scheme, "phase": phase, "run_id": held["run_id"].iloc[i],
                        "model": held["model"].iloc[i], "hardware": held["hardware"].iloc[i],
                        "data_source": held["data_source"].iloc[i] if "data_source" in held else "",
                        "measured_j": meas[i], "law_j": float(np.exp(law[phase][i])),
                        "corrected_j": float(np.exp(cor[phase][i])),
                    })
    pred = pd.DataFrame(preds, columns=["scheme", "phase", "run_id", "model", "hardware", "data_source",
                                        "measured_j", "law_j", "corrected_j"])
    rows = []
    for (scheme, phase), g in pred.groupby(["scheme", "phase"], sort=False):
        m = g["measured_j"].to_numpy()
        row = {"scheme": scheme, "phase": phase, "n": len(g), "n_groups": g["model"].nunique()}
        for name in ("law", "corrected"):
            p = g[f"{name}_j"].to_numpy()
            row[f"mape_{name}"] = float(np.mean(np.abs(p - m) / m))
            row[f"spearman_{name}"] = _spearman(p, m)
            row[f"abs_log_q90_{name}"] = _conformal_q(np.abs(np.log(p / m)))
        rows.append(row)
    return pred, pd.DataFrame(rows)


def _conformal_q(abs_resid: np.ndarray, alpha: float = ALPHA) -> float:
    """Split-conformal quantile: the ceil((n+1)(1-alpha))-th smallest |residual| (max when n is small)."""
    r = np.sort(np.asarray(abs_resid, dtype=float))
    if len(r) == 0:
        return float("nan")
    k = math.ceil((len(r) + 1) * (1 - alpha))
    return float(r[min(k, len(r)) - 1])


#: Schemes that leave out more than a config: what a user's new family, GPU, source or setup meets.
GROUPED_SCHEMES = ("lofo", "loho", "loso", "losetup")


def _distinct_schemes(frame: pd.DataFrame) -> list[str]:
    """The grouped schemes that hold out different groups: with one data source per GPU, leaving a
    setup out is leaving a GPU out, and it counts once."""
    out: list[str] = []
    seen: list[pd.Series] = []
    for scheme in GROUPED_SCHEMES:
        g = _groups(frame, scheme)
        if g is None or g.nunique() < 2:
            continue
        same = any(pd.MultiIndex.from_arrays([g.astype(str), h.astype(str)]).nunique() == g.nunique() == h.nunique()
                   for h in seen)
        if not same:
            out.append(scheme)
            seen.append(g)
    return out


def choose_law_forms(frame: pd.DataFrame, *, max_folds: int = 40, seed: int = 0
                     ) -> tuple[dict[str, str], pd.DataFrame]:
    """Per phase, the form of the law (``power`` or ``saturating``) that grouped CV prefers.

    Both forms are cross-validated alone (no corrector) under every scheme; a phase takes the
    saturating law when its mean held-out MAPE over the grouped schemes (:data:`GROUPED_SCHEMES`;
    a scheme that holds out the same groups as an earlier one counts once) is lower than the power
    law's, and the power law otherwise: the saturating law needs every GPU in the spec table and a
    family whose call size varies.

    Returns ``(forms, comparison)``: ``{phase: form}`` and one row per scheme and phase with
    ``n``, ``mape_power``, ``mape_saturating`` and the ``chosen`` form.
    """
    summaries = {}
    for form in ("power", "saturating"):
        forms = dict.fromkeys(FIT_PHASES, form)
        _, summaries[form] = cross_validate(frame, max_folds=max_folds, seed=seed, law_forms=forms, corrector=False)
    cols = ["scheme", "phase", "n", "mape_power", "mape_saturating", "chosen"]
    if not len(summaries["power"]) or not len(summaries["saturating"]):
        return {}, pd.DataFrame(columns=cols)
    both = summaries["power"][["scheme", "phase", "n", "mape_law"]].rename(columns={"mape_law": "mape_power"}).merge(
        summaries["saturating"][["scheme", "phase", "mape_law"]].rename(columns={"mape_law": "mape_saturating"}),
        on=["scheme", "phase"], how="inner")
    schemes = _distinct_schemes(frame)
    chosen: dict[str, str] = {}
    for phase, g in both.groupby("phase", sort=False):
        grouped = g[g["scheme"].isin(schemes)]
        if len(grouped) and grouped["mape_saturating"].mean() < grouped["mape_power"].mean():
            chosen[str(phase)] = "saturating"
        else:
            chosen[str(phase)] = "power"
    both["chosen"] = both["phase"].map(chosen)
    return chosen, both[cols]


def corrector_helps(summary: pd.DataFrame) -> bool:
    """Keep the corrector only where grouped CV shows it helps: a lower MAPE of the total than the
    law alone under every available grouped scheme (leave one family out and leave one GPU out;
    leave one config out when neither exists)."""
    if len(summary) == 0:
        return False
    tot = summary[summary["phase"] == schema.PHASE_TOTAL].set_index("scheme")
    schemes = [s for s in ("lofo", "loho") if s in tot.index] or [s for s in ("loco",) if s in tot.index]
    if not schemes:
        return False
    return all(tot.loc[s, "mape_corrected"] < tot.loc[s, "mape_law"] for s in schemes)


def _abs_log_resid(pred: pd.DataFrame, column: str) -> np.ndarray:
    return np.abs(np.log(pred[column].to_numpy(dtype=float) / pred["measured_j"].to_numpy(dtype=float)))


def interval_widths(pred: pd.DataFrame, *, column: str = "corrected_j") -> dict[str, float]:
    """Log half-widths of the 90% interval per prediction level, from cross-validated residuals
    of the total under the scheme of that level (``column``: the predictor actually served,
    ``corrected_j`` or ``law_j``).

    A level without its own folds borrows the next wider one (and at worst the maximum of all
    held-out residuals). ``unseen_setup`` is the leave-one-setup-out quantile when at least
    :data:`MIN_SETUPS` setups were held out; with fewer it is never narrower than any other level:
    a setup the model has never seen may differ from the training data in every way the schemes
    test."""
    tot = pred[pred["phase"] == schema.PHASE_TOTAL]
    out: dict[str, float] = {}
    for scheme, level in _LEVEL_OF_SCHEME.items():
        g = tot[tot["scheme"] == scheme]
        if len(g):
            out[level] = _conformal_q(_abs_log_resid(g, column))
    every = _abs_log_resid(tot, column) if len(tot) else np.array([])
    fallback = float(every.max()) if len(every) else math.log(2.0)
    order = list(LEVELS)
    for i, level in enumerate(order):
        if level not in out:
            wider = [out[w] for w in order[i + 1:] if w in out]
            out[level] = wider[0] if wider else max([*out.values(), fallback])
    if _setup_floor_applies(tot):
        out[LEVEL_UNSEEN_SETUP] = max(out.values())
    return out


def within_setup_sd(pred: pd.DataFrame, *, column: str = "corrected_j") -> float:
    """The sd of log residuals across the configs of one family in a setup left out (``losetup``
    predictions of the total, each (setup, family)'s own mean removed; NaN without such folds).

    What a calibration's level, measured at some configs of a new setup, misses at its others: the
    prior's within-setup noise for calibration, wider than leave-one-config-out within the training data."""
    g = pred[(pred["phase"] == schema.PHASE_TOTAL) & (pred["scheme"] == "losetup")]
    if len(g) == 0:
        return float("nan")
    r = np.log(g[column].to_numpy(dtype=float) / g["measured_j"].to_numpy(dtype=float))
    key = (_groups(g, "losetup") + "|" + g["model"].astype(str)).to_numpy()
    frame = pd.DataFrame({"key": key, "r": r})
    dev = frame["r"] - frame.groupby("key")["r"].transform("mean")
    dof = len(frame) - frame["key"].nunique()
    return float(math.sqrt((dev**2).sum() / dof)) if dof > 0 else float("nan")


def unseen_setup_width(interval: dict[str, float]) -> float:
    """Log half-width for a setup a model has not seen: its ``unseen_setup`` level when fit stored
    it, else the widest level it stored (conservative), else log 2."""
    w = interval.get(LEVEL_UNSEEN_SETUP)
    if isinstance(w, (int, float)) and math.isfinite(w):
        return float(w)
    return widest_width(interval)


def widest_width(interval: dict[str, float]) -> float:
    """The widest log half-width of ``interval`` (the widest the grouped CV measured; log 2 when none)."""
    widths = [v for v in interval.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(max(widths)) if widths else math.log(2.0)


def _setup_floor_applies(tot: pd.DataFrame) -> bool:
    """Too few setups were held out for ``unseen_setup`` to stand on its own quantile."""
    g = tot[tot["scheme"] == "losetup"]
    return len(g) == 0 or _groups(g, "losetup").nunique() < MIN_SETUPS


def interval_coverage(pred: pd.DataFrame, *, column: str = "corrected_j") -> pd.DataFrame:
    """Honest coverage of each level's 90% interval: every held-out group (a family, a GPU, a data
    source; configs for ``known``) is scored against the conformal quantile of the *other*
    groups' residuals, so no point calibrates its own interval.

    Returns one row per level: ``level``, ``scheme``, ``n``, ``n_groups``, ``nominal``,
    ``coverage`` (fraction of held-out totals inside their interval) and ``log_halfwidth``.
    """
    tot = pred[pred["phase"] == schema.PHASE_TOTAL]
    # with too few setups, unseen_setup is served never narrower than the other levels: scored the same way
    floor = max((w for lv, w in interval_widths(pred, column=column).items() if lv != LEVEL_UNSEEN_SETUP),
                default=0.0) if len(tot) and _setup_floor_applies(tot) else 0.0
    rows = []
    for scheme, level in _LEVEL_OF_SCHEME.items():
        g = tot[tot["scheme"] == scheme]
        if len(g) == 0:
            continue
        key = g["run_id"] if scheme == "loco" else _groups(g, scheme)
        r = _abs_log_resid(g, column)
        hits = []
        for k in key.unique():
            mine = (key == k).to_numpy()
            if (~mine).sum() == 0:
                continue
            q = _conformal_q(r[~mine])
            if level == LEVEL_UNSEEN_SETUP:
                q = max(q, floor)
            hits.extend(r[mine] <= q)
        rows.append({"level": level, "scheme": scheme, "n": len(g), "n_groups": int(key.nunique()),
                     "nominal": 1 - ALPHA, "coverage": float(np.mean(hits)) if hits else float("nan"),
                     "log_halfwidth": max(_conformal_q(r), floor) if level == LEVEL_UNSEEN_SETUP
                     else _conformal_q(r)})
    return pd.DataFrame(rows, columns=["level", "scheme", "n", "n_groups", "nominal", "coverage", "log_halfwidth"])


# ============================================================================ per-family law check
def family_laws(frame: pd.DataFrame, phase: str = schema.PHASE_TOTAL) -> pd.DataFrame:
    """The law of each (family, hardware) alone, and how well it predicts a config it has not seen.

    Per group with at least ``MIN_POINTS + 1`` distinct configs: the least-squares slope ``b``
    of ``log E`` on ``log FLOPs`` and its R2 over the group's runs, the FLOPs span (max / min),
    and ``loco_mape``: leave one config out, refit the group's law on the rest, predict the
    held-out config's runs (mean absolute percentage error). A ``weight`` column (noisy runs
    down-weighted, :func:`~mlflow_energy.fit.frame.weigh_noisy`) weighs the fits and the mean
    error. The corrector plays no part: this is the energy law itself, the figure the CPU demo
    is judged by.

    Example:
        >>> import numpy as np
        >>> f = pd.DataFrame({"model": "m", "hardware": "h", "config_hash": list("abcd"),
        ...                   "flops_total": [1e9, 2e9, 4e9, 8e9], "energy_total": [1.0, 2.0, 4.0, 8.0]})
        >>> row = family_laws(f).iloc[0]
        >>> round(float(row["b"]), 3), round(float(row["r2"]), 3), round(float(row["loco_mape"]), 3)
        (1.0, 1.0, 0.0)
    """
    rows = []
    col_e, col_f = f"energy_{phase}", f"flops_{phase}"
    have = frame[(frame[col_e] > 0) & (frame[col_f] > 0)]
    for (fam, hw), g in have.groupby(["model", "hardware"]):
        x, y = np.log(g[col_f].to_numpy(float)), np.log(g[col_e].to_numpy(float))
        w = g["weight"].to_numpy(float) if "weight" in g.columns else np.ones(len(g))
        configs = g["config_hash"].astype(str).to_numpy()
        if len(set(configs)) < MIN_POINTS + 1 or np.ptp(x) <= 0:
            continue
        b, a = np.polyfit(x, y, 1, w=np.sqrt(w))
        resid = y - (a + b * x)
        ss_tot = ((y - y.mean()) ** 2).sum()
        errors, error_w = [], []
        for held in sorted(set(configs)):
            train = configs != held
            if np.ptp(x[train]) <= 0:
                continue
            bt, at = np.polyfit(x[train], y[train], 1, w=np.sqrt(w[train]))
            errors.extend(np.abs(np.exp(at + bt * x[~train] - y[~train]) - 1.0))
            error_w.extend(w[~train])
        rows.append({
            "family": fam, "hardware": hw, "phase": phase, "n": len(g), "configs": len(set(configs)),
            "flops_span": float(np.exp(np.ptp(x))), "b": float(b), "a": float(np.exp(a)),
            "r2": float(1.0 - (resid**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
            "loco_mape": float(np.average(errors, weights=error_w)) if errors else float("nan"),
        })
    return pd.DataFrame(rows, columns=["family", "hardware", "phase", "n", "configs", "flops_span", "b", "a", "r2",
                                       "loco_mape"])
