"""Plan and run a timed GPU measurement campaign: a grid of configs fitted to a time budget.

A campaign measures every full-size family with random weights on one GPU, phase by phase,
within a fixed wall-clock budget (8 minutes on one H100 by default). Planning is pure and
runs anywhere, without a GPU:

1. :func:`expand_grid` turns a :class:`CampaignSpec` (``projects/gpu-campaign.yaml``) into
   validated :class:`~mlflow_energy.config.InferenceConfig` objects: each family at each
   resolution, at 10 steps and at its default step count, plus extra step counts for the
   transformer (DiT) families at the largest resolution; CFG as the family runs by default.
2. :func:`predict_seconds` predicts a config's time from the FLOPs it executes (one short
   warm-up run plus ``repeats`` measured runs) at a fraction (35 %) of the GPU's dense BF16
   peak, plus a fixed per-config overhead.
3. :func:`fit_budget` keeps the cheapest configs that fit the budget (start-up and one build
   per family included) and drops the largest first; :func:`plan_campaign` does 1-3 and
   orders the run: cheapest family first, each family's configs cheapest first, so a run cut
   short has measured as much as it could.

:func:`run_campaign` then measures the plan with the runner, one family at a time (built
once, freed before the next), printing one table row per config as it goes and appending
one JSON record per config (:mod:`mlflow_energy.tracking.jsonl`) to a JSONL file, with a small
``.meta.json`` beside it (GPU, driver, power limit, software versions, command line). No
MLflow is imported: ``mlflow-energy ingest FILE.jsonl`` logs the records as runs later.

Example:
    >>> from mlflow_energy.sweep.campaign import ConfigPlan, fit_budget, predict_seconds
    >>> predict_seconds(3.5e14, peak_flops=1e15, efficiency=0.35, overhead_s=2.0)
    3.0
    >>> items = [ConfigPlan(key=f"c{i}", family="f", predicted_s=float(s)) for i, s in enumerate([5, 1, 9, 3])]
    >>> kept, dropped = fit_budget(items, budget_s=10.0)
    >>> [p.predicted_s for p in kept], [p.predicted_s for p in dropped]
    ([1.0, 3.0, 5.0], [9.0])
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
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

# --------------------------------------------------------------------------- dependencies
#: Modules the campaign imports on the measuring host, and the pip package of each.
_GPU_MODULES: tuple[tuple[str, str], ...] = (
    ("yaml", "pyyaml"),
    ("numpy", "numpy"),
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("tokenizers", "tokenizers"),
    ("safetensors", "safetensors"),
    ("accelerate", "accelerate"),
    ("diffusers", "diffusers"),
    ("pynvml", "nvidia-ml-py"),
    ("zeus.monitor", "zeus"),
)
_CPU_SKIP = {"pynvml", "zeus.monitor"}
#: Top-level module -> pip package, where the names differ.
_PIP_NAMES = {
    "yaml": "pyyaml", "pynvml": "nvidia-ml-py", "PIL": "pillow", "sklearn": "scikit-learn",
    "dateutil": "python-dateutil", "huggingface_hub": "huggingface-hub", "markdown_it": "markdown-it-py",
    "google": "protobuf", "typing_extensions": "typing-extensions", "pydantic_core": "pydantic-core",
}
WHEELS_HINT = (
    "on a connected machine run `pip download --only-binary=:all: -d wheels diffusers zeus` (and "
    "`pip download --only-binary=:all: --no-deps -d wheels accelerate psutil`), copy wheels/ to this host and run "
    "`pip install --no-index --find-links wheels {packages}` (see data/measurements/README.md)"
)


@dataclass(frozen=True)
class MissingModule:
    """A module the campaign needs that does not import: its pip package and why."""

    module: str
    package: str
    reason: str


def _pip_name(module: str) -> str:
    top = module.split(".")[0]
    return _PIP_NAMES.get(top, top.replace("_", "-"))


def check_dependencies(device: str = "cuda", pipeline_classes: Iterable[str] = ()) -> list[MissingModule]:
    """Import every module the campaign needs (without touching the device); list what fails.

    ``pipeline_classes`` (diffusers class names) are resolved too, so a package that imports
    but lacks one of its own requirements is caught here, not after minutes of work. On
    ``cpu`` neither Zeus nor NVML is needed (the estimate meter measures).

    Example:
        >>> from mlflow_energy.sweep.campaign import check_dependencies
        >>> check_dependencies("cpu")
        []
    """
    missing: list[MissingModule] = []
    gpu = device.split(":", 1)[0] == "cuda"
    for module, package in _GPU_MODULES:
        if not gpu and module in _CPU_SKIP:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a package failing inside its own imports
            name = getattr(exc, "name", None) or module
            pkg = package if name.split(".")[0] == module.split(".")[0] else _pip_name(name)
            missing.append(MissingModule(module, pkg, _one_line(exc)))
    if not any(m.module == "diffusers" for m in missing):
        import diffusers

        for cls in pipeline_classes:
            try:
                getattr(diffusers, cls)
            except Exception as exc:
                name = getattr(exc, "name", None) or _module_in_message(str(exc)) or "diffusers"
                missing.append(MissingModule(f"diffusers.{cls}", _pip_name(name), _one_line(exc)))
    return missing


def _module_in_message(message: str) -> str | None:
    found = re.search(r"No module named '([\w.]+)'", message)
    return found.group(1) if found else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else text or type(exc).__name__


def missing_message(missing: Sequence[MissingModule]) -> str:
    """One line naming the missing packages and the commands that install them offline.

    Example:
        >>> from mlflow_energy.sweep.campaign import MissingModule, missing_message
        >>> missing_message([MissingModule("zeus.monitor", "zeus", "No module named 'zeus'")])[:58]
        "Error: missing package 'zeus' (No module named 'zeus'): on"
    """
    packages = list(dict.fromkeys(m.package for m in missing))
    names = ", ".join(f"'{p}'" for p in packages)
    plural = "s" if len(packages) > 1 else ""
    return (
        f"Error: missing package{plural} {names} ({missing[0].reason}): "
        + WHEELS_HINT.format(packages=" ".join(packages))
    )


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

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dit_steps"] = {int(k): list(v) for k, v in self.dit_steps.items()}
        return out


_SPEC_FIELDS = {f.name for f in dataclasses.fields(CampaignSpec)}


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


# --------------------------------------------------------------------------- prediction
def predict_seconds(flop: float, peak_flops: float, *, efficiency: float = 0.35, overhead_s: float = 0.0) -> float:
    """Predicted seconds to execute ``flop`` at ``efficiency`` x ``peak_flops``, plus ``overhead_s``.

    Example:
        >>> predict_seconds(7e14, peak_flops=1e15, efficiency=0.35)
        2.0
    """
    if not peak_flops > 0:
        raise ConfigError("peak_flops", peak_flops, "a peak throughput in FLOP/s > 0")
    if not 0 < efficiency <= 1:
        raise ConfigError("efficiency", efficiency, "a fraction of the peak in (0, 1]")
    return float(flop) / (efficiency * float(peak_flops)) + float(overhead_s)


def executed_flops(flops: Mapping[str, float], *, steps: int, repeats: int, warmup_steps: int, batch_size: int) -> float:
    """FLOPs a config executes: one warm-up run of ``warmup_steps`` steps plus ``repeats`` full runs.

    ``flops`` is per image (:func:`mlflow_energy.flops.config_flops`); the result covers the batch.

    Example:
        >>> f = {"text_encode": 1.0, "denoise": 40.0, "decode": 5.0, "total": 46.0, "denoise_per_step": 4.0}
        >>> executed_flops(f, steps=10, repeats=2, warmup_steps=1, batch_size=1)
        102.0
    """
    one_run = float(flops["total"])
    per_step = float(flops.get("denoise_per_step", float(flops["denoise"]) / max(steps, 1)))
    warm = (float(flops["text_encode"]) + float(flops["decode"]) + per_step * warmup_steps) if warmup_steps else 0.0
    return batch_size * (repeats * one_run + warm)


@dataclass(frozen=True)
class ConfigPlan:
    """One config of a plan with its FLOPs and predicted wall-clock time.

    Attributes:
        key: a short label (``flux.1-dev 1024px 28 steps``).
        family: family name (configs of a family share one build).
        predicted_s: predicted seconds for warm-up + repeats + overhead.
        cfg: the validated config (``None`` only in hand-made plans).
        flops: FLOPs per image per phase (:func:`mlflow_energy.flops.config_flops`).
        executed_flop: FLOPs the config executes in total (:func:`executed_flops`).
    """

    key: str
    family: str
    predicted_s: float
    cfg: InferenceConfig | None = None
    flops: Mapping[str, float] = field(default_factory=dict)
    executed_flop: float = 0.0


def fit_budget(
    items: Sequence[ConfigPlan],
    budget_s: float,
    *,
    family_overhead_s: float = 0.0,
    startup_s: float = 0.0,
) -> tuple[list[ConfigPlan], list[ConfigPlan]]:
    """Keep the cheapest configs that fit ``budget_s``; drop the largest first.

    Configs are taken cheapest first while ``startup_s`` + one ``family_overhead_s`` per family
    kept + the predicted seconds of the configs kept stays within the budget; the first that
    does not fit and every larger one are dropped (so no kept config is predicted to take
    longer than a dropped one). Returns ``(kept, dropped)``, each cheapest first.

    Example:
        >>> from mlflow_energy.sweep.campaign import ConfigPlan, fit_budget
        >>> items = [ConfigPlan("a", "x", 2.0), ConfigPlan("b", "y", 2.0), ConfigPlan("c", "x", 4.0)]
        >>> kept, dropped = fit_budget(items, 10.0, family_overhead_s=1.0)
        >>> [p.key for p in kept], [p.key for p in dropped]
        (['a', 'b', 'c'], [])
        >>> [p.key for p in fit_budget(items, 7.0, family_overhead_s=1.0)[1]]
        ['c']
    """
    ordered = sorted(items, key=lambda p: (p.predicted_s, p.key))
    total = float(startup_s)
    families: set[str] = set()
    kept: list[ConfigPlan] = []
    for i, item in enumerate(ordered):
        cost = item.predicted_s + (0.0 if item.family in families else float(family_overhead_s))
        if total + cost > budget_s:
            return kept, ordered[i:]
        total += cost
        families.add(item.family)
        kept.append(item)
    return kept, []


def run_order(kept: Sequence[ConfigPlan]) -> list[ConfigPlan]:
    """Run order: families by their kept time (cheapest first), each family's configs cheapest first.

    Example:
        >>> from mlflow_energy.sweep.campaign import ConfigPlan, run_order
        >>> items = [ConfigPlan("x2", "x", 5.0), ConfigPlan("y1", "y", 3.0), ConfigPlan("x1", "x", 1.0)]
        >>> [p.key for p in run_order(items)]
        ['y1', 'x1', 'x2']
    """
    totals: dict[str, float] = {}
    for p in kept:
        totals[p.family] = totals.get(p.family, 0.0) + p.predicted_s
    return sorted(kept, key=lambda p: (totals[p.family], p.family, p.predicted_s, p.key))


@dataclass
class Plan:
    """A campaign fitted to its budget.

    Attributes:
        spec: the campaign spec.
        peak_flops: dense peak of the device, FLOP/s.
        items: the configs to measure, in run order.
        dropped: configs left out because they do not fit, cheapest first.
        missing: required ``(family, resolution, steps)`` points not in ``items``.
    """

    spec: CampaignSpec
    peak_flops: float
    items: list[ConfigPlan]
    dropped: list[ConfigPlan]
    missing: list[tuple[str, int, int]]

    @property
    def families(self) -> list[str]:
        """Families measured, in run order."""
        return list(dict.fromkeys(p.family for p in self.items))

    @property
    def predicted_total_s(self) -> float:
        """Predicted seconds of the whole campaign (start-up, builds and configs)."""
        spec = self.spec
        return spec.startup_s + spec.family_overhead_s * len(self.families) + sum(p.predicted_s for p in self.items)

    def describe(self) -> str:
        """The plan as text: one line per config, then the dropped ones and the total."""
        lines = [
            f"plan: {len(self.items)} configs, {len(self.families)} families, predicted "
            f"{self.predicted_total_s:.0f} s of a {self.spec.budget_s:.0f} s budget "
            f"(peak {self.peak_flops / 1e12:g} TFLOP/s x {self.spec.efficiency:g}, "
            f"+{self.spec.config_overhead_s:g} s/config, +{self.spec.family_overhead_s:g} s/family, "
            f"+{self.spec.startup_s:g} s start-up)",
        ]
        lines += [f"  run   {p.key:<34} {p.executed_flop:10.3e} FLOP  {p.predicted_s:7.1f} s" for p in self.items]
        lines += [f"  drop  {p.key:<34} {p.executed_flop:10.3e} FLOP  {p.predicted_s:7.1f} s" for p in self.dropped]
        if self.missing:
            lines.append("  not covered: " + ", ".join(f"{f} {r}px {s} steps" for f, r, s in self.missing))
        return "\n".join(lines)


def config_key(cfg: InferenceConfig) -> str:
    """A short label of a config: ``flux.1-dev 1024px 28 steps``."""
    return f"{cfg.model} {cfg.height}px {cfg.steps} steps"


def plan_configs(
    spec: CampaignSpec,
    peak_flops: float,
    *,
    flops_fn: Callable[[InferenceConfig], Mapping[str, float]] | None = None,
) -> list[ConfigPlan]:
    """Every grid config with its FLOPs and predicted time (nothing dropped yet)."""
    if flops_fn is None:
        from mlflow_energy.flops import config_flops as flops_fn  # noqa: N813
    out = []
    for cfg in expand_grid(spec):
        flops = dict(flops_fn(cfg))
        executed = executed_flops(
            flops, steps=int(cfg.steps or 1), repeats=cfg.repeats, warmup_steps=spec.warmup_steps,
            batch_size=cfg.batch_size,
        )
        seconds = predict_seconds(executed, peak_flops, efficiency=spec.efficiency, overhead_s=spec.config_overhead_s)
        out.append(ConfigPlan(config_key(cfg), cfg.model, seconds, cfg, flops, executed))
    return out


def plan_campaign(
    spec: CampaignSpec,
    peak_flops: float,
    *,
    flops_fn: Callable[[InferenceConfig], Mapping[str, float]] | None = None,
) -> Plan:
    """Expand the grid, predict each config's time, fit the budget and order the run.

    ``flops_fn`` defaults to :func:`mlflow_energy.flops.config_flops` (analytical, no device).

    Example:
        >>> from mlflow_energy.sweep.campaign import CampaignSpec, plan_campaign
        >>> spec = CampaignSpec(families=("tiny-sd2",), resolutions=(32, 64), steps=(1, "default"),
        ...                     device="cpu", precision="fp32", budget_s=1e6)
        >>> plan = plan_campaign(spec, peak_flops=1e11)
        >>> len(plan.items), plan.dropped
        (4, [])
    """
    items = plan_configs(spec, peak_flops, flops_fn=flops_fn)
    kept, dropped = fit_budget(
        items, spec.budget_s, family_overhead_s=spec.family_overhead_s, startup_s=spec.startup_s
    )
    covered = {(p.family, p.cfg.height, p.cfg.steps) for p in kept if p.cfg is not None}
    grid = {(p.family, p.cfg.height, p.cfg.steps) for p in items if p.cfg is not None}
    missing = [pt for pt in required_points(spec) if pt in grid and pt not in covered]
    return Plan(spec, float(peak_flops), run_order(kept), dropped, missing)


# --------------------------------------------------------------------------- hardware
def peak_flops_of(device_name: str, spec: CampaignSpec) -> float:
    """Dense BF16 peak of the device in FLOP/s: ``spec.peak_tflops`` or the GPU spec table.

    Raises:
        ConfigError: when the GPU is not in the table and no ``peak_tflops`` is given.
    """
    if spec.peak_tflops is not None:
        return float(spec.peak_tflops) * 1e12
    try:
        from mlflow_energy.measure.hardware import find_gpu
    except ImportError:  # pragma: no cover - the package ships hardware.py
        find_gpu = None
    if find_gpu is not None:
        found = find_gpu(device_name)
        if found is not None:
            return found.dense_fp16_tflops * 1e12
    raise ConfigError(
        "peak_tflops", None, f"the dense BF16 peak (TFLOP/s) of {device_name!r}, which the GPU spec table lacks: "
        "pass --peak-tflops"
    )


def device_name(device: str) -> str:
    """The device's name as its driver reports it (``NVIDIA H100 80GB HBM3``, the CPU model)."""
    if device.split(":", 1)[0] == "cuda":
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    from mlflow_energy.measure.meters import cpu_model_name

    return cpu_model_name()


