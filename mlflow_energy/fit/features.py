"""Features that carry over to unseen families and GPUs: FLOPs, architecture sizes, tokens, precision, hardware."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError

# Features of the corrector: none names a family or a GPU, so they carry over to unseen ones.
# None depends on the step count either (the per-call law makes steps and CFG passes scale
# energy exactly linearly; a feature that sees the steps would let the corrector bend that).
FEATURES: tuple[str, ...] = (
    "log_flops_text_encode", "log_flops_call", "log_flops_decode", "log_base",
    "log_pixels", "log_batch_size", "cfg", "guidance_scale", "precision_bits", "precision_bf16",
    "log_denoiser_params", "log_text_encoder_params", "log_vae_params", "text_tokens", "image_tokens",
    "hw_tdp_w", "hw_tflops", "hw_mem_bw_gb_s",
)


PRECISION_BITS = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0}


# ============================================================================ the per-call unit
def call_terms(frame: pd.DataFrame, phase: str) -> tuple[np.ndarray, np.ndarray]:
    """``(log FLOPs of one call, log calls)`` of ``phase`` for every row (natural logs, per image).

    One call is what the GPU runs at once: one denoiser call on the whole batch (both CFG
    samples included, as the pipelines concatenate them), one text-encoder pass or one VAE
    decode of the batch. ``log calls`` is ``log(FLOPs per image / FLOPs per call)``: for the
    denoiser ``calls x passes / (passes x batch)``, so the law ``log e_call = a + b log f_call``
    gives ``log E = log e_call + log calls``, exactly linear in the steps and in the CFG passes.
    The whole-pipeline ``total`` uses the denoiser call as its unit (the J/FLOP of the dominant
    phase carries the text encoders and the decoder).

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"batch_size": [1, 1], "flops_denoise": [3e12, 5e12], "flops_total": [3.2e12, 5.2e12],
        ...                    "flops_denoise_per_step": [1e11, 1e11]})
        >>> x, n = call_terms(df, "denoise")
        >>> [round(float(v)) for v in np.exp(n)]
        [30, 50]
    """
    batch = frame["batch_size"].to_numpy(dtype=float)
    per_image = np.clip(frame[f"flops_{phase}"].to_numpy(dtype=float), 1.0, None)
    unit = "denoise_per_step" if phase in ("denoise", "total") else phase
    per_call = np.clip(frame[f"flops_{unit}"].to_numpy(dtype=float), 1.0, None) * batch
    return np.log(per_call), np.log(per_image) - np.log(per_call)


# ============================================================================ features
@functools.cache
def architecture_descriptors(model: str) -> dict[str, float]:
    """Parameter counts (counted on the meta device, shipped as family data) and token counts of a family.

    Example:
        >>> from mlflow_energy.fit import architecture_descriptors
        >>> d = architecture_descriptors("sd2")
        >>> round(d["denoiser_params"] / 1e9, 2), d["text_tokens"]
        (0.87, 77.0)
    """
    from mlflow_energy.families import get_family
    from mlflow_energy.families._derived import params as shipped_params

    fam = get_family(model)
    params = shipped_params(model)  # counted on the meta device once, shipped in families/data/derived.json
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
    try:
        counted = flops_frame(frame[cols])
        new = {f"flops_{p}": counted[f"flops_{p}"].to_numpy(dtype=float) for p in schema.FLOPS_PHASES}
    except ConfigError:
        rows = []
        for _, row in frame[cols].iterrows():
            try:
                r = flops_frame(pd.DataFrame([row]))
                rows.append({p: float(r[f"flops_{p}"].iloc[0]) for p in schema.FLOPS_PHASES})
            except ConfigError:
                rows.append({p: np.nan for p in schema.FLOPS_PHASES})
        new = {f"flops_{p}": np.array([r[p] for r in rows], dtype=float) for p in schema.FLOPS_PHASES}
    for phase in schema.FLOPS_PHASES:
        logged = f"logged_flops_{phase}"
        if logged in frame.columns:
            new[f"flops_{phase}"] = pd.Series(new[f"flops_{phase}"], index=frame.index).fillna(frame[logged]).to_numpy()
    return frame.assign(**new)


def _per_model(models: pd.Series) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Factorised models and per-family constants (one lookup per distinct family, none per row)."""
    from mlflow_energy.families import get_family

    codes, names = pd.factorize(models, use_na_sentinel=False)
    fams = [get_family(str(m)) for m in names]
    desc = [architecture_descriptors(str(m)) for m in names]
    consts = {
        "pixel_step": np.array([f.latent_downsample * (f.patch_size or 1) for f in fams], dtype=np.int64),
        "cfg_true": np.array([f.cfg == "true" for f in fams], dtype=bool),
        "default_g": np.array([f.default_guidance_scale for f in fams], dtype=float),
        **{k: np.array([d[k] for d in desc], dtype=float)
           for k in ("denoiser_params", "text_encoder_params", "vae_params", "text_tokens")},
    }
    return np.asarray(codes), consts


