"""Fit the energy scaling law from measurement runs: power law per phase, a LightGBM residual
corrector, grouped cross-validation and plots.

Per phase (``text_encode``, ``denoise``, ``decode`` and the whole-pipeline ``total``) the law is
``log E = log a + b log FLOPs`` (natural logs, joules and FLOP per image), fitted

- per (family, hardware) group (slope with a bootstrap confidence interval, R2, MAPE);
- pooled per hardware with a per-family offset (the slope shared by the families);
- pooled per hardware with one intercept (the cross-family law an unseen family gets);
- pooled over everything (the law an unseen GPU gets, before the corrector).

A prediction uses the most specific law available for its (family, hardware), then the corrector
adds what the law misses (batch size, precision, memory-bound shapes, hardware) from features
that carry over to unseen families and GPUs. Cross-validation refits everything per fold:
leave-one-config-out within (family, hardware), leave-one-family-out, leave-one-hardware-out.

Example:
    >>> from mlflow_energy.fit import FIT_PHASES, fit_energy_model, runs_frame
    >>> FIT_PHASES
    ('text_encode', 'denoise', 'decode', 'total')
    >>> result = fit_energy_model(runs_frame("mlenergy"))  # doctest: +SKIP
    >>> print(result.cv_summary)                          # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError

FIT_PHASES: tuple[str, ...] = (*schema.PHASES, schema.PHASE_TOTAL)
MIN_POINTS = 3
MIN_LOG_SPREAD = 0.05  # a group whose log-FLOPs span less than this has no slope to fit
ALPHA = 0.10  # 90% prediction interval
CORRECTOR_MIN_ROWS = 8
# Off: scaling the cross-hardware law by each GPU's TDP / peak FLOP/s made leave-one-hardware-out
# worse on the ML.ENERGY data (MAPE 23% -> 40%): boards run below TDP and below peak differently.
# The TDP, FLOP/s and bandwidth stay corrector features.
ROOFLINE_PRIOR = False
STATE_VERSION = 1

# Features of the corrector: none names a family or a GPU, so they carry over to unseen ones.
FEATURES: tuple[str, ...] = (
    "log_flops_text_encode", "log_flops_denoise", "log_flops_decode", "log_flops_total", "log_base",
    "steps", "log_pixels", "log_batch_size", "cfg", "guidance_scale", "precision_bits", "precision_bf16",
    "log_denoiser_params", "log_text_encoder_params", "log_vae_params", "text_tokens", "image_tokens",
    "hw_tdp_w", "hw_tflops", "hw_mem_bw_gb_s",
)
PRECISION_BITS = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0}
INPUT_COLUMNS = ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size")


# ============================================================================ reading runs
def _col(df: pd.DataFrame, name: str, prefix: str) -> pd.Series | None:
    keys = [name, f"{prefix}.{name}"]
    if name.startswith(schema.TAG_PREFIX):  # tracking.load_runs drops the tag prefix
        keys.append(name[len(schema.TAG_PREFIX):])
    for key in keys:
        if key in df.columns:
            return df[key]
    return None


def source_category(source: str) -> str:
    """What may be fitted together: every Zeus counter is one category; each estimate method and
    each external dataset is its own."""
    source = str(source or "unknown")
    return "zeus" if source.startswith("zeus:") else source


def normalise_runs(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per run with the columns the fit uses, from ``mlflow.search_runs`` output
    (``params.*``/``metrics.*``/``tags.*``) or from a frame already keyed by schema names.

    Output columns: ``run_id``, the predictor inputs (``model`` ... ``batch_size``), ``hardware``
    (canonical name), ``hardware_raw``, ``energy_source``, ``config_hash``, ``energy_<phase>``
    (J per image, NaN where the run does not carry the phase).
    """
    from mlflow_energy.measure.hardware import canonical_hardware

    out = pd.DataFrame(index=raw.index)
    out["run_id"] = raw["run_id"] if "run_id" in raw.columns else [f"row{i}" for i in range(len(raw))]
    for name in (schema.P_MODEL, schema.P_PRECISION):
        col = _col(raw, name, "params")
        if col is None:
            raise ConfigError(name, None, f"runs that carry the param '{name}' (see the run schema)")
        out[name] = col.astype(str)
    for name in (schema.P_HEIGHT, schema.P_WIDTH, schema.P_STEPS, schema.P_BATCH_SIZE):
        col = _col(raw, name, "params")
        if col is None:
            raise ConfigError(name, None, f"runs that carry the param '{name}' (see the run schema)")
        out[name] = pd.to_numeric(col, errors="coerce")
    g = _col(raw, schema.P_GUIDANCE_SCALE, "params")
    out["guidance_scale"] = pd.to_numeric(g, errors="coerce") if g is not None else np.nan
    hw = _col(raw, schema.T_HARDWARE, "tags")
    out["hardware_raw"] = hw.astype(str) if hw is not None else "unknown"
    out["hardware"] = [canonical_hardware(h) for h in out["hardware_raw"]]
    src = _col(raw, schema.T_ENERGY_SOURCE, "tags")
    out["energy_source"] = src.astype(str) if src is not None else "unknown"
    ch = _col(raw, schema.T_CONFIG_HASH, "tags")
    out["config_hash"] = ch.astype(str) if ch is not None else out["run_id"]
    for phase in FIT_PHASES:
        col = _col(raw, schema.energy_key(phase), "metrics")
        out[f"energy_{phase}"] = pd.to_numeric(col, errors="coerce") if col is not None else np.nan
    phase_sum = out[[f"energy_{p}" for p in schema.PHASES]].sum(axis=1, min_count=len(schema.PHASES))
    out["energy_total"] = out["energy_total"].fillna(phase_sum)
    for phase in schema.FLOPS_PHASES:
        col = _col(raw, schema.flops_key(phase), "metrics")
        out[f"logged_flops_{phase}"] = pd.to_numeric(col, errors="coerce") if col is not None else np.nan
    bad = out[["height", "width", "steps", "batch_size"]].isna().any(axis=1) | ~(out["energy_total"] > 0)
    out = out.loc[~bad].copy()
    for name in ("height", "width", "steps", "batch_size"):
        out[name] = out[name].astype(int)
    return out.reset_index(drop=True)