def hardware_slug(name: str) -> str:
    """A file-name-safe short name: ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``.

    Example:
        >>> hardware_slug("NVIDIA H100 80GB HBM3")
        'h100-80gb-hbm3'
        >>> hardware_slug("Intel(R) Xeon(R) CPU @ 2.20GHz")
        'intel-r-xeon-r-cpu-2-20ghz'
    """
    text = re.sub(r"\bnvidia\b", " ", name.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug or "device"


def output_paths(out_dir: str | os.PathLike[str], hardware: str, when: _dt.date | None = None) -> tuple[Path, Path]:
    """``(<out_dir>/<gpu>-<yyyymmdd>.jsonl, <out_dir>/<gpu>-<yyyymmdd>.meta.json)``.

    Example:
        >>> import datetime
        >>> [p.name for p in output_paths("data", "NVIDIA H100 80GB HBM3", datetime.date(2025, 1, 31))]
        ['h100-80gb-hbm3-20250131.jsonl', 'h100-80gb-hbm3-20250131.meta.json']
    """
    stem = f"{hardware_slug(hardware)}-{(when or _dt.date.today()).strftime('%Y%m%d')}"
    base = Path(out_dir)
    return base / f"{stem}.jsonl", base / f"{stem}.meta.json"


def software_versions() -> dict[str, str]:
    """Versions of Python, the measuring stack and the CUDA runtime torch was built with."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("mlflow-energy", "torch", "diffusers", "transformers", "accelerate", "zeus", "nvidia-ml-py"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = str(torch.version.cuda)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out["cudnn"] = str(cudnn)
    return out


# --------------------------------------------------------------------------- running
@dataclass
class CampaignResult:
    """What a campaign run did: rows measured, configs skipped or failed, time taken."""

    jsonl: Path
    meta: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


TABLE_HEADER = (
    f"{'family':<22} {'px':>5} {'steps':>5} {'cfg':>3} {'pred_s':>7} {'real_s':>7} "
    f"{'text_J':>9} {'denoise_J':>10} {'decode_J':>9} {'total_J':>10} {'std_J':>8} {'avg_W':>7} {'gap%':>6}"
)


def table_row(plan_item: ConfigPlan, m: Any, real_s: float) -> str:
    """One printed table row from a runner :class:`Measurement`."""
    cfg = plan_item.cfg
    assert cfg is not None
    e = m.energy_j
    gap = getattr(m, "phase_sum_gap", None)
    gap_txt = f"{100 * gap:6.1f}" if isinstance(gap, (int, float)) else f"{'-':>6}"
    return (
        f"{cfg.model:<22} {cfg.height:>5} {cfg.steps:>5} {'yes' if cfg.cfg else 'no':>3} "
        f"{plan_item.predicted_s:7.1f} {real_s:7.1f} {e.get('text_encode', float('nan')):9.2f} "
        f"{e.get('denoise', float('nan')):10.2f} {e.get('decode', float('nan')):9.2f} "
        f"{e.get('total', float('nan')):10.2f} {float(m.energy_total_std_j or 0.0):8.2f} "
        f"{float(m.power_avg_w or 0.0):7.1f} {gap_txt}"
    )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _sync(device: str) -> None:
    if device.split(":", 1)[0] == "cuda":
        import torch

        torch.cuda.synchronize(torch.device(device))


def free_memory(device: str) -> None:
    """Collect garbage and return cached CUDA memory to the driver (after a family or a failure)."""
    import gc

    gc.collect()
    if device.split(":", 1)[0] == "cuda":
        import torch

        torch.cuda.synchronize(torch.device(device))
        torch.cuda.empty_cache()


def run_campaign(
    plan: Plan,
    *,
    meter: Any,
    jsonl: Path,
    meta: Path,
    command: str,
    echo: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
) -> CampaignResult:
    """Measure the plan family by family; print a row and append a JSONL record per config.

    Each family is built once (random weights, timed) and freed before the next. Before each
    config one warm-up run of ``spec.warmup_steps`` steps at the same size runs (measured
    into nothing); then the runner measures ``repeats`` runs. A config whose predicted time,
    scaled by how much slower than predicted the campaign has run so far, no longer fits the
    budget is skipped, so the campaign ends within the budget even when the prediction was
    optimistic. Configs already in ``jsonl`` (same config hash and hardware) are skipped:
    rerunning resumes. A config that fails is reported on one line and the campaign goes on.
    ``started`` is the :func:`time.monotonic` reading the budget counts from (default: now).
    """
    from mlflow_energy.measure.runner import PipelineCache, measure
    from mlflow_energy.tracking.jsonl import JsonlSink

    spec = plan.spec
    t0 = clock() if started is None else started
    sink = JsonlSink(jsonl)
    done = sink.keys()
    hardware = str(meter.hardware)
    result = CampaignResult(jsonl=Path(jsonl), meta=Path(meta))
    meter_tags = dict(meter.tags())
    schema = _schema()
    info: dict[str, Any] = {
        "hardware": hardware,
        "energy_source": meter.source,
        "driver_version": meter_tags.get(schema.T_DRIVER),
        "power_limit_w": _float_or_none(meter_tags.get(schema.T_POWER_LIMIT)),
        "software": software_versions(),
        "command": command,
        "started_at": _now(),
        "spec": spec.to_dict(),
        "peak_tflops": plan.peak_flops / 1e12,
        "warmup": f"one unmeasured run of {spec.warmup_steps} step(s) at the config's size before each config",
        "plan": [{"key": p.key, "predicted_s": round(p.predicted_s, 2)} for p in plan.items],
        "dropped_by_plan": [p.key for p in plan.dropped],
        "builds_s": {},
        "measured": [],
        "skipped": result.skipped,
        "failed": result.failed,
    }
    Path(meta).parent.mkdir(parents=True, exist_ok=True)
    _write_json(Path(meta), info)
    echo(TABLE_HEADER)
    predicted_done = real_done = 0.0

    def slowdown() -> float:
        return max(1.0, real_done / predicted_done) if predicted_done else 1.0

    by_family: dict[str, list[ConfigPlan]] = {}
    for p in plan.items:
        by_family.setdefault(p.family, []).append(p)
    cache = PipelineCache()
    for family, items in by_family.items():
        todo = []
        for p in items:
            if p.cfg is not None and (p.cfg.config_hash(), hardware) in done:
                result.skipped.append(f"{p.key} (already in {Path(jsonl).name})")
            elif p.cfg is not None:
                todo.append(p)
        if not todo:
            continue
        remaining = spec.budget_s - (clock() - t0)
        if spec.family_overhead_s + todo[0].predicted_s * slowdown() > remaining:
            result.skipped.extend(f"{p.key} (out of time)" for p in todo)
            echo(f"# {family}: skipped, {remaining:.0f} s left")
            continue
        try:
            b0 = clock()
            pipe = cache.get(todo[0].cfg)
            _sync(spec.device)
            build_s = clock() - b0
            info["builds_s"][family] = round(build_s, 2)
            echo(f"# {family}: built with random weights in {build_s:.1f} s")
            for p in todo:
                cfg = p.cfg
                assert cfg is not None
                remaining = spec.budget_s - (clock() - t0)
                if p.predicted_s * slowdown() > remaining:
                    result.skipped.append(f"{p.key} (out of time)")
                    echo(f"# {p.key}: skipped, predicted {p.predicted_s * slowdown():.0f} s > {remaining:.0f} s left")
                    continue
                c0 = clock()
                try:
                    if spec.warmup_steps:
                        warm = dataclasses.replace(cfg, steps=spec.warmup_steps, warmup=0, repeats=1)
                        measure(warm, meter=meter, pipeline=pipe)
                    m = measure(dataclasses.replace(cfg, warmup=0), meter=meter, pipeline=pipe)
                    # The config's warm-up ran just above (shorter): record it as the config's own.
                    m = dataclasses.replace(m, config=dataclasses.replace(m.config, warmup=cfg.warmup),
                                            images=None, timeline=None)
                    record = sink.write(m)
                except Exception as exc:  # one config failing (out of memory, ...) must not end the campaign
                    free_memory(spec.device)
                    result.failed.append(f"{p.key}: {type(exc).__name__}: {_one_line(exc)}")
                    echo(f"# {p.key}: FAILED {type(exc).__name__}: {_one_line(exc)}")
                    _write_json(Path(meta), info)
                    continue
                real_s = clock() - c0
                predicted_done += p.predicted_s
                real_done += real_s
                row = {"key": p.key, "config_hash": cfg.config_hash(), "predicted_s": round(p.predicted_s, 2),
                       "real_s": round(real_s, 2)}
                result.rows.append({**row, "record": record})
                info["measured"].append(row)
                _write_json(Path(meta), info)
                echo(table_row(p, m, real_s))
        except Exception as exc:  # a family that cannot be built: report it and go on
            result.failed.append(f"{family}: {type(exc).__name__}: {_one_line(exc)}")
            echo(f"# {family}: FAILED {type(exc).__name__}: {_one_line(exc)}")
        finally:
            pipe = None
            cache.clear()
            free_memory(spec.device)
    result.elapsed_s = clock() - t0
    info["elapsed_s"] = round(result.elapsed_s, 1)
    info["finished_at"] = _now()
    _write_json(Path(meta), info)
    echo(
        f"# done: {len(result.rows)} measured, {len(result.skipped)} skipped, {len(result.failed)} failed "
        f"in {result.elapsed_s:.0f} s; records in {jsonl}, metadata in {meta}"
    )
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _schema() -> Any:
    from mlflow_energy import schema

    return schema
