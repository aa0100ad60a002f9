"""Planning a campaign, anywhere, without a GPU: predicted time per config, the budget, the run order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import ConfigError
from mlflow_energy.sweep.campaign.spec import CampaignSpec, expand_grid, required_points


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
    limit = f" {cfg.power_limit_w:g}W" if cfg.power_limit_w is not None else ""
    return f"{cfg.model} {cfg.height}px {cfg.steps} steps{limit}"


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
