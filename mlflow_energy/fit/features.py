"""Features that carry over to unseen families and GPUs: FLOPs, architecture sizes, tokens, precision, hardware."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.fit.frame import FIT_PHASES

# Features of the corrector: none names a family or a GPU, so they carry over to unseen ones.
FEATURES: tuple[str, ...] = (
    "log_flops_text_encode", "log_flops_denoise", "log_flops_decode", "log_flops_total", "log_base",
    "steps", "log_pixels", "log_batch_size", "cfg", "guidance_scale", "precision_bits", "precision_bf16",
    "log_denoiser_params", "log_text_encoder_params", "log_vae_params", "text_tokens", "image_tokens",
    "hw_tdp_w", "hw_tflops", "hw_mem_bw_gb_s",
)


PRECISION_BITS = {"fp32": 32.0, "fp16": 16.0, "bf16": 16.0}


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
