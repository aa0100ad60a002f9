"""The campaign spec (``projects/gpu-campaign.yaml``) and its grid of validated configs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.families._base import TINY_PREFIX

#: The families the GPU campaign measures (full size; ``--tiny`` measures ``tiny-<family>``).
MEASURED_FAMILIES: tuple[str, ...] = (
    "sd2", "sd3.5-medium", "sd3.5-large", "flux.1-dev", "flux.1-schnell", "qwen-image",
)


DEFAULT_STEPS = "default"


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class CampaignSpec:
    """What a campaign measures and how long it may take (``projects/gpu-campaign.yaml``).

    Attributes:
        families: family names (full size; ``tiny=True`` in :func:`load_spec` prefixes ``tiny-``).
        resolutions: square image sizes in pixels.
        steps: step counts at every resolution; ``"default"`` is the family's default.
        dit_steps: extra step counts for transformer (DiT) families, per resolution.
        precision, batch_size, device: as in :class:`~mlflow_energy.config.InferenceConfig`.
        repeats: measured runs per config.
        warmup_steps: denoising steps of the one warm-up run before each config.
        budget_s: wall-clock seconds the whole campaign may take.
        efficiency: fraction of the GPU's dense BF16 peak a config is predicted to reach.
        config_overhead_s: seconds per config on top of its FLOPs (launches, syncs, windows).
        family_overhead_s: seconds to build and free one family's pipeline.
        startup_s: seconds before the first build (imports, CUDA context, Zeus).
        peak_tflops: dense peak of the device in TFLOP/s; ``None`` looks the GPU up in the
            spec table (:mod:`mlflow_energy.measure.hardware`).
        power_limit_sweep: one family at one size and step count measured again under each GPU
            power limit in ``watts`` (set through NVML, restored after): energy and time against
            the limit. ``None``: no such sweep.
        autolog_family: a full-size family whose plain ``pipe(prompt)`` the campaign script
            measures once with ``mlflow_energy.autolog()``; ``None``: none.
    """

    families: tuple[str, ...] = MEASURED_FAMILIES
    resolutions: tuple[int, ...] = (512, 1024)
    steps: tuple[int | str, ...] = (10, DEFAULT_STEPS)
    dit_steps: Mapping[int, tuple[int, ...]] = field(default_factory=lambda: {1024: (50,)})
    precision: str = "bf16"
    batch_size: int = 1
    device: str = "cuda"
    repeats: int = 2
    warmup_steps: int = 1
    budget_s: float = 480.0
    efficiency: float = 0.35
    config_overhead_s: float = 3.0
    family_overhead_s: float = 15.0
    startup_s: float = 30.0
    peak_tflops: float | None = None
    power_limit_sweep: Mapping[str, Any] | None = None
    autolog_family: str | None = None

    def __post_init__(self) -> None:
        if not self.families:
            raise ConfigError("families", list(self.families), "at least one family name")
        for name in ("budget_s", "efficiency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(name, value, "a number > 0")
        if self.efficiency > 1:
            raise ConfigError("efficiency", self.efficiency, "a fraction of the peak in (0, 1]")
        for name in ("config_overhead_s", "family_overhead_s", "startup_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(name, value, "a number of seconds >= 0")
        if self.peak_tflops is not None and not (
            isinstance(self.peak_tflops, (int, float)) and self.peak_tflops > 0
        ):
            raise ConfigError("peak_tflops", self.peak_tflops, "a number > 0, or null to look the GPU up")
        for s in self.steps:
            if s != DEFAULT_STEPS and (isinstance(s, bool) or not isinstance(s, int) or s < 1):
                raise ConfigError("steps", s, f"integers >= 1 or '{DEFAULT_STEPS}'")
        for name in ("repeats", "warmup_steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1):
                raise ConfigError(name, value, f"an integer >= {0 if name == 'warmup_steps' else 1}")

        if self.power_limit_sweep is not None:
            _check_power_limit_sweep(self.power_limit_sweep)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dit_steps"] = {int(k): list(v) for k, v in self.dit_steps.items()}
        return out


_SPEC_FIELDS = {f.name for f in dataclasses.fields(CampaignSpec)}
_SWEEP_KEYS = ("family", "resolution", "steps", "watts")


def _check_power_limit_sweep(sweep: Any) -> None:
    from mlflow_energy.config import MAX_POWER_LIMIT_W

    if not isinstance(sweep, Mapping) or sorted(sweep) != sorted(_SWEEP_KEYS):
        raise ConfigError("power_limit_sweep", sweep, "a mapping with exactly the keys " + ", ".join(_SWEEP_KEYS))
    watts = sweep["watts"]
    if not isinstance(watts, (list, tuple)) or not watts or any(
        isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= MAX_POWER_LIMIT_W for w in watts
    ):
        raise ConfigError("power_limit_sweep.watts", watts, f"a non-empty list of watts, each > 0 and <= {MAX_POWER_LIMIT_W:g}")


def spec_from_dict(data: Mapping[str, Any], *, tiny: bool = False) -> CampaignSpec:
    """Build a :class:`CampaignSpec` from a mapping; ``tiny=True`` applies its ``tiny:`` block.

    The ``tiny`` block overrides any field for ``--tiny`` runs (small resolutions and step
    counts, CPU device, a CPU peak) and the families become their ``tiny-`` variants.

    Example:
        >>> from mlflow_energy.sweep.campaign import spec_from_dict
        >>> spec = spec_from_dict({"families": ["sd2"], "tiny": {"resolutions": [32, 64]}}, tiny=True)
        >>> spec.families, spec.resolutions
        (('tiny-sd2',), (32, 64))
    """
    data = dict(data)
    tiny_block = data.pop("tiny", None) or {}
    if tiny:
        data.update(tiny_block)
    unknown = sorted(set(data) - _SPEC_FIELDS)
    if unknown:
        raise ConfigError(unknown[0], data[unknown[0]], "one of the keys " + ", ".join(sorted(_SPEC_FIELDS | {"tiny"})))
    kwargs: dict[str, Any] = dict(data)
    for name in ("families", "resolutions", "steps"):
        if name in kwargs:
            value = kwargs[name]
            if isinstance(value, (str, int)):
                value = [value]
            kwargs[name] = tuple(value)
    if "dit_steps" in kwargs:
        raw = kwargs["dit_steps"] or {}
        if not isinstance(raw, Mapping):
            raise ConfigError("dit_steps", raw, "a mapping {resolution: [steps, ...]}")
        kwargs["dit_steps"] = {int(k): tuple([v] if isinstance(v, int) else v) for k, v in raw.items()}
    spec = CampaignSpec(**kwargs)
    if tiny:
        spec = dataclasses.replace(spec, families=tuple(tiny_name(f) for f in spec.families))
        if spec.power_limit_sweep:
            spec = dataclasses.replace(spec, power_limit_sweep={
                **spec.power_limit_sweep, "family": tiny_name(str(spec.power_limit_sweep["family"]))})
        if spec.autolog_family:
            spec = dataclasses.replace(spec, autolog_family=tiny_name(spec.autolog_family))
    return spec


def load_spec(path: str | os.PathLike[str], *, tiny: bool = False) -> CampaignSpec:
    """Read a campaign spec from YAML (see ``projects/gpu-campaign.yaml``).

    Raises:
        ConfigError: for a missing file, unknown keys or bad values.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError("spec", str(path), "an existing campaign YAML file (projects/gpu-campaign.yaml)")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, Mapping):
        raise ConfigError("spec", str(path), "a YAML mapping of campaign keys")
    return spec_from_dict(data, tiny=tiny)


