"""What a search returns: the best config, the feasible Pareto front, the trials, a summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mlflow_energy import schema
from mlflow_energy.config import InferenceConfig
from mlflow_energy.errors import MlflowEnergyError
from mlflow_energy.search import trial_runs as st
from mlflow_energy.search.space import Constraints


class NoFeasibleConfigError(MlflowEnergyError):
    """Every trial broke a constraint; the message names the least-violating config and its breaches."""


# ---------------------------------------------------------------------- result
@dataclass
class SearchResult:
    """What :func:`search` returns.

    Attributes:
        best_config: the feasible config with the lowest energy per image.
        best_metrics: its metrics (run-schema keys).
        default_config, default_energy_j: the user's baseline config and its energy per image.
        energy_saved_j, energy_saved_frac: ``baseline - best`` in J per image, and as a fraction of it.
        saving: the fraction with its 90% interval (:class:`~mlflow_energy.search.baseline.Saving`).
        baseline_metrics: the baseline's metrics (energy, and quality where known).
        quality_floor: the default PSNR floor applied (``None``: none, or the user's own constraints).
        notes: plain warnings (no floor, a changed family or output size).
        pareto: feasible energy-vs-quality Pareto front (empty without quality).
        trials: every complete trial: config, metrics, violations, ``feasible``.
        n_trials, n_feasible, n_refused: complete trials, feasible ones, trials the predictor refused.
        parent_run_id, study_name: where it is recorded.
    """

    best_config: InferenceConfig
    best_metrics: dict[str, float]
    default_config: InferenceConfig
    default_energy_j: float
    energy_saved_j: float
    energy_saved_frac: float
    pareto: pd.DataFrame
    trials: pd.DataFrame
    n_trials: int
    n_feasible: int
    parent_run_id: str | None
    study_name: str
    extra: dict[str, Any] = field(default_factory=dict)
    mode: str = "predict"
    saving: Any = None
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    quality_floor: float | None = None
    notes: list[str] = field(default_factory=list)
    n_refused: int = 0

    @property
    def baseline_config(self) -> InferenceConfig:
        return self.default_config

    def headline(self) -> str:
        """One line: the saving against the baseline, its 90% interval, the output size and the quality.

        ``no saving beyond noise`` when the interval holds zero; ``no saving`` when the best config is
        the baseline itself or costs as much.
        """
        how = "predicted" if self.mode == "predict" else "measured"
        c, b = self.best_config, self.default_config
        psnr = self.best_metrics.get(schema.M_QUALITY_PSNR)
        quality = f", PSNR {psnr:.1f} dB" if psnr is not None and math.isfinite(psnr) else ", quality not known"
        if self.quality_floor is not None:
            quality += f" (floor {self.quality_floor:g} dB)"
        s = self.saving
        frac = self.energy_saved_frac
        interval = ""
        if s is not None and math.isfinite(s.low):
            interval = f" (90% interval {100 * s.low:.1f}% to {100 * s.high:.1f}%)"
        at = f"at {c.height}x{c.width}"
        base = f"the baseline ({b.model} at {b.height}x{b.width}, {self.default_energy_j:.4g} J per image, {how})"
        if c.config_hash() == b.config_hash():
            return f"no saving: {base} is the best config found{quality}; keep it, or widen the space"
        if frac <= 0:
            return (f"no saving: the best config found ({self.best_metrics[schema.M_ENERGY_TOTAL]:.4g} J per image, "
                    f"{c.model} {at}{quality}) costs no less than {base}; keep the baseline, or widen the space")
        if s is not None and math.isfinite(s.low) and s.low <= 0 <= s.high:
            return f"no saving beyond noise: {100 * frac:.1f}%{interval} {how}, {c.model} {at}{quality}"
        return (f"saving {100 * frac:.1f}% energy per image{interval}, {how}, {c.model} {at}{quality}: "
                f"{self.default_energy_j:.4g} -> {self.best_metrics[schema.M_ENERGY_TOTAL]:.4g} J per image")

    def summary(self) -> str:
        """A few lines for the terminal: the headline, the best and the baseline config, notes.

        In predict mode every energy is the model's prediction and says so; measure mode's are measured.
        """
        c, d = self.best_config, self.default_config
        how = "predicted" if self.mode == "predict" else "measured"
        base_q = self.baseline_metrics.get(schema.M_QUALITY_PSNR)
        lines = [
            self.headline(),
            f"best config ({self.n_feasible}/{self.n_trials} trials feasible): model={c.model} {c.height}x{c.width} "
            f"steps={c.steps} guidance_scale={c.guidance_scale:g} precision={c.precision} batch_size={c.batch_size} "
            f"scheduler={c.scheduler}",
            f"  {how}: " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(self.best_metrics.items())),
            f"baseline config: model={d.model} {d.height}x{d.width} steps={d.steps} guidance_scale={d.guidance_scale:g} "
            f"precision={d.precision} batch_size={d.batch_size} scheduler={d.scheduler}: {self.default_energy_j:.4g} J "
            f"per image ({how})" + (f", PSNR {base_q:.1f} dB" if base_q is not None and math.isfinite(base_q) else ""),
        ]
        if self.quality_floor is not None:
            lines.append(f"quality floor: PSNR >= {self.quality_floor:g} dB against the reference (the baseline's PSNR "
                         "less 1 dB, at most 30 dB; --min-psnr sets another, --no-quality-floor none)")
        lines.extend(self.notes)
        if self.saving is not None:
            lines.append(f"saving interval: {self.saving.how}")
        if self.n_refused:
            lines.append(f"{self.n_refused} trials refused by the energy model (outside what it has seen): pruned")
        if self.mode == "predict" and self.energy_saved_frac > 0:
            lines.append("measure the best config to confirm it (--mode measure)")
        if len(self.pareto) > 1:
            lines.append(f"Pareto front (energy vs quality): {len(self.pareto)} configs")
        if self.parent_run_id:
            lines.append(f"MLflow parent run: {self.parent_run_id}")
        return "\n".join(lines)


def _pareto(trials: pd.DataFrame, quality_metric: str | None) -> pd.DataFrame:
    """Feasible trials no other feasible trial beats on both energy (lower) and quality (higher)."""
    if not quality_metric or quality_metric not in trials:
        return trials.iloc[0:0]
    data = trials[trials["feasible"] & trials[quality_metric].notna()]
    data = data.sort_values([schema.M_ENERGY_TOTAL, quality_metric], ascending=[True, False])
    keep, best_q = [], -math.inf
    seen: set[tuple[float, float]] = set()
    for idx, row in data.iterrows():
        point = (row[schema.M_ENERGY_TOTAL], row[quality_metric])
        if row[quality_metric] > best_q and point not in seen:
            keep.append(idx)
            best_q = row[quality_metric]
            seen.add(point)
    return data.loc[keep].reset_index(drop=True)


def _trials_frame(trials: Sequence[Any]) -> pd.DataFrame:
    rows = []
    for t in trials:
        row = {"trial": t.number, **t.user_attrs.get(st.UA_CONFIG, {}), **t.user_attrs.get(st.UA_METRICS, {})}
        row.update({schema.constraint_metric(k): v for k, v in st.violations(t).items()})
        row["feasible"] = st.is_feasible(t)
        rows.append(row)
    return pd.DataFrame(rows)


def _infeasible_message(trials: Sequence[Any], constraints: Constraints) -> str:
    def score(t: Any) -> float:
        return sum(max(0.0, v) for v in st.violations(t).values())

    worst = min(trials, key=score)
    cfg = worst.user_attrs.get(st.UA_CONFIG, {})
    metrics = {**worst.user_attrs.get(st.UA_METRICS, {}), schema.P_STEPS: cfg.get(schema.P_STEPS)}
    broken = [c.describe(float(metrics[c.metric])) if metrics.get(c.metric) is not None
              else f"{c.name}: {c.metric} not known for this config (no quality data for it)"
              for c in constraints.active() if st.violations(worst).get(c.name, 0) > 0]
    shown = " ".join(f"{k}={cfg[k]}" for k in (schema.P_MODEL, schema.P_HEIGHT, schema.P_WIDTH, schema.P_STEPS,
                                                schema.P_GUIDANCE_SCALE, schema.P_PRECISION, schema.P_BATCH_SIZE,
                                                schema.P_SCHEDULER) if k in cfg)
    return (f"no feasible config in {len(trials)} trials; the least-violating one ({shown}) breaks "
            + "; ".join(broken) + ": relax that constraint or widen the space")