def feature_frame(frame: pd.DataFrame, hardware_descriptors: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The corrector's features (see :data:`FEATURES`) for rows that carry ``flops_*`` columns.

    Vectorised: per-family and per-GPU constants are looked up once per distinct value, the
    columns are built in a dict and the frame is created once. ``log_base`` is left for the
    caller (it depends on the law used for the row).
    """
    codes, k = _per_model(frame["model"])
    height = frame["height"].to_numpy(dtype=float)
    width = frame["width"].to_numpy(dtype=float)
    g = frame["guidance_scale"].to_numpy(dtype=float, na_value=np.nan)
    g_eff = np.where(np.isnan(g), k["default_g"][codes], g)
    step = k["pixel_step"][codes]
    cols: dict[str, np.ndarray] = {
        f"log_flops_{phase}": np.log(np.clip(frame[f"flops_{phase}"].to_numpy(dtype=float), 1.0, None))
        for phase in ("text_encode", "decode")
    }
    cols["log_flops_call"] = call_terms(frame, "denoise")[0]
    cols["log_base"] = np.full(len(frame), np.nan)
    cols["log_pixels"] = np.log(height * width)
    cols["log_batch_size"] = np.log(frame["batch_size"].to_numpy(dtype=float))
    cols["cfg"] = (k["cfg_true"][codes] & (g_eff > 1.0)).astype(float)
    cols["guidance_scale"] = g
    cols["precision_bits"] = frame["precision"].map(PRECISION_BITS).to_numpy(dtype=float, na_value=np.nan)
    cols["precision_bf16"] = (frame["precision"] == "bf16").to_numpy(dtype=float)
    cols["log_denoiser_params"] = np.log1p(k["denoiser_params"][codes])
    cols["log_text_encoder_params"] = np.log1p(k["text_encoder_params"][codes])
    cols["log_vae_params"] = np.log1p(k["vae_params"][codes])
    cols["text_tokens"] = k["text_tokens"][codes]
    cols["image_tokens"] = (height.astype(np.int64) // step * (width.astype(np.int64) // step)).astype(float)
    hw_codes, hw_names = pd.factorize(frame["hardware"], use_na_sentinel=False)
    for key in ("hw_tdp_w", "hw_tflops", "hw_mem_bw_gb_s"):
        per_hw = np.array([hardware_descriptors.get(h, {}).get(key, np.nan) for h in hw_names], dtype=float)
        cols[key] = per_hw[hw_codes] if len(hw_names) else np.zeros(0)
    return pd.DataFrame({f: cols[f] for f in FEATURES}, index=frame.index)


def log_jpf(hardware_names: pd.Series | np.ndarray, hardware: dict[str, dict[str, float]]) -> np.ndarray:
    """Log of each row's GPU best-case J/FLOP (TDP / peak), NaN when unknown; one lookup per GPU."""
    nan = float("nan")
    codes, names = pd.factorize(hardware_names, use_na_sentinel=False)
    per_hw = np.array([math.log(d["hw_tdp_w"] / (d["hw_tflops"] * 1e12))
                       if (d := hardware.get(h)) and d.get("hw_tdp_w", nan) > 0 and d.get("hw_tflops", nan) > 0
                       else nan for h in names], dtype=float)
    return per_hw[codes] if len(names) else np.zeros(0)


def log_peak(hardware_names: pd.Series | np.ndarray, hardware: dict[str, dict[str, float]]) -> np.ndarray:
    """Log of each row's GPU peak FLOP/s (spec table), NaN when unknown; one lookup per GPU."""
    codes, names = pd.factorize(hardware_names, use_na_sentinel=False)
    per_hw = np.array([math.log(d["hw_tflops"] * 1e12) if (d := hardware.get(h)) and d.get("hw_tflops", math.nan) > 0
                       else math.nan for h in names], dtype=float)
    return per_hw[codes] if len(names) else np.zeros(0)


def with_log_jpf(frame: pd.DataFrame, hardware: dict[str, dict[str, float]]) -> pd.DataFrame:
    """``frame`` plus ``log_jpf`` (log of the GPU's best-case J/FLOP, TDP / peak) and ``log_peak`` (log
    of its peak FLOP/s), NaN when unknown."""
    return frame.assign(log_jpf=log_jpf(frame["hardware"], hardware), log_peak=log_peak(frame["hardware"], hardware))


def hardware_descriptors_of(names: Iterable[str]) -> dict[str, dict[str, float]]:
    """Spec-table descriptors of canonical hardware names (NaN for hardware not in the table)."""
    from mlflow_energy.measure.hardware import find_gpu

    out = {}
    for name in names:
        spec = find_gpu(name)
        out[name] = spec.descriptors() if spec else {"hw_tdp_w": np.nan, "hw_tflops": np.nan, "hw_mem_bw_gb_s": np.nan}
    return out
