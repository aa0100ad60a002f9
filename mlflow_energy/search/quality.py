"""Image quality without downloads: fidelity to a high-step reference, CLIP score, a quality model.

Fidelity to a reference: the image of the same prompt, seed and config at a high step count
(``reference_steps``, e.g. 50) is what the sampler converges to; PSNR and SSIM of a cheaper
config's image against it measure how far fewer steps drift. With random weights the metric
still measures the sampler's discretisation error, so it works (and is tested) on CPU.

CLIP score (``torchmetrics``, optional: ``pip install 'mlflow-energy[clip]'``) needs a local CLIP
model directory; nothing is downloaded.

For the search's ``predict`` mode, :class:`QualityModel` predicts PSNR and SSIM from runs that
carry quality metrics: per (model family, scheduler), a least-squares line in ``log(steps)``
with a slope clamped at >= 0 (more steps never lower the predicted fidelity). It is an MLflow
pyfunc, so it is logged and registered like the energy model.

Example:
    >>> import torch
    >>> from mlflow_energy.search.quality import psnr, ssim
    >>> ref = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> noisy = (ref + 0.05 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    >>> 20 < psnr(noisy, ref) < 30
    True
    >>> ssim(ref, ref)
    1.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mlflow_energy import schema
from mlflow_energy._imports import require
from mlflow_energy.config import SCHEDULER_DEFAULT, InferenceConfig
from mlflow_energy.errors import ConfigError

PSNR_MAX_DB = 100.0  # identical images: MSE is floored at 1e-10, so PSNR is capped here
DEFAULT_REFERENCE_STEPS = 50


# ---------------------------------------------------------------------- metrics
def _as_batch(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ConfigError(name, tuple(images.shape), "a (B, C, H, W) or (C, H, W) tensor in [0, 1]")
    return images.detach().to(torch.float64)


def _pair(images: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_batch(images, "images"), _as_batch(reference, "reference").to(images.device)
    if y.shape[0] == 1 and x.shape[0] > 1 and y.shape[1:] == x.shape[1:]:
        y = y.expand_as(x)
    if x.shape != y.shape:
        raise ConfigError("reference", tuple(y.shape), f"the shape of the images, {tuple(x.shape)}")
    return x, y


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, averaged over the batch (images in ``[0, data_range]``).

    Identical images give :data:`PSNR_MAX_DB` (the mean squared error is floored at 1e-10).

    Example:
        >>> import torch
        >>> round(psnr(torch.full((3, 8, 8), 0.5), torch.full((3, 8, 8), 0.6)), 2)
        20.0
    """
    x, y = _pair(images, reference)
    mse = ((x - y) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10 * data_range**2)
    return float(min(PSNR_MAX_DB, (10 * torch.log10(data_range**2 / mse)).mean().item()))


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g)
    return window.expand(channels, 1, size, size).contiguous()