def runs_frame(experiment: str, *, kinds: Sequence[str] = (schema.KIND_MEASUREMENT,)) -> pd.DataFrame:
    """Read FINISHED measurement runs of ``experiment`` back as the fit's frame.

    Uses ``mlflow_energy.tracking.load_runs`` when that module is installed, else
    ``mlflow.search_runs``; see :func:`normalise_runs` for the columns.

    Raises:
        ConfigError: when the experiment does not exist or holds no measurement runs.
    """
    import mlflow

    raw: pd.DataFrame | None = None
    try:
        from mlflow_energy.tracking import load_runs  # type: ignore[attr-defined]
    except ImportError:
        load_runs = None
    if load_runs is not None:
        raw = load_runs(experiment, kinds=tuple(kinds), status="FINISHED")
    else:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            raise ConfigError("experiment", experiment, "the name of an existing MLflow experiment")
        kinds_sql = ", ".join(f"'{k}'" for k in kinds)
        raw = mlflow.search_runs(
            experiment_ids=[exp.experiment_id],
            filter_string=f"tags.`{schema.T_KIND}` IN ({kinds_sql}) AND attributes.status = 'FINISHED'",
            max_results=100_000,
        )
        raw = raw.rename(columns={"run_id": "run_id"})
    if raw is None or len(raw) == 0:
        raise ConfigError("experiment", experiment, "an experiment with FINISHED measurement runs")
    return normalise_runs(raw)


def check_sources(frame: pd.DataFrame, *, allow_mixed: bool = False) -> list[str]:
    """The energy sources in ``frame``; refuse to mix categories unless ``allow_mixed``.

    Raises:
        ConfigError: when runs of a Zeus measurement, an estimate or an external dataset are mixed.
    """
    sources = sorted(set(frame["energy_source"]))
    cats = sorted({source_category(s) for s in sources})
    if len(cats) > 1 and not allow_mixed:
        raise ConfigError(
            "energy_source", ", ".join(sources),
            "runs of one energy source (filter the runs, or pass --allow-mixed-sources to fit them together)",
        )
    return sources


# ============================================================================ features
@functools.cache
def architecture_descriptors(model: str) -> dict[str, float]:
    """Parameter counts (counted on the meta device) and token counts of a family.

    Example:
        >>> from mlflow_energy.fit import architecture_descriptors
        >>> d = architecture_descriptors("sd2")
        >>> round(d["denoiser_params"] / 1e9, 2), d["text_tokens"]
        (0.87, 77.0)
    """
    from mlflow_energy.families import get_family
    from mlflow_energy.families._build import build_on_meta

    fam = get_family(model)
    params = {"denoiser": 0, "text_encoder": 0, "vae": 0}
    for comp, spec in fam.components.items():
        if not isinstance(spec, dict) and not hasattr(spec, "get"):
            continue
        if "class" not in spec:
            continue
        module = build_on_meta(spec["class"], dict(spec["config"]))
        n = sum(p.numel() for p in module.parameters())
        kind = "denoiser" if comp in ("unet", "transformer") else "text_encoder" if comp.startswith("text_encoder") else (
            "vae" if comp == "vae" else None)
        if kind:
            params[kind] += n
    text_tokens = float(sum(v for v in fam.text_lengths.values() if isinstance(v, int)))
    return {
        "denoiser_params": float(params["denoiser"]),
        "text_encoder_params": float(params["text_encoder"]),
        "vae_params": float(params["vae"]),
        "text_tokens": text_tokens,
    }


