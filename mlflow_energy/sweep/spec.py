"""Sweep specs: a YAML grid of inference configs, expanded in run order and split into shards.

Spec format (``projects/cpu-demo.yaml`` is a complete example)::

    name: cpu-demo                  # parent run name (default: the file name)
    experiment: mlflow-energy-demo  # default experiment (``--experiment`` wins)
    device: cpu                     # one device per sweep
    weights: random                 # or a local directory / hub id
    repeats: 2                      # at least this many measured runs per config
    warmup: 1                       # at least this many warm-up runs
    protocol:                       # optional: measure/protocol.py (these are the defaults)
      target: 0.05                  #   95% half-width of the mean total, fraction of it
      max_repeats: 20               #   at most this many measured runs
      max_seconds: 30               #   ... or this many seconds of measuring per config
      max_warmup: 5
    idle_seconds: 3                 # idle power measured before the sweep (Zeus meters)
    carbon_intensity: DEU           # grid for carbon/co2e_g: gCO2e/kWh, WORLD, a country code or a
                                    #   cloud region (gcp:us-central1); --carbon-intensity/--region win
    idle_each_config: false         # true: measured again before each config
    shards: 4                       # optional: the task count of the array for --shard auto (as
                                    #   --shard auto/4; a resubmitted task then knows its shard)
    seed: 0
    grid:                           # the cross product of these lists
      model: [tiny-sd2]
      resolution: [32, 64]          # square sizes; or "HxW" strings / [H, W] pairs
      steps: [2, 4]
      guidance_scale: [1.0, null]   # null: the family default
      precision: [fp32]
      batch_size: [1]
      scheduler: [default]
      cfg_passes: [null]            # 1 or 2 denoiser passes per step; null: what pipe(prompt) does
      power_limit_w: [null]         # GPU power limit in watts (NVIDIA; null: as it is); restored after
    overrides:                      # per model: replaces grid lists (and weights)
      tiny-sd2: {steps: [2]}

Configs are ordered so that those sharing a pipeline (model, weights, precision, device)
run back to back: one build per group. A config that fails (bad value for its family,
out of memory, any error) becomes a FAILED child run tagged with the reason and the sweep
goes on. A config already FINISHED in the experiment on the same hardware (by config
hash) is skipped, so an interrupted sweep resumes where it stopped. ``shard=(i, n)``
keeps the configs whose hash is ``i`` modulo ``n``: n workers split a sweep exactly.

Limits (each refused with one line naming the field): at most :data:`MAX_CONFIGS` configs
(``max_configs=`` / ``--max-configs`` raises it), ``repeats`` up to :data:`MAX_REPEATS`,
``warmup`` up to :data:`MAX_WARMUP`, ``protocol.max_seconds`` and ``idle_seconds`` finite and up
to :data:`MAX_PROTOCOL_SECONDS` / :data:`MAX_IDLE_SECONDS`, names as long as the tracking
store keeps them; the file itself UTF-8 (a UTF-16 or UTF-8 byte-order mark is read too), at
most :data:`MAX_SPEC_BYTES` and nested at most :data:`MAX_SPEC_DEPTH` levels.

Example:
    >>> from mlflow_energy.sweep import SweepSpec
    >>> spec = SweepSpec.from_dict({"grid": {"model": ["tiny-sd2"], "resolution": [32, 64], "steps": [1, 2]}})
    >>> len(spec.configs())
    4
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow_energy.config import SCHEDULER_DEFAULT, InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.protocol import IDLE_SECONDS, Protocol
from mlflow_energy.sweep._axes import check_axes, short
from mlflow_energy.sweep._specfile import MAX_SPEC_BYTES, MAX_SPEC_DEPTH, load_yaml, read_text  # noqa: F401 - limits documented here
from mlflow_energy.tracking.filters import MAX_EXPERIMENT_NAME, check_name

GRID_KEYS = ("model", "resolution", "steps", "guidance_scale", "precision", "batch_size", "scheduler", "cfg_passes",
             "power_limit_w")
OVERRIDE_KEYS = (*GRID_KEYS[1:], "weights")
TOP_KEYS = ("name", "experiment", "device", "weights", "repeats", "warmup", "seed", "grid", "overrides", "description",
            "protocol", "idle_seconds", "idle_each_config", "carbon_intensity", "shards")
PROTOCOL_KEYS = ("target", "max_repeats", "max_seconds", "max_warmup", "warmup_tolerance")

#: More configs than this is most likely a typo in a grid list (a 100k-config CPU sweep runs for
#: weeks); ``max_configs`` / ``--max-configs N`` raises the cap for a sweep meant that big.
MAX_CONFIGS = 10_000
#: Measured runs per config: beyond 1000 the 95% interval is limited by drift, not by samples.
MAX_REPEATS = 1000
#: Warm-up runs per config (and ``protocol.max_warmup``): caches and clocks settle within a few.
MAX_WARMUP = 100
#: ``protocol.max_seconds``: one hour of measuring per config.
MAX_PROTOCOL_SECONDS = 3600.0
#: ``idle_seconds``: ten minutes of idle power.
MAX_IDLE_SECONDS = 600.0
#: The spec name is the sweep run's name (``runs.name`` holds 250 characters) plus a shard
#: suffix, and the claims ledger's name with a prefix.
MAX_NAME = 200
#: ``shards``: a Kubernetes Indexed Job has at most 100,000 completions (Slurm arrays are smaller).
MAX_SHARDS = 100_000
#: ``seed``: what ``torch.manual_seed`` accepts.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec (see the module doc for the YAML format)."""

    grid: dict[str, list[Any]]
    overrides: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    name: str = "sweep"
    experiment: str | None = None
    device: str = "cpu"
    weights: str = "random"
    repeats: int = 1
    warmup: int = 1
    seed: int = 0
    source: str = ""
    protocol: Protocol = field(default_factory=Protocol)
    idle_seconds: float = IDLE_SECONDS
    idle_each_config: bool = False
    carbon_intensity: str | float | None = None
    shards: int | None = None  # --shard auto's task count (as --shard auto/N); None: the scheduler's

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "sweep", source: str = "",
                  max_configs: int | None = MAX_CONFIGS) -> SweepSpec:
        """Check a parsed spec; a bad value raises a one-line :class:`ConfigError` naming it.

        ``max_configs``: refuse a grid of more configs (``None``: no cap).
        """
        try:
            return cls._from_dict(data, name=name, source=source, max_configs=max_configs)
        except ConfigError as exc:  # a long value is cut short, so the error stays one short line
            raise ConfigError(exc.field, short(exc.value), exc.allowed) from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], *, name: str, source: str, max_configs: int | None) -> SweepSpec:
        from mlflow_energy.families import family_names

        if not isinstance(data, Mapping):
            raise ConfigError("spec", type(data).__name__, "a YAML mapping with a 'grid' key")
        for key in data:
            if key not in TOP_KEYS:
                raise ConfigError(str(short(key)), short(data[key]), "one of the keys " + ", ".join(TOP_KEYS))
        if "grid" not in data:
            raise ConfigError("grid", None, "a mapping with at least 'model'")
        grid = check_axes("grid", data["grid"], GRID_KEYS)
        if "model" not in grid:
            raise ConfigError("grid.model", None, "a list of family names")
        known = family_names()
        for model in grid["model"]:
            if model not in known:
                raise ConfigError("grid.model", model, "one of " + ", ".join(known))
        overrides_raw = data.get("overrides") or {}
        if not isinstance(overrides_raw, Mapping):
            raise ConfigError("overrides", short(overrides_raw), "a mapping of model name to grid lists")
        overrides = {}
        for model, axes in overrides_raw.items():
            if model not in grid["model"]:
                raise ConfigError("overrides", short(model), "a model listed in grid.model")
            overrides[model] = check_axes(f"overrides.{model}", axes, OVERRIDE_KEYS)
        kwargs: dict[str, Any] = {}
        for key, minimum, maximum in (("repeats", 1, MAX_REPEATS), ("warmup", 0, MAX_WARMUP), ("seed", 0, MAX_SEED)):
            if key in data:
                v = data[key]
                if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum:
                    raise ConfigError(key, v, f"an integer from {minimum} to {maximum}")
                kwargs[key] = v
        for key in ("device", "weights"):
            if key in data and data[key] is not None:
                if not isinstance(data[key], str) or not data[key]:
                    raise ConfigError(key, data[key], "a non-empty string")
                kwargs[key] = data[key]
        if data.get("experiment") is not None:
            kwargs["experiment"] = check_name("experiment", data["experiment"], MAX_EXPERIMENT_NAME)
        if data.get("name") is not None:
            kwargs["name"] = check_name("name", data["name"], MAX_NAME)
        if data.get("protocol") is not None:
            kwargs["protocol"] = _protocol(data["protocol"])
        if "idle_seconds" in data:
            v = data["idle_seconds"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_IDLE_SECONDS:
                raise ConfigError("idle_seconds", v, f"a number of seconds > 0 and <= {MAX_IDLE_SECONDS:g}")
            kwargs["idle_seconds"] = float(v)
        if "idle_each_config" in data:
            if not isinstance(data["idle_each_config"], bool):
                raise ConfigError("idle_each_config", data["idle_each_config"], "true or false")
            kwargs["idle_each_config"] = data["idle_each_config"]
        if data.get("shards") is not None:
            v = data["shards"]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SHARDS:
                raise ConfigError("shards", v, f"an integer from 1 to {MAX_SHARDS}: the number of tasks of the "
                                  "whole job array (--shard auto reads it as --shard auto/N)")
            kwargs["shards"] = v
        if data.get("carbon_intensity") is not None:  # refused now, not after measuring
            from mlflow_energy.carbon import checked_intensity

            kwargs["carbon_intensity"] = checked_intensity(data["carbon_intensity"])
        if "name" not in kwargs:
            kwargs["name"] = check_name("name", name, MAX_NAME)
        spec = cls(grid=grid, overrides=overrides, source=source, **kwargs)
        n = spec.size()
        if max_configs is not None and n > max_configs:
            raise ConfigError("grid", f"{n} configs", f"at most {max_configs} configs (the product of the grid lists; "
                              "--max-configs N raises the cap)")
        return spec

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, max_configs: int | None = MAX_CONFIGS) -> SweepSpec:
        """Read and check a YAML spec file (limits: see the module doc)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError("spec", path, "an existing YAML file")
        source = read_text(path)
        data = load_yaml(path, source)
        name = os.path.splitext(os.path.basename(path))[0]
        return cls.from_dict(data or {}, name=name, source=source, max_configs=max_configs)

    def size(self) -> int:
        """How many configs :meth:`configs` returns, counted without building them."""
        total = 0
        for model in self.grid["model"]:
            axes = {**self.grid, **self.overrides.get(model, {})}
            total += math.prod(len(axes.get(k, [None])) for k in GRID_KEYS[1:])
        return total

    def configs(self) -> list[InferenceConfig]:
        """Every config of the grid (unvalidated), grouped by pipeline (model, weights, precision)."""
        out = []
        for model in self.grid["model"]:
            axes = {**self.grid, **self.overrides.get(model, {})}
            weights = axes.get("weights", [self.weights])[0]
            for res, steps, guidance, precision, batch, sched, passes, limit in itertools.product(
                axes.get("resolution", [(None, None)]),
                axes.get("steps", [None]),
                axes.get("guidance_scale", [None]),
                axes.get("precision", ["fp32"]),
                axes.get("batch_size", [1]),
                axes.get("scheduler", [SCHEDULER_DEFAULT]),
                axes.get("cfg_passes", [None]),
                axes.get("power_limit_w", [None]),
            ):
                out.append(
                    InferenceConfig(
                        model=model, height=res[0], width=res[1], steps=steps, guidance_scale=guidance,
                        weights=weights, precision=precision, batch_size=batch, device=self.device,
                        scheduler=sched, seed=self.seed, repeats=self.repeats, warmup=self.warmup,
                        cfg_passes=passes,
                        power_limit_w=limit,
                    )
                )
        return sorted(out, key=_order_key)


def _protocol(raw: Any) -> Protocol:
    if not isinstance(raw, Mapping):
        raise ConfigError("protocol", short(raw), "a mapping with keys " + ", ".join(PROTOCOL_KEYS))
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in PROTOCOL_KEYS:
            raise ConfigError(f"protocol.{key}", short(value), "one of the keys " + ", ".join(PROTOCOL_KEYS))
        is_int = key in ("max_repeats", "max_warmup")
        if isinstance(value, bool) or not isinstance(value, int if is_int else (int, float)):
            raise ConfigError(f"protocol.{key}", value, "an integer" if is_int else "a number")
        if not is_int and not math.isfinite(value):
            raise ConfigError(f"protocol.{key}", value, "a finite number")
        maximum = _PROTOCOL_MAX.get(key)
        if maximum is not None and value > maximum:
            raise ConfigError(f"protocol.{key}", value, f"at most {maximum:g}")
        kwargs[key] = value
    try:
        return Protocol(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"protocol.{exc.field}", exc.value, exc.allowed) from None


_PROTOCOL_MAX = {"max_repeats": MAX_REPEATS, "max_warmup": MAX_WARMUP, "max_seconds": MAX_PROTOCOL_SECONDS}


def _order_key(cfg: InferenceConfig) -> tuple[Any, ...]:
    return (
        cfg.model, cfg.weights, cfg.precision, cfg.device, cfg.scheduler,
        cfg.height or 0, cfg.width or 0, cfg.steps or 0, -1.0 if cfg.guidance_scale is None else cfg.guidance_scale,
        cfg.batch_size, cfg.cfg_passes or 0, -1.0 if cfg.power_limit_w is None else cfg.power_limit_w,
    )


def resolved(cfg: InferenceConfig) -> InferenceConfig:
    """``cfg`` validated, or as it is when it does not validate (its failure shows when run)."""
    try:
        return cfg.validate()
    except ConfigError:
        return cfg


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` or ``""`` -> ``None``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
    """
    if not text:
        return None
    allowed = "I/N with integers 0 <= I < N (e.g. 0/4)"
    i, sep, n = str(text).partition("/")
    if not sep or not i.strip().isdigit() or not n.strip().isdigit():
        raise ConfigError("shard", text, allowed)
    index, count = int(i), int(n)
    if count < 1 or index >= count:
        raise ConfigError("shard", text, allowed)
    return index, count


def in_shard(cfg: InferenceConfig, shard: tuple[int, int] | None) -> bool:
    """True when ``cfg`` belongs to shard ``(i, n)``: its config hash modulo ``n`` is ``i``."""
    if shard is None:
        return True
    index, count = shard
    return int(resolved(cfg).config_hash(), 16) % count == index


def expand(spec: SweepSpec, shard: tuple[int, int] | None = None) -> list[InferenceConfig]:
    """The configs of ``spec`` in run order, restricted to ``shard``."""
    return [c for c in spec.configs() if in_shard(c, shard)]