def ssim(
    images: torch.Tensor,
    reference: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity (Wang et al. 2004), averaged over channels, pixels and the batch.

    Gaussian window of 11 px with sigma 1.5, constants ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``,
    computed on the 'valid' region (no padding). Images smaller than the window use a window of
    their own (odd) size.

    Example:
        >>> import torch
        >>> img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(img, img), ssim(img, 1 - img) < 0
        (1.0, True)
    """
    x, y = _pair(images, reference)
    size = min(window_size, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2  # odd
    channels = x.shape[1]
    window = _gaussian_window(size, sigma, channels).to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(round(ssim_map.mean().item(), 12))


def reference_quality(images: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """``{quality/psnr_db: ..., quality/ssim: ...}`` of ``images`` against the reference images.

    Example:
        >>> import torch
        >>> sorted(reference_quality(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)).items())
        [('quality/psnr_db', 100.0), ('quality/ssim', 1.0)]
    """
    return {schema.M_QUALITY_PSNR: psnr(images, reference), schema.M_QUALITY_SSIM: ssim(images, reference)}


def clip_score(images: torch.Tensor, prompts: str | Sequence[str], clip_model: str) -> float:
    """CLIP score (torchmetrics) of images against their prompt, with a local CLIP model directory.

    Needs ``torchmetrics`` (``pip install 'mlflow-energy[clip]'``) and a directory holding a
    ``transformers`` CLIP model and processor (``CLIPModel.save_pretrained`` output); nothing is
    downloaded.

    Example:
        >>> clip_score(images, "a photograph of an astronaut riding a horse", "/models/clip-vit-b-32")  # doctest: +SKIP
        31.2
    """
    from pathlib import Path

    if not Path(clip_model).is_dir():
        raise ConfigError("clip_model", clip_model, "a local directory holding a CLIP model and processor")
    multimodal = require("torchmetrics.multimodal", "CLIP score", package="torchmetrics", extra="clip")
    batch = _as_batch(images, "images")
    texts = [prompts] * batch.shape[0] if isinstance(prompts, str) else list(prompts)
    metric = multimodal.CLIPScore(model_name_or_path=clip_model)
    as_uint8 = (batch.clamp(0, 1) * 255).round().to(torch.uint8)
    return float(metric(as_uint8, texts).item())


# ---------------------------------------------------------------------- reference images
def reference_config(cfg: InferenceConfig, reference_steps: int = DEFAULT_REFERENCE_STEPS) -> InferenceConfig:
    """The reference of ``cfg``: the same config (prompt, seed, scheduler, size) at ``reference_steps``.

    Example:
        >>> from mlflow_energy.config import InferenceConfig
        >>> reference_config(InferenceConfig(model="tiny-sd2", steps=2), 8).steps
        8
    """
    if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 1:
        raise ConfigError("reference_steps", reference_steps, "an integer >= 1")
    # The power limit changes energy and time, not the image: one reference serves every limit.
    return dataclasses.replace(cfg, steps=reference_steps, repeats=1, warmup=0, power_limit_w=None)


@torch.no_grad()
def render(cfg: InferenceConfig, pipeline: Any = None) -> torch.Tensor:
    """Generate the images of ``cfg`` (no measurement): ``(B, 3, H, W)`` in ``[0, 1]`` on the CPU.

    Runs the family's phase adapter (encode, denoise, decode) with a generator seeded by
    ``cfg.seed``, as :func:`mlflow_energy.measure.runner.measure` does, so the images match the runner's.
    ``pipeline`` reuses a built pipeline (:class:`mlflow_energy.measure.runner.PipelineCache`).

    Example:
        >>> from mlflow_energy.config import InferenceConfig
        >>> render(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=2)).shape
        torch.Size([1, 3, 32, 32])
    """
    from mlflow_energy.families import get_family
    from mlflow_energy.families._adapter import get_adapter
    from mlflow_energy.measure import runner

    cfg = cfg.validate()
    pipe = pipeline if pipeline is not None else runner.build_pipeline(cfg)
    adapter = get_adapter(get_family(cfg.model).adapter)
    runner.set_scheduler(pipe, cfg.scheduler)
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    latents = adapter.denoise(pipe, adapter.encode(pipe, cfg), cfg, generator)
    return adapter.decode(pipe, latents, cfg).float().cpu()


# ---------------------------------------------------------------------- quality model
QUALITY_OUTPUTS: tuple[str, ...] = ("quality_psnr_db", "quality_ssim")
_TARGETS: dict[str, str] = {"quality_psnr_db": schema.M_QUALITY_PSNR, "quality_ssim": schema.M_QUALITY_SSIM}


def quality_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Normalise runs (``mlflow.search_runs`` output or a plain frame) to the quality-model input.

    Returns columns ``model``, ``scheduler``, ``steps``, ``quality/psnr_db``, ``quality/ssim`` for
    the rows that carry at least one quality metric.
    """
    def column(key: str, prefix: str) -> pd.Series | None:
        for name in (f"{prefix}.{key}", key):
            if name in runs.columns:
                return runs[name]
        return None

    out = pd.DataFrame(index=runs.index)
    for key in (schema.P_MODEL, schema.P_SCHEDULER, schema.P_STEPS):
        col = column(key, "params")
        if col is None and key != schema.P_SCHEDULER:
            raise ConfigError("runs", f"no column {key!r}", "runs with params model, steps (and scheduler)")
        out[key] = col if col is not None else SCHEDULER_DEFAULT
    for key in _TARGETS.values():
        col = column(key, "metrics")
        out[key] = pd.to_numeric(col, errors="coerce") if col is not None else np.nan
    out[schema.P_SCHEDULER] = out[schema.P_SCHEDULER].fillna(SCHEDULER_DEFAULT).astype(str)
    out[schema.P_STEPS] = pd.to_numeric(out[schema.P_STEPS], errors="coerce")
    has_quality = out[list(_TARGETS.values())].notna().any(axis=1) & out[schema.P_STEPS].notna()
    return out[has_quality].reset_index(drop=True)


