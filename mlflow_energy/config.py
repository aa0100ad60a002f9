"""InferenceConfig: one text-to-image inference configuration, validated before anything runs.

Example:
    >>> from mlflow_energy.config import InferenceConfig
    >>> cfg = InferenceConfig(model="tiny-sd2", height=64, width=64, steps=2)
    >>> cfg.validate().precision
    'fp32'
    >>> len(cfg.config_hash())
    16
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mlflow_energy.errors import ConfigError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
SCHEDULER_DEFAULT = "default"

# Upper limits, each with its reason. Checked by `validate`, the CLI options, sweep specs and
# the served predictor, so a typo (`--height 100000`) fails at once instead of when memory does.
#: Image side in pixels: at 8192 px the VAE decoder's activations of one image already take
#: tens of GB; no family is trained anywhere near it (their native sizes are 512 to 2048).
MAX_SIDE = 8192
#: Denoising steps: the schedulers discretise 1000 training timesteps; more steps repeat them.
MAX_STEPS = 1000
#: Images per pipeline call: beyond 1024 even the smallest full-size config runs out of GPU memory.
MAX_BATCH = 1024
#: Guidance scale: published settings are 0 to 20; above 100 the image is saturated noise.
MAX_GUIDANCE = 100.0
#: GPU power limit in watts: the largest board power of any GPU in the spec table is 1200 W
#: (GB200); NVML refuses what the board does not allow, checked again when the limit is set.
MAX_POWER_LIMIT_W = 2000.0

#: Pipelines whose classifier-free guidance is "true CFG": ``pipe(prompt)`` runs one pass per step;
#: two only with a negative prompt and ``true_cfg_scale`` > 1 (diffusers 0.42.1 ``QwenImagePipeline``
#: and ``FluxPipeline``: ``do_true_cfg = true_cfg_scale > 1 and has_neg_prompt``).
TRUE_CFG_PIPELINES: tuple[str, ...] = ("QwenImagePipeline", "FluxPipeline")
CFG_PASSES: tuple[int, ...] = (1, 2)

# Fields that change what is measured; `repeats`/`warmup` change how well, so they are
# left out of the hash: a rerun with more repeats is the same config.
_HASHED_FIELDS = (
    "model", "weights", "height", "width", "steps", "guidance_scale", "precision",
    "batch_size", "device", "scheduler", "seed",
)


def _device_kind(device: str) -> str:
    return device.split(":", 1)[0]


def _device_precisions(device: str) -> tuple[str, ...]:
    """Precisions a device can run the pipelines in."""
    kind = _device_kind(device)
    if kind == "cuda":
        import torch

        if torch.cuda.is_available():
            major, _ = torch.cuda.get_device_capability(device)
            return ("fp32", "fp16", "bf16") if major >= 8 else ("fp32", "fp16")
        return PRECISIONS  # checked again when the device is opened
    if kind == "cpu":
        # fp16 convolutions and attention are not implemented (or unusably slow) on CPU.
        return ("fp32", "bf16")
    if kind == "mps":
        return ("fp32", "fp16")
    return ("fp32",)


def default_cfg_passes(family: Any, guidance_scale: float | None) -> int:
    """Denoiser passes per step that ``pipe(prompt)`` runs for ``family`` in diffusers 0.42.1.

    SD, SDXL, SD3, PixArt, Sana: 2 when the guidance scale is > 1 (classifier-free guidance).
    Qwen-Image and FLUX.1: 1 (true CFG needs a negative prompt, which ``pipe(prompt)`` has not).

    Example:
        >>> from mlflow_energy.families import get_family
        >>> default_cfg_passes(get_family("sd2"), 7.5), default_cfg_passes(get_family("qwen-image"), 4.0)
        (2, 1)
    """
    if family.pipeline_class in TRUE_CFG_PIPELINES:
        return 1
    return family.passes(guidance_scale)


def allowed_cfg_passes(family: Any, guidance_scale: float | None) -> tuple[int, ...]:
    """Passes a family can run at ``guidance_scale``.

    True-CFG pipelines (Qwen-Image, FLUX.1-dev): 1 or 2 when the scale is > 1 (2: a negative
    prompt and ``true_cfg_scale`` > 1). The others decide by the scale alone (diffusers'
    ``do_classifier_free_guidance = guidance_scale > 1``): set ``guidance_scale`` 1 for one pass.
    """
    scale = family.default_guidance_scale if guidance_scale is None else guidance_scale
    if family.pipeline_class in TRUE_CFG_PIPELINES:
        return CFG_PASSES if family.cfg in ("true", "distilled") and scale > 1.0 else (1,)
    return (family.passes(scale),)


@dataclass(frozen=True)
class InferenceConfig:
    """One inference configuration of a text-to-image diffusion pipeline.

    Attributes:
        model: family name (``sd2``, ``flux.1-dev``, ``tiny-sd2``, ...); see
            :func:`mlflow_energy.families.family_names`.
        weights: ``"random"`` (random weights from the released architecture) or a local
            directory or hub id passed to ``from_pretrained``.
        height, width: image size in pixels; a multiple of the family's latent x patch size.
        steps: denoising steps (>= 1).
        guidance_scale: classifier-free guidance scale; ``None`` takes the family default.
            With CFG families a scale > 1 runs the denoiser twice per step. For true-CFG
            pipelines (Qwen-Image, FLUX.1) it is the ``true_cfg_scale`` when ``cfg_passes`` is 2
            (FLUX.1-dev: the distilled guidance embedding, with true CFG at the same scale).
        cfg_passes: denoiser passes per step, 1 or 2; ``None`` takes what ``pipe(prompt)`` does
            (:func:`default_cfg_passes`: Qwen-Image and FLUX.1 run one pass, SD/SDXL/SD3 two
            when the guidance scale is > 1). 2 on a true-CFG pipeline runs it with an empty
            negative prompt and ``true_cfg_scale`` = the guidance scale.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        batch_size: images per pipeline call; every logged value is per image.
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
        scheduler: ``default`` (the pipeline's own) or a diffusers scheduler class name.
        seed: generator seed of the latents.
        power_limit_w: power limit in watts of the measured NVIDIA GPU, set through NVML before
            the first warm-up run and restored afterwards
            (:mod:`mlflow_energy.measure.power_limit`); ``None`` leaves the GPU's limit as it is.
        repeats: measured runs; values are the mean over repeats.
        warmup: unmeasured runs before the measured ones.
    """

    model: str
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    weights: str = "random"
    precision: str = "fp32"
    batch_size: int = 1
    device: str = "cpu"
    scheduler: str = SCHEDULER_DEFAULT
    seed: int = 0
    power_limit_w: float | None = None
    repeats: int = 1
    warmup: int = 1
    cfg_passes: int | None = None
    prompt: str = field(default="a photograph of an astronaut riding a horse", compare=False)

    # ------------------------------------------------------------------ validation
    def validate(self) -> InferenceConfig:
        """Check every field and fill family defaults; return the completed config.

        Raises:
            ConfigError: naming the first bad field, its value and what is allowed.
        """
        from mlflow_energy.families import family_names, get_family

        if self.model not in family_names():
            raise ConfigError("model", self.model, "one of " + ", ".join(family_names()))
        fam = get_family(self.model)
        _check_int("steps", self.steps, minimum=1, allow_none=True, maximum=MAX_STEPS)
        if self.steps is not None and self.steps < fam.min_steps:
            raise ConfigError("steps", self.steps, f"an integer >= {fam.min_steps} for {self.model}")
        _check_int("batch_size", self.batch_size, minimum=1, maximum=MAX_BATCH)
        _check_int("repeats", self.repeats, minimum=1)
        _check_int("warmup", self.warmup, minimum=0)
        _check_int("seed", self.seed, minimum=0)
        multiple = fam.pixel_multiple
        for name in ("height", "width"):
            value = getattr(self, name)
            _check_int(name, value, minimum=multiple, allow_none=True, maximum=MAX_SIDE)
            if value is not None and value % multiple:
                raise ConfigError(name, value, f"a positive multiple of {multiple} for {self.model}")
        g = self.guidance_scale
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g)
                              or not 0 <= g <= MAX_GUIDANCE):
            raise ConfigError("guidance_scale", g, f"a finite number from 0 to {MAX_GUIDANCE:g}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", self.precision, "one of " + ", ".join(PRECISIONS))
        if not isinstance(self.device, str) or _device_kind(self.device) not in ("cpu", "cuda", "mps"):
            raise ConfigError("device", self.device, "cpu, cuda, cuda:N or mps")
        allowed = _device_precisions(self.device)
        if self.precision not in allowed:
            raise ConfigError(
                "precision", self.precision, f"one of {', '.join(allowed)} on device {self.device}"
            )
        _check_power_limit(self.power_limit_w)
        if not self.weights:
            raise ConfigError("weights", self.weights, "'random', a local directory or a hub id")
        if not isinstance(self.scheduler, str) or not self.scheduler:
            raise ConfigError("scheduler", self.scheduler, f"'{SCHEDULER_DEFAULT}' or a diffusers scheduler class name")
        if self.scheduler != SCHEDULER_DEFAULT:
            import diffusers

            if not self.scheduler.endswith("Scheduler") or not hasattr(diffusers, self.scheduler):
                raise ConfigError(
                    "scheduler", self.scheduler, f"'{SCHEDULER_DEFAULT}' or a diffusers scheduler class name"
                )
        scale = fam.default_guidance_scale if self.guidance_scale is None else float(self.guidance_scale)
        passes = self.cfg_passes
        if passes is not None:
            allowed = allowed_cfg_passes(fam, scale)
            if isinstance(passes, bool) or passes not in allowed:
                why = "" if len(allowed) == 2 else f" ({self.model} at guidance_scale {scale:g})"
                raise ConfigError("cfg_passes", passes, " or ".join(map(str, allowed)) + why)
            passes = int(passes)
        return dataclasses.replace(
            self,
            height=self.height or fam.default_resolution,
            width=self.width or fam.default_resolution,
            steps=self.steps or fam.default_steps,
            guidance_scale=scale,
            cfg_passes=default_cfg_passes(fam, scale) if passes is None else passes,
            power_limit_w=None if self.power_limit_w is None else float(self.power_limit_w),
        )

    # ------------------------------------------------------------------ derived
    @property
    def passes(self) -> int:
        """Denoiser passes per step: ``cfg_passes``, or what ``pipe(prompt)`` does for the family."""
        from mlflow_energy.families import get_family

        if self.cfg_passes is not None:
            return int(self.cfg_passes)
        return default_cfg_passes(get_family(self.model), self.guidance_scale)

    @property
    def cfg(self) -> bool:
        """True when the denoiser runs on two samples per step (classifier-free guidance)."""
        return self.passes == 2

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceConfig:
        """Build from a dict; unknown keys raise a :class:`ConfigError` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]], "one of the fields " + ", ".join(sorted(names)))
        return cls(**data)

    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of what is measured (not of repeats, warm-up or prompt)."""
        payload = {k: getattr(self, k) for k in _HASHED_FIELDS}
        if payload["guidance_scale"] is not None:
            payload["guidance_scale"] = float(payload["guidance_scale"])
        if self.power_limit_w is not None:  # only when set: configs without a limit keep their hash
            payload["power_limit_w"] = float(self.power_limit_w)
        if self.cfg_passes is not None:  # hashed only when it differs from pipe(prompt), so the
            from mlflow_energy.families import get_family  # hashes of earlier configs stay

            if int(self.cfg_passes) != default_cfg_passes(get_family(self.model), self.guidance_scale):
                payload["cfg_passes"] = int(self.cfg_passes)
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_power_limit(value: Any) -> None:
    # Whether the device has an NVIDIA GPU whose limit NVML can set is checked when the
    # measurement starts (mlflow_energy.measure.power_limit), where the driver can answer.
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= MAX_POWER_LIMIT_W:
        raise ConfigError("power_limit_w", value, f"watts, a number > 0 and <= {MAX_POWER_LIMIT_W:g}")


def _check_int(name: str, value: Any, *, minimum: int, allow_none: bool = False, maximum: int | None = None) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, value, f"an integer from {minimum} to {maximum} ({_REASONS[name]})")


_REASONS = {
    "height": "the VAE decoder's memory at larger sides", "width": "the VAE decoder's memory at larger sides",
    "steps": "the schedulers' 1000 training timesteps", "batch_size": "GPU memory",
}