def tiny_name(family: str) -> str:
    """``sd2`` -> ``tiny-sd2`` (unchanged when already tiny)."""
    return family if family.startswith(TINY_PREFIX) else TINY_PREFIX + family


# --------------------------------------------------------------------------- the grid
def expand_grid(spec: CampaignSpec) -> list[InferenceConfig]:
    """Every config of the campaign grid, validated, in family then resolution then steps order.

    Per family and resolution: ``spec.steps`` (``"default"`` = the family's default), plus
    ``spec.dit_steps[resolution]`` for transformer families; duplicates are measured once.
    Guidance is the family default (CFG as the family runs by default).

    Raises:
        ConfigError: for an unknown family or a resolution the family cannot run.

    Example:
        >>> from mlflow_energy.sweep.campaign import CampaignSpec, expand_grid
        >>> spec = CampaignSpec(families=("tiny-sd2",), resolutions=(32,), steps=(2, "default"), device="cpu",
        ...                     precision="fp32")
        >>> [(c.model, c.height, c.steps) for c in expand_grid(spec)]
        [('tiny-sd2', 32, 2), ('tiny-sd2', 32, 4)]
    """
    from mlflow_energy.families import get_family

    configs: list[InferenceConfig] = []
    for name in spec.families:
        fam = get_family(name)
        if not fam.measurable:
            raise ConfigError("families", name, "a family with a phase adapter (a measurable family)")
        dit = fam.denoiser == "transformer"
        for res in spec.resolutions:
            steps: list[int] = [fam.default_steps if s == DEFAULT_STEPS else int(s) for s in spec.steps]
            if dit:
                steps += list(spec.dit_steps.get(int(res), ()))
            for n in sorted(set(steps)):
                cfg = InferenceConfig(
                    model=name, height=int(res), width=int(res), steps=n, precision=spec.precision,
                    batch_size=spec.batch_size, device=spec.device, repeats=spec.repeats,
                    warmup=1 if spec.warmup_steps else 0,
                )
                configs.append(cfg.validate())
    sweep = spec.power_limit_sweep
    if sweep:
        for watts in sweep["watts"]:
            cfg = InferenceConfig(
                model=str(sweep["family"]), height=int(sweep["resolution"]), width=int(sweep["resolution"]),
                steps=int(sweep["steps"]), precision=spec.precision, batch_size=spec.batch_size, device=spec.device,
                repeats=spec.repeats, warmup=1 if spec.warmup_steps else 0, power_limit_w=float(watts),
            )
            configs.append(cfg.validate())
    return configs


def required_points(spec: CampaignSpec) -> list[tuple[str, int, int]]:
    """The ``(family, resolution, steps)`` points the campaign must cover when the budget allows.

    For each family: 10 steps and the default at every resolution; 50 steps at the largest
    resolution for transformer families (the points the issue asks for, kept by the spec).
    """
    from mlflow_energy.families import get_family

    points = []
    top = max(spec.resolutions)
    for name in spec.families:
        fam = get_family(name)
        for res in spec.resolutions:
            for n in sorted({10, fam.default_steps} | ({50} if fam.denoiser == "transformer" and res == top else set())):
                points.append((name, int(res), n))
    return points