class QualityModel(mlflow.pyfunc.PythonModel):
    """Predicted fidelity to the reference: ``quality_psnr_db`` and ``quality_ssim`` per config.

    Per (model, scheduler) and per metric, ``q = intercept + slope * log(steps)`` fitted by least
    squares on runs with quality metrics, slope clamped at >= 0; one distinct step count gives a
    constant. Configs of an unseen scheduler use the family's pooled line; unseen families get
    NaN. Points at the PSNR cap (the reference itself) are left out of the fit.

    Example:
        >>> import pandas as pd
        >>> runs = pd.DataFrame({"model": ["sd2"] * 3, "steps": [5, 10, 20],
        ...                      "quality/psnr_db": [20.0, 24.0, 28.0], "quality/ssim": [0.5, 0.7, 0.9]})
        >>> qm = QualityModel.fit(runs)
        >>> round(float(qm.predict(None, pd.DataFrame({"model": ["sd2"], "steps": [10]}))["quality_psnr_db"][0]), 1)
        24.0
    """

    #: Measurement runs left out of the fit as superseded (their claim was taken over); set by
    #: fit_quality_model, None for a model built or loaded otherwise.
    superseded: int | None = None

    def __init__(self, lines: list[dict[str, Any]] | None = None) -> None:
        self.lines = list(lines or [])

    @classmethod
    def fit(cls, runs: pd.DataFrame) -> QualityModel:
        """Fit from runs carrying ``quality/psnr_db`` / ``quality/ssim`` (see :func:`quality_frame`)."""
        frame = quality_frame(runs)
        if frame.empty:
            raise ConfigError("runs", "no quality metrics", "runs that log quality/psnr_db or quality/ssim")
        lines: list[dict[str, Any]] = []
        pooled = frame.assign(**{schema.P_SCHEDULER: "*"})
        for data in (frame, pooled):
            for (model, scheduler), group in data.groupby([schema.P_MODEL, schema.P_SCHEDULER]):
                for output, key in _TARGETS.items():
                    rows = group[group[key].notna()]
                    if key == schema.M_QUALITY_PSNR:
                        rows = rows[rows[key] < PSNR_MAX_DB]
                    if rows.empty:
                        continue
                    lines.append({"model": str(model), "scheduler": str(scheduler), "output": output,
                                  **_fit_line(np.log(rows[schema.P_STEPS].to_numpy(float)), rows[key].to_numpy(float))})
        return cls(lines)

    def _line(self, model: str, scheduler: str, output: str) -> dict[str, Any] | None:
        for wanted in (scheduler, "*"):
            for line in self.lines:
                if (line["model"], line["scheduler"], line["output"]) == (model, wanted, output):
                    return line
        return None

    def covers(self, model: str) -> bool:
        """True when the model has quality data for ``model``."""
        return any(line["model"] == model for line in self.lines)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        schedulers = frame[schema.P_SCHEDULER] if schema.P_SCHEDULER in frame else [SCHEDULER_DEFAULT] * len(frame)
        out: dict[str, list[float]] = {name: [] for name in QUALITY_OUTPUTS}
        for model, scheduler, steps in zip(frame[schema.P_MODEL], schedulers, frame[schema.P_STEPS], strict=True):
            for output in QUALITY_OUTPUTS:
                line = self._line(str(model), str(scheduler), output)
                value = math.nan if line is None else line["intercept"] + line["slope"] * math.log(float(steps))
                if output == "quality_ssim" and not math.isnan(value):
                    value = min(1.0, max(-1.0, value))
                if output == "quality_psnr_db" and not math.isnan(value):
                    value = min(PSNR_MAX_DB, value)
                out[output].append(value)
        return pd.DataFrame(out, index=frame.index)


def _fit_line(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if len(np.unique(x)) < 2:
        return {"intercept": float(y.mean()), "slope": 0.0, "n": int(len(y))}
    slope, intercept = np.polyfit(x, y, 1)
    if slope < 0:  # monotone: more steps never predict lower fidelity
        slope, intercept = 0.0, float(y.mean())
    return {"intercept": float(intercept), "slope": float(slope), "n": int(len(y))}


def fit_quality_model(experiments: Sequence[str]) -> QualityModel:
    """Fit a :class:`QualityModel` from the measured runs of these experiments with quality metrics.

    Reads measurement and trial runs; predicted values (predict-mode trials) are left out, and so are
    superseded runs (one run per config, as fit counts them): how many is printed and kept in the
    model's ``superseded`` (the search parent logs it as ``search/runs_superseded``).

    Example:
        >>> qm = fit_quality_model(["search-tiny"])  # doctest: +SKIP
    """
    from mlflow_energy import tracking

    frames = [tracking.load_runs(name, kinds=(schema.KIND_MEASUREMENT, schema.KIND_TRIAL)) for name in experiments]
    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    source = schema.T_ENERGY_SOURCE[len(schema.TAG_PREFIX):]  # load_runs strips the tag prefix
    if source in runs:
        runs = runs[runs[source] != schema.SOURCE_PREDICTOR]
    superseded = sum(int(f.attrs.get("superseded", 0)) for f in frames)
    if superseded:
        print(f"quality model: left out {superseded} superseded measurement run(s): their claim was taken over, "
              "another run of the same config counts")
    model = QualityModel.fit(runs)
    model.superseded = superseded
    return model


def log_quality_model(model: QualityModel, *, registered_model_name: str | None = None, name: str = "quality_model") -> str:
    """Log ``model`` as a pyfunc in the active run (one is started if none is); return its model URI.

    With ``registered_model_name`` the model is also registered (``models:/NAME/<version>``).
    """
    import mlflow

    example = pd.DataFrame({schema.P_MODEL: ["sd2"], schema.P_SCHEDULER: [SCHEDULER_DEFAULT], schema.P_STEPS: [20]})
    info = mlflow.pyfunc.log_model(
        name=name, python_model=model, input_example=example, registered_model_name=registered_model_name,
    )
    return info.model_uri