def compute_flops(frame: pd.DataFrame) -> pd.DataFrame:
    """``flops_<phase>`` columns (FLOP per image) from the analytical module.

    Falls back to the logged ``flops/*`` metrics for rows the analytical module cannot count.
    """
    from mlflow_energy.flops import flops_frame

    cols = ["model", "height", "width", "steps", "guidance_scale", "batch_size"]
    out = frame.copy()
    try:
        counted = flops_frame(frame[cols].copy())
        for phase in schema.FLOPS_PHASES:
            out[f"flops_{phase}"] = counted[f"flops_{phase}"].to_numpy(dtype=float)
    except ConfigError:
        rows = []
        for _, row in frame[cols].iterrows():
            try:
                r = flops_frame(pd.DataFrame([row]))
                rows.append({p: float(r[f"flops_{p}"].iloc[0]) for p in schema.FLOPS_PHASES})
            except ConfigError:
                rows.append({p: np.nan for p in schema.FLOPS_PHASES})
        for phase in schema.FLOPS_PHASES:
            out[f"flops_{phase}"] = [r[phase] for r in rows]
    for phase in schema.FLOPS_PHASES:
        logged = f"logged_flops_{phase}"
        if logged in out.columns:
            out[f"flops_{phase}"] = out[f"flops_{phase}"].fillna(out[logged])
    return out


