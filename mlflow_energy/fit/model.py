"""The energy model: per phase, the most specific law available plus a LightGBM residual corrector."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit.features import FEATURES, call_terms, feature_frame, hardware_descriptors_of, with_log_jpf
from mlflow_energy.fit.frame import FIT_PHASES, distinct_rows
from mlflow_energy.fit.law import MIN_LOG_SPREAD, MIN_POINTS, PowerLaw, _stats, fit_line, fit_offsets
from mlflow_energy.fit.saturation import SaturatingLaw, call_intensity, fit_saturating, op_shares
from mlflow_energy.fit.scope import precision_class
from mlflow_energy.schema import SCOPE_TOTAL

CORRECTOR_MIN_ROWS = 8


# Off: scaling the cross-hardware law by each GPU's TDP / peak FLOP/s made leave-one-hardware-out
# worse on the ML.ENERGY data (MAPE 23% -> 40%): boards run below TDP and below peak differently.
# The TDP, FLOP/s and bandwidth stay corrector features.
ROOFLINE_PRIOR = False
STATE_VERSION = 4  # 2: laws on energy per call against FLOPs per call; 3: the saturating law per phase;
# 4: what the model has seen, the time law, idle power, precision offsets
_READABLE_STATES = (2, 3, 4)
#: The forms of the law a phase may use (grouped CV chooses, :func:`~mlflow_energy.fit.result.fit_energy_model`).
LAW_FORMS = ("power", "saturating")


# ============================================================================ the model
@dataclass
class PhaseModel:
    """The laws and the corrector of one phase."""

    phase: str
    group: dict[str, PowerLaw]  # key "family|hardware"
    pooled: dict[str, PowerLaw]  # per hardware, with per-family offsets
    cross: dict[str, PowerLaw]  # per hardware, one intercept
    overall: PowerLaw
    corrector: Any = None  # lightgbm.Booster, its model string (loaded on first use: LightGBM imports
    # scikit-learn and SciPy, seconds of start-up a law-only model never pays) or None
    saturating: SaturatingLaw | None = None  # set: this phase predicts with the saturating law

    @property
    def law_form(self) -> str:
        """``power`` or ``saturating``: the form of the law this phase predicts with."""
        return "power" if self.saturating is None else "saturating"

    def law_of(self, model: str, hardware: str) -> tuple[float, float, bool, str]:
        """``(intercept, slope, add log J/FLOP, level)`` of the most specific law for (model, hardware)."""
        key = f"{model}|{hardware}"
        if key in self.group:
            law = self.group[key]
            return law.log_a, law.b, False, "group"
        if hardware in self.pooled and model in self.pooled[hardware].offsets:
            law = self.pooled[hardware]
            return law.log_a + law.offsets[model], law.b, False, "family_offset"
        if hardware in self.cross:
            law = self.cross[hardware]
            return law.log_a + law.offsets.get(model, 0.0), law.b, False, "hardware"
        return self.overall.log_a + self.overall.offsets.get(model, 0.0), self.overall.b, self.overall.roofline, \
            "overall"

    def base_vec(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Log energy per image of the law for every row: ``log e_call(f_call) + log calls``.

        One law lookup per distinct (family, hardware); see :func:`call_terms`. With the
        saturating law the frame needs ``log_peak`` (:func:`~mlflow_energy.fit.features.with_log_jpf`);
        an ``energy_source`` column selects a known setup's own saturation and levels.
        """
        x, log_calls = call_terms(frame, self.phase)
        if self.saturating is not None:
            attention, conv = op_shares(frame, self.phase)
            src = frame["energy_source"].fillna("").to_numpy(dtype=object) if "energy_source" in frame.columns else None
            log_e, names = self.saturating.log_predict(
                x, models=frame["model"].to_numpy(dtype=object), hardware=frame["hardware"].to_numpy(dtype=object),
                log_peak=frame["log_peak"].to_numpy(dtype=float), attention=attention, conv=conv,
                log_jpf=frame["log_jpf"].to_numpy(dtype=float) if "log_jpf" in frame.columns else None, sources=src,
                intensity=call_intensity(frame, self.phase))
            return log_e + log_calls, list(names)
        jpf = frame["log_jpf"].to_numpy(dtype=float) if "log_jpf" in frame.columns else np.full(len(frame), np.nan)
        codes, uniq = pair_codes(frame["model"], frame["hardware"])
        laws = [self.law_of(m, h) for m, h in uniq]
        a = np.array([law[0] for law in laws], dtype=float)[codes]
        b = np.array([law[1] for law in laws], dtype=float)[codes]
        roof = np.array([law[2] for law in laws], dtype=bool)[codes] & np.isfinite(jpf)
        levels = np.array([law[3] for law in laws], dtype=object)[codes]
        return a + b * x + np.where(roof, jpf, 0.0) + log_calls, list(levels)

    def correction(self, features: pd.DataFrame) -> np.ndarray:
        if self.corrector is None or len(features) == 0:
            return np.zeros(len(features))
        if isinstance(self.corrector, str):
            import lightgbm as lgb

            self.corrector = lgb.Booster(model_str=self.corrector)
        return np.asarray(self.corrector.predict(features[list(FEATURES)].to_numpy(dtype=float)), dtype=float)


