"""The search space and the constraints of a search: parsing (command line, YAML) and checks.

A dimension is fixed (one value), categorical (several values) or ranged (``LO:HI`` or
``LO:HI:STEP``). On the command line a dimension flag may be repeated or take a comma list;
in a YAML spec a dimension is a scalar, a list, a ``"LO:HI"`` string or ``{low, high, step}``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_energy.errors import ConfigError

# Dimension name -> value type. "resolution" is a shorthand that sets height and width (square).
DIM_TYPES: dict[str, type] = {
    "model": str, "resolution": int, "height": int, "width": int, "steps": int, "guidance_scale": float,
    "precision": str, "batch_size": int, "scheduler": str, "power_limit_w": float, "cfg_passes": int,
}
# Dimensions with a closed set of values: denoiser passes per step are 1 (conditional only) or 2 (CFG).
DIM_VALUES: dict[str, tuple[Any, ...]] = {"cfg_passes": (1, 2)}
RESOLUTION_STEP = 64  # default step of a ranged height/width/resolution
_SIDES = ("resolution", "height", "width")


def _expand(values: dict[str, Any]) -> dict[str, Any]:
    """``resolution`` (square) -> ``height`` and ``width``."""
    if "resolution" in values:
        side = values.pop("resolution")
        values["height"] = values["width"] = side
    return values


@dataclass(frozen=True)
class Dim:
    """One search dimension: ``choices`` (fixed or categorical) or a ``low``..``high`` range."""

    name: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None

    @property
    def ranged(self) -> bool:
        return self.low is not None

    @property
    def fixed(self) -> bool:
        return not self.ranged and len(self.choices) == 1

    def values(self) -> list[Any]:
        """Every value of the dimension (a float range needs a step)."""
        if not self.ranged:
            return list(self.choices)
        assert self.high is not None
        step = self.step if self.step is not None else (1 if DIM_TYPES[self.name] is int else None)
        if step is None:
            raise ConfigError(self.name, f"{self.low}:{self.high}", "LO:HI:STEP (a float range needs a step to be enumerated)")
        n = int(round((self.high - self.low) / step))
        kind = DIM_TYPES[self.name]
        return [kind(round(self.low + i * step, 10)) for i in range(n + 1)]

    def suggest(self, trial: Any) -> Any:
        if self.fixed:
            return self.choices[0]
        if not self.ranged:
            return trial.suggest_categorical(self.name, list(self.choices))
        if DIM_TYPES[self.name] is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step)

    def to_json(self) -> Any:
        if self.ranged:
            return {"low": self.low, "high": self.high, **({"step": self.step} if self.step else {})}
        return self.choices[0] if self.fixed else list(self.choices)


def _cast(name: str, text: Any) -> Any:
    kind = DIM_TYPES[name]
    try:
        if kind is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        return kind(str(text).strip()) if kind is str else kind(text)
    except (TypeError, ValueError):
        raise ConfigError(name, text, f"a value of type {kind.__name__}, a comma list or LO:HI[:STEP]") from None


def parse_dim(name: str, values: Any) -> Dim:
    """A dimension from command-line strings or a YAML value.

    Example:
        >>> parse_dim("steps", ["10:50"]).ranged, parse_dim("precision", ["fp16,bf16"]).choices
        (True, ('fp16', 'bf16'))
    """
    if name not in DIM_TYPES:
        raise ConfigError("space", name, "dimensions " + ", ".join(DIM_TYPES))
    if isinstance(values, Mapping):
        unknown = set(values) - {"low", "high", "step"}
        if unknown or "low" not in values or "high" not in values:
            raise ConfigError(name, dict(values), "a mapping with keys low, high and optional step")
        return _range(name, values["low"], values["high"], values.get("step"))
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(items) == 1 and isinstance(items[0], str) and ":" in items[0]:
        parts = items[0].split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(name, items[0], "LO:HI or LO:HI:STEP")
        return _range(name, *parts)
    choices: list[Any] = []
    for item in items:
        for part in (item.split(",") if isinstance(item, str) else [item]):
            if isinstance(part, str) and ":" in part:
                raise ConfigError(name, item, "either one LO:HI[:STEP] range or a list of values")
            value = _cast(name, part)
            if name in DIM_VALUES and value not in DIM_VALUES[name]:
                raise ConfigError(name, part, " or ".join(map(str, DIM_VALUES[name])))
            if value not in choices:
                choices.append(value)
    if not choices:
        raise ConfigError(name, values, "at least one value")
    return Dim(name, choices=tuple(choices))


def _range(name: str, low: Any, high: Any, step: Any = None) -> Dim:
    kind = DIM_TYPES[name]
    if kind is str or name in DIM_VALUES:
        raise ConfigError(name, f"{low}:{high}", "a value or a list of values" + (
            " (a range needs numbers)" if kind is str else ": " + " or ".join(map(str, DIM_VALUES[name]))))
    lo, hi = _cast(name, low), _cast(name, high)
    st = _cast(name, step) if step not in (None, "") else (RESOLUTION_STEP if name in _SIDES else None)
    if hi < lo:
        raise ConfigError(name, f"{low}:{high}", "LO:HI with LO <= HI")
    if st is not None:
        if st <= 0:
            raise ConfigError(name, step, "a step > 0")
        if not math.isclose(((hi - lo) / st) % 1, 0, abs_tol=1e-9) and not math.isclose(((hi - lo) / st) % 1, 1, abs_tol=1e-9):
            raise ConfigError(name, f"{low}:{high}:{st}", f"a range whose width {hi - lo} is a multiple of the step {st}")
    if lo == hi:
        return Dim(name, choices=(lo,))
    return Dim(name, low=lo, high=hi, step=st)


@dataclass(frozen=True)
class SearchSpace:
    """The configs a search may try. Dimensions left out take the family's default.

    Example:
        >>> space = SearchSpace.from_options({"model": ["tiny-sd2"], "steps": ["1:8"], "resolution": ["32"]})
        >>> space.size(), space.fixed_values()["height"], space.fixed_values()["width"]
        (8, 32, 32)
    """

    dims: Mapping[str, Dim]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SearchSpace:
        """From ``{dimension: values}``; empty values are skipped; ``resolution`` sets height and width."""
        dims: dict[str, Dim] = {}
        for name, values in options.items():
            if values is None or (isinstance(values, (list, tuple)) and not values):
                continue
            if name == "resolution":
                for side in ("height", "width"):
                    if side in options and options[side] not in (None, (), []):
                        raise ConfigError("resolution", values, f"either resolution or {side}, not both")
            dims[name] = parse_dim(name, values)
        if "model" not in dims:
            raise ConfigError("model", None, "at least one model family (--model NAME, repeatable)")
        return cls(dims)

    def dim(self, name: str) -> Dim | None:
        return self.dims.get(name)

    def fixed_values(self) -> dict[str, Any]:
        """The fixed dimensions' values (``resolution`` expanded to height and width)."""
        return _expand({name: d.choices[0] for name, d in self.dims.items() if d.fixed})

    def searched(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``config`` that the space's dimensions set (``resolution``: height and width).

        What a ``best_*`` param may name: values the space allowed, not the evaluator's
        settings (device, weights, seed, repeats).

        Example:
            >>> space = SearchSpace.from_options({"model": ["tiny-sd2"], "resolution": ["32,64"]})
            >>> space.searched({"model": "tiny-sd2", "height": 32, "width": 32, "device": "cuda"})
            {'model': 'tiny-sd2', 'height': 32, 'width': 32}
        """
        names = set(_expand({name: None for name in self.dims}))
        return {k: v for k, v in config.items() if k in names}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for one value of every dimension."""
        return _expand({name: d.suggest(trial) for name, d in self.dims.items()})

    def grid(self) -> list[dict[str, Any]]:
        """Every config of the space (brute force); float ranges need a step."""
        names = list(self.dims)
        combos = itertools.product(*(self.dims[n].values() for n in names))
        return [_expand(dict(zip(names, combo, strict=True))) for combo in combos]

    def size(self) -> int:
        return math.prod(len(d.values()) for d in self.dims.values())

    def to_json(self) -> str:
        return json.dumps({name: d.to_json() for name, d in self.dims.items()}, sort_keys=True)

    def corner_values(self) -> Iterable[dict[str, Any]]:
        """Per dimension, each of its choices or its range ends, the other dimensions at their first value."""
        first = {n: (d.low if d.ranged else d.choices[0]) for n, d in self.dims.items()}
        for name, d in self.dims.items():
            for value in ((d.low, d.high) if d.ranged else d.choices):
                yield _expand({**first, name: DIM_TYPES[name](value)})


# ---------------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Constraint:
    """One bound. ``metric`` names the trial value it bounds; ``upper``: value <= bound, else value >= bound."""

    name: str
    metric: str
    bound: float
    upper: bool
    unit: str = ""

    def violation(self, value: float) -> float:
        """Relative violation: <= 0 when the bound holds, ``(value - bound) / |bound|`` otherwise."""
        scale = abs(self.bound) or 1.0
        diff = (value - self.bound) if self.upper else (self.bound - value)
        return diff / scale

    def describe(self, value: float) -> str:
        op = ">" if self.upper else "<"
        return f"{self.name}: {self.metric}={value:.4g}{self.unit} {op} {self.bound:g}{self.unit}"


@dataclass(frozen=True)
class Constraints:
    """The constraints of a search; ``None`` leaves a bound out.

    Example:
        >>> c = Constraints(min_steps=4, max_latency_s=2.0)
        >>> [x.name for x in c.active()]
        ['min_steps', 'max_latency_s']
    """

    min_steps: int | None = None
    max_steps: int | None = None
    min_psnr: float | None = None
    min_ssim: float | None = None
    min_clip_score: float | None = None
    max_latency_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(name, value, "an integer >= 1")
        if self.min_steps and self.max_steps and self.min_steps > self.max_steps:
            raise ConfigError("max_steps", self.max_steps, f"an integer >= min_steps ({self.min_steps})")
        if self.max_latency_s is not None and not self.max_latency_s > 0:
            raise ConfigError("max_latency_s", self.max_latency_s, "a number of seconds > 0")
        if self.min_ssim is not None and not -1 <= self.min_ssim <= 1:
            raise ConfigError("min_ssim", self.min_ssim, "a number in [-1, 1]")

    def active(self) -> list[Constraint]:
        """The bounds that are set, as :class:`Constraint` records (metric names of the run schema)."""
        from mlflow_energy import schema

        table = [
            ("min_steps", schema.P_STEPS, False, ""),
            ("max_steps", schema.P_STEPS, True, ""),
            ("min_psnr", schema.M_QUALITY_PSNR, False, " dB"),
            ("min_ssim", schema.M_QUALITY_SSIM, False, ""),
            ("min_clip_score", schema.M_QUALITY_CLIP, False, ""),
            ("max_latency_s", schema.M_TIME_TOTAL, True, " s"),
        ]
        return [Constraint(n, m, float(getattr(self, n)), up, u) for n, m, up, u in table if getattr(self, n) is not None]

    def needs(self, metric: str) -> bool:
        return any(c.metric == metric for c in self.active())

    def as_dict(self) -> dict[str, float]:
        return {c.name: c.bound for c in self.active()}


# ---------------------------------------------------------------------- YAML spec
SPEC_KEYS = ("space", "constraints", "search")


def load_spec(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a YAML search spec: ``space`` (dimensions), ``constraints``, ``search`` (options).

    Example:
        >>> spec = load_spec("projects/search-space.yaml")  # doctest: +SKIP
        >>> sorted(spec)  # doctest: +SKIP
        ['constraints', 'search', 'space']
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError("spec", str(path), "a YAML file with sections space, constraints, search")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("spec", str(path), f"valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping) or set(data) - set(SPEC_KEYS):
        extra = sorted(set(data) - set(SPEC_KEYS)) if isinstance(data, Mapping) else data
        raise ConfigError("spec", extra, "a mapping with sections " + ", ".join(SPEC_KEYS))
    out: dict[str, dict[str, Any]] = {}
    for key in SPEC_KEYS:
        section = data.get(key) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"spec.{key}", section, "a mapping")
        out[key] = {str(k).replace("-", "_"): v for k, v in section.items()}
    unknown = set(out["constraints"]) - {f for f in Constraints.__dataclass_fields__ if not f.startswith("_")}
    if unknown:
        raise ConfigError("spec.constraints", sorted(unknown)[0], "min_steps, max_steps, min_psnr, min_ssim, min_clip_score, max_latency_s")
    bad = set(out["space"]) - set(DIM_TYPES)
    if bad:
        raise ConfigError("spec.space", sorted(bad)[0], "dimensions " + ", ".join(DIM_TYPES))
    return out


def merge_space(spec_space: Mapping[str, Any], cli: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Command-line dimensions override the spec's (``resolution`` and ``height``/``width`` alike)."""
    merged = dict(spec_space)
    for name, values in cli.items():
        if not values:
            continue
        if name == "resolution":
            merged.pop("height", None)
            merged.pop("width", None)
        elif name in ("height", "width"):
            merged.pop("resolution", None)
        merged[name] = list(values)
    return merged