def _image_tokens(model: str, height: int, width: int) -> float:
    from mlflow_energy.families import get_family

    fam = get_family(model)
    step = fam.latent_downsample * (fam.patch_size or 1)
    return float((height // step) * (width // step))


def feature_frame(frame: pd.DataFrame, hardware_descriptors: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The corrector's features (see :data:`FEATURES`) for rows that carry ``flops_*`` columns.

    ``log_base`` is left for the caller (it depends on the law used for the row).
    """
    from mlflow_energy.families import get_family

    f = pd.DataFrame(index=frame.index)
    for phase in FIT_PHASES:
        f[f"log_flops_{phase}"] = np.log(frame[f"flops_{phase}"].astype(float).clip(lower=1.0))
    f["log_base"] = np.nan
    f["steps"] = frame["steps"].astype(float)
    f["log_pixels"] = np.log(frame["height"].astype(float) * frame["width"].astype(float))
    f["log_batch_size"] = np.log(frame["batch_size"].astype(float))
    cfg = []
    for model, g in zip(frame["model"], frame["guidance_scale"], strict=True):
        fam = get_family(model)
        cfg.append(1.0 if fam.uses_cfg(None if pd.isna(g) else float(g)) else 0.0)
    f["cfg"] = cfg
    f["guidance_scale"] = frame["guidance_scale"].astype(float)
    f["precision_bits"] = frame["precision"].map(PRECISION_BITS).astype(float)
    f["precision_bf16"] = (frame["precision"] == "bf16").astype(float)
    desc = {m: architecture_descriptors(m) for m in frame["model"].unique()}
    f["log_denoiser_params"] = np.log1p([desc[m]["denoiser_params"] for m in frame["model"]])
    f["log_text_encoder_params"] = np.log1p([desc[m]["text_encoder_params"] for m in frame["model"]])
    f["log_vae_params"] = np.log1p([desc[m]["vae_params"] for m in frame["model"]])
    f["text_tokens"] = [desc[m]["text_tokens"] for m in frame["model"]]
    f["image_tokens"] = [
        _image_tokens(m, int(h), int(w)) for m, h, w in zip(frame["model"], frame["height"], frame["width"], strict=True)
    ]
    nan = {"hw_tdp_w": np.nan, "hw_tflops": np.nan, "hw_mem_bw_gb_s": np.nan}
    for key in nan:
        f[key] = [hardware_descriptors.get(h, nan).get(key, np.nan) for h in frame["hardware"]]
    return f[list(FEATURES)].astype(float)


def with_log_jpf(frame: pd.DataFrame, hardware: dict[str, dict[str, float]]) -> pd.DataFrame:
    """``frame`` plus ``log_jpf``: log of the GPU's best-case J/FLOP (TDP / peak), NaN when unknown."""
    nan = float("nan")
    jpf = [math.log(d["hw_tdp_w"] / (d["hw_tflops"] * 1e12))
           if (d := hardware.get(h)) and d.get("hw_tdp_w", nan) > 0 and d.get("hw_tflops", nan) > 0 else nan
           for h in frame["hardware"]]
    return frame.assign(log_jpf=jpf)


def hardware_descriptors_of(names: Iterable[str]) -> dict[str, dict[str, float]]:
    """Spec-table descriptors of canonical hardware names (NaN for hardware not in the table)."""
    from mlflow_energy.measure.hardware import find_gpu

    out = {}
    for name in names:
        spec = find_gpu(name)
        out[name] = spec.descriptors() if spec else {"hw_tdp_w": np.nan, "hw_tflops": np.nan, "hw_mem_bw_gb_s": np.nan}
    return out


# ============================================================================ power laws
@dataclass
class PowerLaw:
    """``log E = log_a + b log FLOPs`` (natural logs) with its fit statistics."""

    log_a: float
    b: float
    n: int
    r2: float = float("nan")
    mape: float = float("nan")
    b_low: float = float("nan")
    b_high: float = float("nan")
    offsets: dict[str, float] = field(default_factory=dict)  # per-family offsets (pooled fits)
    slope_from: str = "fit"
    roofline: bool = False  # energy was divided by the GPU's J/FLOP at TDP before the fit

    def log_predict(self, log_flops: np.ndarray, family: str | None = None) -> np.ndarray:
        return self.log_a + self.offsets.get(family, 0.0) + self.b * np.asarray(log_flops, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PowerLaw:
        d = {k: (float("nan") if v is None else v) for k, v in d.items()}
        return cls(**d)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    b = float(((x - xm) * (y - ym)).sum() / sxx) if sxx > 0 else 0.0
    return float(ym - b * xm), b


def _bootstrap_slope(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% interval of the OLS slope over case-resampling (vectorised with weights)."""
    n = len(x)
    if n_boot <= 0 or n < MIN_POINTS:
        return float("nan"), float("nan")
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    sw = w.sum(axis=1)
    xm = (w * x).sum(axis=1) / sw
    ym = (w * y).sum(axis=1) / sw
    sxx = (w * (x - xm[:, None]) ** 2).sum(axis=1)
    sxy = (w * (x - xm[:, None]) * (y - ym[:, None])).sum(axis=1)
    ok = sxx > 1e-12
    if ok.sum() < 10:
        return float("nan"), float("nan")
    b = sxy[ok] / sxx[ok]
    return float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))


def _stats(law: PowerLaw, x: np.ndarray, y: np.ndarray, fams: np.ndarray | None = None) -> None:
    pred = law.log_a + law.b * x
    if fams is not None:
        pred = pred + np.array([law.offsets.get(f, 0.0) for f in fams])
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    law.r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    law.mape = float(np.mean(np.abs(np.exp(pred - y) - 1.0)))


def fit_line(x: np.ndarray, y: np.ndarray, *, n_boot: int = 0, rng: np.random.Generator | None = None) -> PowerLaw:
    """OLS of ``y`` (log energy) on ``x`` (log FLOPs) with a bootstrap slope interval.

    Example:
        >>> import numpy as np
        >>> from mlflow_energy.fit import fit_line
        >>> x = np.log([1e12, 2e12, 4e12, 8e12]); law = fit_line(x, np.log(3e-12) + 0.9 * x)
        >>> round(law.b, 3), round(law.r2, 3)
        (0.9, 1.0)
    """
    log_a, b = _ols(x, y)
    law = PowerLaw(log_a, b, len(x))
    law.b_low, law.b_high = _bootstrap_slope(x, y, n_boot, rng or np.random.default_rng(0))
    _stats(law, x, y)
    return law


def fit_offsets(x: np.ndarray, y: np.ndarray, fams: np.ndarray, *, cross: PowerLaw, n_boot: int = 0,
                rng: np.random.Generator | None = None) -> PowerLaw:
    """Pooled law with a per-family offset: the slope comes from within-family variation of FLOPs.

    When no family's FLOPs vary, the slope is the cross-family one (``slope_from="cross_family"``)
    and the offsets are each family's mean residual from it.
    """
    x_c = x.copy()
    y_c = y.copy()
    within = 0.0
    for fam in np.unique(fams):
        m = fams == fam
        within += float(((x[m] - x[m].mean()) ** 2).sum())
        x_c[m] -= x[m].mean()
        y_c[m] -= y[m].mean()
    if within > MIN_LOG_SPREAD**2:
        b = float((x_c * y_c).sum() / (x_c**2).sum())
        slope_from = "within_family"
    else:
        b = cross.b
        slope_from = "cross_family"
    # intercept: the cross-family intercept; offsets: each family's mean residual around it
    log_a = float(np.mean(y - b * x))
    offsets = {str(f): float(np.mean(y[fams == f] - b * x[fams == f]) - log_a) for f in np.unique(fams)}
    law = PowerLaw(log_a, b, len(x), offsets=offsets, slope_from=slope_from)
    if n_boot > 0 and slope_from == "within_family":
        rng = rng or np.random.default_rng(0)
        w = rng.multinomial(len(x), np.full(len(x), 1.0 / len(x)), size=n_boot).astype(float)
        slopes = []
        for wi in w:
            xc = x.copy()
            yc = y.copy()
            for fam in np.unique(fams):
                m = fams == fam
                sw = wi[m].sum()
                if sw == 0:
                    continue
                xc[m] -= (wi[m] * x[m]).sum() / sw
                yc[m] -= (wi[m] * y[m]).sum() / sw
            sxx = (wi * xc**2).sum()
            if sxx > 1e-12:
                slopes.append((wi * xc * yc).sum() / sxx)
        if len(slopes) >= 10:
            law.b_low, law.b_high = float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))
    _stats(law, x, y, fams)
    return law


# ============================================================================ the model
@dataclass
class PhaseModel:
    """The laws and the corrector of one phase."""

    phase: str
    group: dict[str, PowerLaw]  # key "family|hardware"
    pooled: dict[str, PowerLaw]  # per hardware, with per-family offsets
    cross: dict[str, PowerLaw]  # per hardware, one intercept
    overall: PowerLaw
    corrector: Any = None  # lightgbm.Booster or None

    def base(self, model: str, hardware: str, log_flops: float, log_jpf: float = float("nan")) -> tuple[float, str]:
        key = f"{model}|{hardware}"
        if key in self.group:
            return float(self.group[key].log_predict(log_flops)), "group"
        if hardware in self.pooled and model in self.pooled[hardware].offsets:
            return float(self.pooled[hardware].log_predict(log_flops, model)), "family_offset"
        if hardware in self.cross:
            return float(self.cross[hardware].log_predict(log_flops)), "hardware"
        shift = log_jpf if self.overall.roofline and math.isfinite(log_jpf) else 0.0
        return float(self.overall.log_predict(log_flops)) + shift, "overall"

    def base_vec(self, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        x = np.log(frame[f"flops_{self.phase}"].astype(float).clip(lower=1.0)).to_numpy()
        jpf = frame["log_jpf"].to_numpy(dtype=float) if "log_jpf" in frame.columns else np.full(len(frame), np.nan)
        out = [self.base(m, h, xi, j) for m, h, xi, j in zip(frame["model"], frame["hardware"], x, jpf, strict=True)]
        return np.array([o[0] for o in out]), [o[1] for o in out]

    def correction(self, features: pd.DataFrame) -> np.ndarray:
        if self.corrector is None or len(features) == 0:
            return np.zeros(len(features))
        return np.asarray(self.corrector.predict(features[list(FEATURES)].to_numpy(dtype=float)), dtype=float)


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
              n_estimators: int = 100, seed: int = 0, corrector: bool = True) -> PhaseModel | None:
    """Fit the laws and the corrector of one phase on the rows that carry it (None: no rows)."""
    col = f"energy_{phase}"
    rows = frame[col].notna() & (frame[col] > 0) & frame[f"flops_{phase}"].notna() & (frame[f"flops_{phase}"] > 0)
    df = frame.loc[rows]
    if len(df) < MIN_POINTS:
        return None
    rng = np.random.default_rng(seed)
    x = np.log(df[f"flops_{phase}"].to_numpy(dtype=float))
    y = np.log(df[col].to_numpy(dtype=float))
    fams = df["model"].to_numpy(dtype=str)
    hws = df["hardware"].to_numpy(dtype=str)
    groups: dict[str, PowerLaw] = {}
    for (fam, hw), idx in df.groupby(["model", "hardware"]).indices.items():
        if len(idx) >= MIN_POINTS and np.ptp(x[idx]) >= MIN_LOG_SPREAD:
            groups[f"{fam}|{hw}"] = fit_line(x[idx], y[idx], n_boot=n_boot, rng=rng)
    cross: dict[str, PowerLaw] = {}
    pooled: dict[str, PowerLaw] = {}
    for hw in np.unique(hws):
        m = hws == hw
        if np.ptp(x[m]) >= MIN_LOG_SPREAD and m.sum() >= MIN_POINTS:
            cross[hw] = fit_line(x[m], y[m], n_boot=n_boot, rng=rng)
        else:  # one FLOP count on this GPU: a constant J/FLOP with the overall slope, set below
            cross[hw] = PowerLaw(float("nan"), float("nan"), int(m.sum()), slope_from="overall")
    jpf = df["log_jpf"].to_numpy(dtype=float) if "log_jpf" in df.columns else np.full(len(df), np.nan)
    if ROOFLINE_PRIOR and np.isfinite(jpf).all():
        # every GPU has specs: fit the law of energy over the best-case J/FLOP, so a GPU never seen
        # starts from its own roofline (the corrector refines it)
        overall = fit_line(x, y - jpf, n_boot=n_boot, rng=rng)
        overall.roofline = True
    else:
        overall = fit_line(x, y, n_boot=n_boot, rng=rng)
    for hw, law in cross.items():
        if law.slope_from == "overall":
            m = hws == hw
            law.b = overall.b
            law.log_a = float(np.mean(y[m] - overall.b * x[m]))
            _stats(law, x[m], y[m])
        m = hws == hw
        pooled[hw] = fit_offsets(x[m], y[m], fams[m], cross=law, n_boot=n_boot, rng=rng)
    pm = PhaseModel(phase, groups, pooled, cross, overall)
    if corrector and len(df) >= CORRECTOR_MIN_ROWS:
        import lightgbm as lgb

        base, _ = pm.base_vec(df)
        feats = features.loc[df.index].copy()
        feats["log_base"] = base
        resid = y - base
        ds = lgb.Dataset(feats.to_numpy(dtype=float), label=resid, feature_name=list(FEATURES),
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

    # ------------------------------------------------------------------ prediction
    def log_predict(self, frame: pd.DataFrame, *, corrected: bool = True) -> tuple[dict[str, np.ndarray], list[str]]:
        """Log energy per phase for rows with ``flops_*`` columns and canonical ``hardware``.

        Returns ``({phase: log J}, level per row of the total)``.
        """
        frame = with_log_jpf(frame, self.hardware)
        feats = feature_frame(frame, self.hardware)
        out: dict[str, np.ndarray] = {}
        levels: list[str] = ["overall"] * len(frame)
        for phase, pm in self.phases.items():
            base, lv = pm.base_vec(frame)
            f = feats.copy()
            f["log_base"] = base
            out[phase] = base + (pm.correction(f) if corrected else 0.0)
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
        def laws(d: dict[str, PowerLaw]) -> dict[str, Any]:
            return {k: v.to_dict() for k, v in d.items()}

        state = {
            "version": STATE_VERSION,
            "features": list(FEATURES),
            "hardware": {k: {kk: (None if not math.isfinite(vv) else vv) for kk, vv in v.items()}
                         for k, v in self.hardware.items()},
            "families": self.families,
            "flops_range": list(self.flops_range),
            "interval": self.interval,
            "sources": self.sources,
            "phases": {
                p: {
                    "group": laws(pm.group), "pooled": laws(pm.pooled), "cross": laws(pm.cross),
                    "overall": pm.overall.to_dict(),
                    "corrector": pm.corrector.model_to_string() if pm.corrector is not None else None,
                }
                for p, pm in self.phases.items()
            },
        }
        return json.dumps(state)

    @classmethod
    def from_json(cls, text: str) -> EnergyModel:
        state = json.loads(text)
        if state.get("version") != STATE_VERSION:
            raise ConfigError("model state version", state.get("version"), f"{STATE_VERSION}: refit with this release")
        phases = {}
        for p, d in state["phases"].items():
            booster = None
            if d["corrector"]:
                import lightgbm as lgb

                booster = lgb.Booster(model_str=d["corrector"])
            phases[p] = PhaseModel(
                p,
                {k: PowerLaw.from_dict(v) for k, v in d["group"].items()},
                {k: PowerLaw.from_dict(v) for k, v in d["pooled"].items()},
                {k: PowerLaw.from_dict(v) for k, v in d["cross"].items()},
                PowerLaw.from_dict(d["overall"]),
                booster,
            )
        hardware = {k: {kk: (float("nan") if vv is None else vv) for kk, vv in v.items()}
                    for k, v in state["hardware"].items()}
        return cls(phases, hardware, state["families"], tuple(state["flops_range"]), state["interval"],
                   state.get("sources", []))


def fit_core(frame: pd.DataFrame, *, n_boot: int = 0, n_estimators: int = 100, seed: int = 0,
             corrector: bool = True) -> EnergyModel:
    """Fit laws and correctors on ``frame`` (rows with ``flops_*`` columns); no cross-validation."""
    hw = hardware_descriptors_of(sorted(frame["hardware"].unique()))
    frame = with_log_jpf(frame, hw)
    feats = feature_frame(frame, hw)
    phases: dict[str, PhaseModel] = {}
    for phase in FIT_PHASES:
        pm = fit_phase(frame, feats, phase, n_boot=n_boot, n_estimators=n_estimators, seed=seed, corrector=corrector)
        if pm is not None:
            phases[phase] = pm
    if schema.PHASE_TOTAL not in phases:
        raise ConfigError("runs", len(frame), f"at least {MIN_POINTS} runs with a positive energy/total_j")
    ft = frame["flops_total"].astype(float)
    return EnergyModel(phases, hw, sorted(frame["model"].unique()), (float(ft.min()), float(ft.max())),
                       sources=sorted(frame["energy_source"].unique()))


# ============================================================================ cross-validation
CV_SCHEMES = ("loco", "lofo", "loho")
_LEVEL_OF_SCHEME = {"loco": "known", "lofo": "unseen_family", "loho": "unseen_hardware"}


def _folds(frame: pd.DataFrame, scheme: str, max_folds: int, seed: int) -> list[np.ndarray]:
    """Test-index arrays of each fold."""
    if scheme == "loco":
        keys = frame["model"] + "|" + frame["hardware"] + "|" + frame["config_hash"].astype(str)
        # a config alone in its (family, hardware) group leaves nothing to fit within the group
        sizes = frame.groupby(["model", "hardware"])["config_hash"].transform("nunique")
        keys = keys.where(sizes >= MIN_POINTS + 1)
    elif scheme == "lofo":
        keys = frame["model"] if frame["model"].nunique() >= 2 else pd.Series(np.nan, index=frame.index)
    else:
        keys = frame["hardware"] if frame["hardware"].nunique() >= 2 else pd.Series(np.nan, index=frame.index)
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
                   n_estimators: int = 100, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grouped cross-validation; every fold refits laws and correctors on the rest.

    Returns ``(predictions, summary)``: one row per held-out run and phase (measured, law,
    law + corrector), and per scheme and phase: n, MAPE and Spearman rho of both.
    """
    preds = []
    for scheme in schemes:
        for test in _folds(frame, scheme, max_folds, seed):
            train = frame.drop(index=frame.index[test])
            if len(train) < MIN_POINTS:
                continue
            try:
                model = fit_core(train, n_estimators=n_estimators, seed=seed)
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
                        "measured_j": meas[i], "law_j": float(np.exp(law[phase][i])),
                        "corrected_j": float(np.exp(cor[phase][i])),
                    })
    pred = pd.DataFrame(preds, columns=["scheme", "phase", "run_id", "model", "hardware", "measured_j", "law_j",
                                        "corrected_j"])
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


def interval_widths(pred: pd.DataFrame) -> dict[str, float]:
    """Log half-widths of the 90% interval per prediction level, from cross-validated residuals
    of the total (``known``: leave-one-config-out; ``unseen_family``; ``unseen_hardware``).

    A level without its own folds borrows the next wider one (and at worst the in-sample-free
    maximum of all residuals)."""
    tot = pred[pred["phase"] == schema.PHASE_TOTAL]
    out: dict[str, float] = {}
    for scheme, level in _LEVEL_OF_SCHEME.items():
        g = tot[tot["scheme"] == scheme]
        if len(g):
            out[level] = _conformal_q(np.abs(np.log(g["corrected_j"] / g["measured_j"])).to_numpy())
    every = np.abs(np.log(tot["corrected_j"] / tot["measured_j"])).to_numpy() if len(tot) else np.array([])
    fallback = float(every.max()) if len(every) else math.log(2.0)
    order = ["known", "unseen_family", "unseen_hardware"]
    for i, level in enumerate(order):
        if level not in out:
            wider = [out[w] for w in order[i + 1:] if w in out]
            narrower = [out[w] for w in order[:i] if w in out]
            out[level] = max(wider + narrower + [fallback]) if not wider else wider[0]
    return out


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


def fit_energy_model(frame: pd.DataFrame, *, n_boot: int = 200, n_estimators: int = 100, max_folds: int = 40,
                     seed: int = 0, cv: bool = True) -> FitResult:
    """Fit the full model on ``frame`` (output of :func:`runs_frame`) and cross-validate it.

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
    model = fit_core(frame, n_boot=n_boot, n_estimators=n_estimators, seed=seed)
    if cv:
        pred, summary = cross_validate(frame, max_folds=max_folds, n_estimators=n_estimators, seed=seed)
    else:
        pred, summary = pd.DataFrame(columns=["scheme", "phase", "measured_j", "corrected_j"]), pd.DataFrame()
    model.interval = interval_widths(pred) if len(pred) else {
        "known": math.log(2.0), "unseen_family": math.log(2.0), "unseen_hardware": math.log(2.0)}
    return FitResult(model, frame, law_table(model, frame), pred, summary)


# ============================================================================ logging
def log_fit(result: FitResult, *, experiment: str, allow_mixed: bool, registered_model: str | None = None,
            plots: bool = True) -> str:
    """Log the fit into the active MLflow run: params, law and CV metrics, tables, plots and the
    training data as the run's input dataset. Returns the run id."""
    import tempfile
    from pathlib import Path

    import mlflow

    run = mlflow.active_run()
    assert run is not None, "log_fit needs an active run"
    frame = result.frame
    mlflow.set_tags({schema.T_KIND: schema.KIND_FIT})
    mlflow.log_params({
        schema.P_FIT_EXPERIMENT: experiment,
        schema.P_FIT_N_RUNS: len(frame),
        schema.P_FIT_SOURCES: ",".join(result.model.sources)[:500],
        schema.P_FIT_PHASES: ",".join(result.model.phases),
        "allow_mixed_sources": allow_mixed,
        **({schema.P_FIT_REGISTERED_MODEL: registered_model} if registered_model else {}),
    })
    metrics: dict[str, float] = {}
    for phase, pm in result.model.phases.items():
        for stat in ("b", "b_low", "b_high", "r2", "mape"):
            v = getattr(pm.overall, stat)
            if math.isfinite(v):
                metrics[schema.fit_key("overall", phase, stat)] = v
        for hw, law in pm.cross.items():
            for stat in ("b", "r2", "mape"):
                v = getattr(law, stat)
                if math.isfinite(v):
                    metrics[schema.fit_key(_slug(hw), phase, stat)] = v
    for _, row in result.cv_summary.iterrows():
        for stat in ("n", "mape_law", "mape_corrected", "spearman_law", "spearman_corrected"):
            v = float(row[stat])
            if math.isfinite(v):
                metrics[schema.cv_key(row["scheme"], row["phase"], stat)] = v
    for level, q in result.model.interval.items():
        metrics[f"interval/{level}_log_halfwidth"] = q
    mlflow.log_metrics(metrics)

    import warnings

    with warnings.catch_warnings():  # integer columns hold no missing values here: the hint does not apply
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        ds = mlflow.data.from_pandas(frame, name=f"{experiment}-runs", targets="energy_total")
    mlflow.log_input(ds, context="training")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        for name, df in ((schema.A_FIT_GROUPS_CSV, result.laws), (schema.A_FIT_CV_CSV, result.cv_predictions),
                         (schema.A_FIT_CV_SUMMARY_CSV, result.cv_summary)):
            p = tmp_p / Path(name).name
            df.to_csv(p, index=False)
            mlflow.log_artifact(str(p), artifact_path=str(Path(name).parent))
        ids = tmp_p / Path(schema.A_FIT_SOURCE_RUNS).name
        ids.write_text("\n".join(frame["run_id"].astype(str)) + "\n")
        mlflow.log_artifact(str(ids), artifact_path=str(Path(schema.A_FIT_SOURCE_RUNS).parent))
        if plots:
            from mlflow_energy._fit_plots import make_plots

            for path in make_plots(result, tmp_p / "plots"):
                mlflow.log_artifact(str(path), artifact_path=schema.A_FIT_PLOTS_DIR)
    return run.info.run_id


def format_summary(result: FitResult) -> str:
    """A short text report of the fit: laws of the total and the cross-validation table."""
    lines = []
    laws = result.laws[(result.laws["phase"] == schema.PHASE_TOTAL)]
    lines.append("power law of the total, E = a * FLOPs^b:")
    for _, r in laws.iterrows():
        if math.isfinite(r["b"]):
            ci = f" [{r['b_low']:.3f}, {r['b_high']:.3f}]" if math.isfinite(r["b_low"]) else ""
            lines.append(f"  {r['level']:<22} {r['group']:<40} n={int(r['n']):<3} b={r['b']:.3f}{ci} "
                         f"R2={r['r2']:.3f} MAPE={r['mape']:.1%} {r['note']}")
        else:
            lines.append(f"  {r['level']:<22} {r['group']:<40} n={int(r['n']):<3} {r['note']}")
    if len(result.cv_summary):
        lines.append("cross-validation (law alone -> law + corrector):")
        for _, r in result.cv_summary.iterrows():
            lines.append(
                f"  {r['scheme']:<5} {r['phase']:<12} n={int(r['n']):<4} MAPE {r['mape_law']:.1%} -> "
                f"{r['mape_corrected']:.1%}   Spearman {r['spearman_law']:.3f} -> {r['spearman_corrected']:.3f}")
    return "\n".join(lines)