def pair_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Codes of the distinct ``(a, b)`` pairs per row and the pairs (cheaper than a MultiIndex)."""
    codes, first = distinct_rows(a, b)
    av, bv = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    return codes, [(str(av[i]), str(bv[i])) for i in first]


def _lgb_params(n: int, seed: int) -> dict[str, Any]:
    return {
        "objective": "regression", "learning_rate": 0.05, "num_leaves": 8, "max_depth": 4,
        "min_data_in_leaf": max(2, min(20, n // 10)), "min_data_in_bin": 1, "lambda_l2": 1.0,
        "feature_fraction": 0.9, "bagging_fraction": 1.0, "verbosity": -1, "seed": seed,
        "deterministic": True, "num_threads": 1, "force_row_wise": True,
        # linear leaves: a little better on held-out configs of the ML.ENERGY data (LOCO MAPE 5.0% -> 4.0%)
        "linear_tree": True, "linear_lambda": 1.0,
    }


def fit_phase(frame: pd.DataFrame, features: pd.DataFrame, phase: str, *, n_boot: int = 0,
              n_estimators: int = 100, seed: int = 0, corrector: bool = True, law_form: str = "power"
              ) -> PhaseModel | None:
    """Fit the laws and the corrector of one phase on the rows that carry it (None: no rows).

    ``law_form="saturating"`` predicts with the saturating law where it can be fitted (every GPU
    in the spec table, a family whose call size varies); the power laws are fitted either way.
    """
    col = f"energy_{phase}"
    rows = frame[col].notna() & (frame[col] > 0) & frame[f"flops_{phase}"].notna() & (frame[f"flops_{phase}"] > 0)
    df = frame.loc[rows]
    if len(df) < MIN_POINTS:
        return None
    rng = np.random.default_rng(seed)
    # the law is on one call: log(energy per call) against log(FLOPs per call)
    x, log_calls = call_terms(df, phase)
    y = np.log(df[col].to_numpy(dtype=float)) - log_calls
    fams = df["model"].to_numpy(dtype=str)
    hws = df["hardware"].to_numpy(dtype=str)
    # per-run weights: 1, less for the runs the measurement protocol tagged noisy (frame.weigh_noisy)
    w = df["weight"].to_numpy(dtype=float) if "weight" in df.columns else np.ones(len(df))
    groups: dict[str, PowerLaw] = {}
    for (fam, hw), idx in df.groupby(["model", "hardware"]).indices.items():
        if len(idx) >= MIN_POINTS and np.ptp(x[idx]) >= MIN_LOG_SPREAD:
            groups[f"{fam}|{hw}"] = fit_line(x[idx], y[idx], n_boot=n_boot, rng=rng, w=w[idx])
    cross: dict[str, PowerLaw] = {}
    pooled: dict[str, PowerLaw] = {}
    for hw in np.unique(hws):
        m = hws == hw
        if np.ptp(x[m]) >= MIN_LOG_SPREAD and m.sum() >= MIN_POINTS:
            cross[hw] = fit_line(x[m], y[m], n_boot=n_boot, rng=rng, w=w[m])
        else:  # one FLOP count on this GPU: a constant J/FLOP with the overall slope, set below
            cross[hw] = PowerLaw(float("nan"), float("nan"), int(m.sum()), slope_from="overall")
    jpf = df["log_jpf"].to_numpy(dtype=float) if "log_jpf" in df.columns else np.full(len(df), np.nan)
    if ROOFLINE_PRIOR and np.isfinite(jpf).all():
        # every GPU has specs: fit the law of energy over the best-case J/FLOP, so a GPU never seen
        # starts from its own roofline (the corrector refines it)
        overall = fit_line(x, y - jpf, n_boot=n_boot, rng=rng, w=w)
        overall.roofline = True
    else:
        overall = fit_line(x, y, n_boot=n_boot, rng=rng, w=w)
    for hw, law in cross.items():
        if law.slope_from == "overall":
            m = hws == hw
            law.b = overall.b
            law.log_a = float(np.average(y[m] - overall.b * x[m], weights=w[m]))
            _stats(law, x[m], y[m])
        m = hws == hw
        pooled[hw] = fit_offsets(x[m], y[m], fams[m], cross=law, n_boot=n_boot, rng=rng, w=w[m])
    pm = PhaseModel(phase, groups, pooled, cross, overall)
    if law_form == "saturating" and "log_peak" in df.columns:
        attention, conv = op_shares(df, phase)
        pm.saturating = fit_saturating(
            x, y, models=fams, hardware=hws, log_peak=df["log_peak"].to_numpy(dtype=float), attention=attention,
            conv=conv, log_jpf=jpf, w=w, intensity=call_intensity(df, phase),
            sources=df["energy_source"].astype(str).to_numpy() if "energy_source" in df.columns else None)
    if corrector and len(df) >= CORRECTOR_MIN_ROWS:
        import lightgbm as lgb

        base, _ = pm.base_vec(df)
        feats = features.loc[df.index].copy()
        feats["log_base"] = base - log_calls
        resid = y - (base - log_calls)
        ds = lgb.Dataset(feats.to_numpy(dtype=float), label=resid, weight=w, feature_name=list(FEATURES),
                         params={"verbosity": -1, "min_data_in_bin": 1})
        pm.corrector = lgb.train(_lgb_params(len(df), seed), ds, num_boost_round=n_estimators)
    return pm


@dataclass
class EnergyModel:
    """Everything the predictor needs: per-phase laws and correctors, hardware and ranges."""

    phases: dict[str, PhaseModel]
    hardware: dict[str, dict[str, float]]  # canonical name -> descriptors (NaN when unknown)
    families: list[str]
    flops_range: tuple[float, float]
    interval: dict[str, float] = field(default_factory=dict)  # log half-width per prediction level
    sources: list[str] = field(default_factory=list)
    energy_scope: str = SCOPE_TOTAL  # what the predicted joules count (see schema.ENERGY_SCOPES)
    corrector_used: bool = True  # False: grouped CV showed the corrector does not help; the law alone
    #: what the training runs cover (fit.scope.seen_of); empty for a model stored before it was recorded
    seen: dict[str, Any] = field(default_factory=dict)
    #: the law of seconds per image: a law-only model fitted on the runs' times (fit.scope.time_frame)
    time: EnergyModel | None = None
    time_interval: dict[str, float] = field(default_factory=dict)  # its log half-width per prediction level
    idle_w: dict[str, float] = field(default_factory=dict)  # idle watts per hardware (fit.scope.idle_powers)
    idle_source: dict[str, str] = field(default_factory=dict)
    #: log energy offset per precision class (fp32, half) when the runs had more than one; else empty
    precision_offsets: dict[str, float] = field(default_factory=dict)
    #: sd of log residuals across one family's configs in a setup left out (NaN: not measured): how
    #: far a level measured at one config of a new setup carries to its others (calibration's noise)
    within_setup_sd: float = float("nan")

    def precision_shift(self, frame: pd.DataFrame) -> np.ndarray | float:
        """Each row's log offset for its precision class (0 where the model has none)."""
        if not self.precision_offsets or "precision" not in frame.columns:
            return 0.0
        return class_offsets(frame["precision"], self.precision_offsets)

    def log_predict_time(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Log seconds per image of each row from the time law (None: the model has no time law)."""
        if self.time is None:
            return None
        _, law = self.time.log_predict_both(frame)
        return law[schema.PHASE_TOTAL]

    # ------------------------------------------------------------------ prediction
    def log_predict_both(self, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(corrected, law only)`` log energy per phase (the corrected one is the law when the
        corrector is off), computing the features once. A ``log_jpf`` column, when present, is used
        as it is (the predictor computes it with the caller's extra hardware)."""
        if "log_jpf" not in frame.columns:
            frame = with_log_jpf(frame, self.hardware)
        feats = feature_frame(frame, self.hardware) if self.corrector_used else None
        cor: dict[str, np.ndarray] = {}
        law: dict[str, np.ndarray] = {}
        shift = self.precision_shift(frame)
        for phase, pm in self.phases.items():
            base, _ = pm.base_vec(frame)
            base = base + shift
            law[phase] = base
            if feats is not None and pm.corrector is not None:
                feats["log_base"] = base - call_terms(frame, phase)[1]
                cor[phase] = base + pm.correction(feats)
            else:
                cor[phase] = base
        return cor, law

    def log_predict(self, frame: pd.DataFrame, *, corrected: bool = True) -> tuple[dict[str, np.ndarray], list[str]]:
        """Log energy per phase for rows with ``flops_*`` columns and canonical ``hardware``.

        Returns ``({phase: log J}, level per row of the total)``. ``corrected=True`` applies the
        corrector even when :attr:`corrector_used` is False (cross-validation compares both).
        """
        frame = with_log_jpf(frame, self.hardware)
        feats = feature_frame(frame, self.hardware)
        out: dict[str, np.ndarray] = {}
        levels: list[str] = ["overall"] * len(frame)
        shift = self.precision_shift(frame)
        for phase, pm in self.phases.items():
            base, lv = pm.base_vec(frame)
            base = base + shift
            feats["log_base"] = base - call_terms(frame, phase)[1]
            out[phase] = base + (pm.correction(feats) if corrected else 0.0)
            if phase == schema.PHASE_TOTAL:
                levels = lv
        return out, levels

    def level_of(self, model: str, hardware: str) -> str:
        """``known`` (family seen on this hardware), ``unseen_family`` or ``unseen_hardware``."""
        total = self.phases[schema.PHASE_TOTAL]
        if hardware not in total.cross:
            return "unseen_hardware"
        if f"{model}|{hardware}" in total.group or model in total.pooled.get(hardware, PowerLaw(0, 0, 0)).offsets:
            return "known"
        return "unseen_family"

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> str:
        state = {
            "version": STATE_VERSION,
            "features": list(FEATURES),
            "hardware": {k: {kk: (None if not math.isfinite(vv) else vv) for kk, vv in v.items()}
                         for k, v in self.hardware.items()},
            "families": self.families,
            "flops_range": list(self.flops_range),
            "interval": self.interval,
            "sources": self.sources,
            "energy_scope": self.energy_scope,
            "corrector_used": self.corrector_used,
            "phases": {p: _phase_to_dict(pm) for p, pm in self.phases.items()},
            "seen": self.seen,
            "time": self.time.to_json() if self.time is not None else None,
            "time_interval": self.time_interval,
            "idle_w": self.idle_w,
            "idle_source": self.idle_source,
            "precision_offsets": self.precision_offsets,
            "within_setup_sd": self.within_setup_sd if math.isfinite(self.within_setup_sd) else None,
        }
        return json.dumps(state)

    @classmethod
    def from_json(cls, text: str) -> EnergyModel:
        state = json.loads(text)
        if state.get("version") not in _READABLE_STATES:
            raise ConfigError("model state version", state.get("version"), " or ".join(map(str, _READABLE_STATES)) + ": refit with this release")
        phases = {p: _phase_from_dict(p, d) for p, d in state["phases"].items()}
        hardware = {k: {kk: (float("nan") if vv is None else vv) for kk, vv in v.items()}
                    for k, v in state["hardware"].items()}
        return cls(phases, hardware, state["families"], tuple(state["flops_range"]), state["interval"],
                   state.get("sources", []), state.get("energy_scope", SCOPE_TOTAL),
                   bool(state.get("corrector_used", True)), dict(state.get("seen") or {}),
                   EnergyModel.from_json(state["time"]) if state.get("time") else None,
                   dict(state.get("time_interval") or {}), dict(state.get("idle_w") or {}),
                   dict(state.get("idle_source") or {}), dict(state.get("precision_offsets") or {}),
                   float(state["within_setup_sd"]) if state.get("within_setup_sd") is not None else float("nan"))


def _phase_to_dict(pm: PhaseModel) -> dict[str, Any]:
    def laws(d: dict[str, PowerLaw]) -> dict[str, Any]:
        return {k: v.to_dict() for k, v in d.items()}

    return {
        "group": laws(pm.group), "pooled": laws(pm.pooled), "cross": laws(pm.cross), "overall": pm.overall.to_dict(),
        "saturating": pm.saturating.to_dict() if pm.saturating is not None else None,
        "corrector": (pm.corrector if isinstance(pm.corrector, str) or pm.corrector is None
                      else pm.corrector.model_to_string()),
    }


def _phase_from_dict(phase: str, d: dict[str, Any]) -> PhaseModel:
    return PhaseModel(
        phase,
        {k: PowerLaw.from_dict(v) for k, v in d["group"].items()},
        {k: PowerLaw.from_dict(v) for k, v in d["pooled"].items()},
        {k: PowerLaw.from_dict(v) for k, v in d["cross"].items()},
        PowerLaw.from_dict(d["overall"]),
        d["corrector"] or None,  # the model string: a Booster on first use
        SaturatingLaw.from_dict(d["saturating"]) if d.get("saturating") else None,
    )


def fit_core(frame: pd.DataFrame, *, n_boot: int = 0, n_estimators: int = 100, seed: int = 0,
             corrector: bool = True, law_forms: dict[str, str] | None = None) -> EnergyModel:
    """Fit laws and correctors on ``frame`` (rows with ``flops_*`` columns); no cross-validation.

    ``law_forms`` maps a phase to the form of its law (:data:`LAW_FORMS`; ``power`` where missing).
    """
    hw = hardware_descriptors_of(sorted(frame["hardware"].unique()))
    frame = with_log_jpf(frame, hw)
    offsets = precision_offsets(frame)
    if offsets:  # the laws fit energy at the reference precision; the offsets carry the rest
        shift = np.exp(class_offsets(frame["precision"], offsets))
        frame = frame.assign(**{f"energy_{p}": frame[f"energy_{p}"] / shift for p in FIT_PHASES})
    feats = feature_frame(frame, hw)
    phases: dict[str, PhaseModel] = {}
    for phase in FIT_PHASES:
        pm = fit_phase(frame, feats, phase, n_boot=n_boot, n_estimators=n_estimators, seed=seed, corrector=corrector,
                       law_form=(law_forms or {}).get(phase, "power"))
        if pm is not None:
            phases[phase] = pm
    if schema.PHASE_TOTAL not in phases:
        raise ConfigError("runs", len(frame), f"at least {MIN_POINTS} runs with a positive energy/total_j")
    ft = frame["flops_total"].astype(float)
    return EnergyModel(phases, hw, sorted(frame["model"].unique()), (float(ft.min()), float(ft.max())),
                       sources=sorted(frame["energy_source"].unique()), precision_offsets=offsets)


def class_offsets(precision: pd.Series, offsets: dict[str, float]) -> np.ndarray:
    """Each row's log offset for its precision class (0 for a class without one)."""
    return precision.map(precision_class).map(offsets).fillna(0.0).to_numpy(dtype=float)


def precision_offsets(frame: pd.DataFrame) -> dict[str, float]:
    """Log energy offset of each precision class against the reference (``fp32`` if present), or
    ``{}`` when the runs have one class.

    Measured where it can be told from everything else: the mean log residual of the denoiser's
    law (the total's where runs carry no phases) per class, differenced within each (family, hardware) that ran both classes and averaged over
    them (weighted by the smaller count); where no group ran both, the classes' overall difference.
    The law is refitted on the adjusted energies and the residuals measured again (three rounds:
    a class that ran other sizes or steps than the reference biases the first law's slope).
    """
    classes = frame["precision"].map(precision_class)
    names = sorted(set(classes))
    if len(names) < 2:
        return {}
    ref = "fp32" if "fp32" in names else names[0]
    out = dict.fromkeys(names, 0.0)
    # the denoiser's law where the runs carry it (one call per step, the bulk of the work); the
    # total's law mixes phases that scale differently with steps, which biases the offset
    col = f"energy_{schema.PHASE_DENOISE}"
    phase = schema.PHASE_DENOISE if col in frame.columns and (frame[col] > 0).all() else schema.PHASE_TOTAL
    log_e = np.log(frame[f"energy_{phase}"].to_numpy(dtype=float))
    groups = frame.groupby(["model", "hardware"]).groups
    for _ in range(3):
        shift = classes.map(out).to_numpy(dtype=float)
        adjusted = frame.assign(**{f"energy_{phase}": np.exp(log_e - shift)})
        pm = fit_phase(adjusted, adjusted, phase, corrector=False)
        if pm is None:
            return {}
        base, _ = pm.base_vec(adjusted)
        resid = pd.Series(log_e - base, index=frame.index)
        for cls in names:
            if cls == ref:
                continue
            diffs, weights = [], []
            for g in groups.values():
                a, b = resid[g][classes[g] == cls], resid[g][classes[g] == ref]
                if len(a) and len(b):
                    diffs.append(a.mean() - b.mean())
                    weights.append(min(len(a), len(b)))
            out[cls] = float(np.average(diffs, weights=weights)) if diffs else \
                float(resid[classes == cls].mean() - resid[classes == ref].mean())
    return out
