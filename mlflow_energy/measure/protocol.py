"""The measurement protocol: warm up until stable, repeat until the interval is tight, summarise robustly.

Careful benchmark tools (pyperf, hyperfine, ML.ENERGY's warm-up plus timed iterations) do
not trust a fixed number of runs. The runner follows this protocol for every config:

1. **Warm-up** (unmeasured): at least ``InferenceConfig.warmup`` runs; more while the time of
   a run still moves by more than :attr:`Protocol.warmup_tolerance` from the previous one,
   at most :attr:`Protocol.max_warmup` runs (allocator caches, lazy kernels, CPU frequency).
2. **Repeats** (measured): at least ``InferenceConfig.repeats`` runs (and at least two, so a
   spread exists), then more until the 95% confidence half-width of the mean total energy is
   within :attr:`Protocol.target` of the mean (Student t, the outliers left out), or
   :attr:`Protocol.max_repeats` runs, or :attr:`Protocol.max_seconds` of measuring.
3. **Summary**: per phase the mean (the logged value, so phases add up to the total), the
   median and a robust spread (1.4826 x the median absolute deviation); a repeat whose total
   lies more than :data:`OUTLIER_K` robust spreads from the median is an outlier: counted,
   and left out of the mean and the interval. A config whose interval misses the target is
   *noisy*: the run is tagged, the CLI says so and ``fit`` down-weights it.

Everything here is pure statistics on lists of numbers, so it is tested on synthetic and
replayed measurements.

Example:
    >>> from mlflow_energy.measure.protocol import Protocol, summarise
    >>> s = summarise([10.0, 10.2, 9.9, 10.1, 25.0])
    >>> s.n, s.outliers, round(s.mean, 2), s.ci95_frac < 0.05
    (5, 1, 10.05, True)
    >>> Protocol().done(n=3, elapsed_s=1.0, totals=[10.0, 10.1, 9.9])
    True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mlflow_energy.errors import ConfigError

#: A repeat farther than this many robust spreads from the median is an outlier.
OUTLIER_K = 3.5
#: Scale of the median absolute deviation to the standard deviation of a normal sample.
MAD_SCALE = 1.4826


def t_quantile_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom (two-sided 95%).

    Example:
        >>> round(t_quantile_975(2), 3), round(t_quantile_975(1000), 2)
        (4.303, 1.96)
    """
    if dof < 1:
        return float("inf")
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


@dataclass(frozen=True)
class Summary:
    """Robust summary of one series of per-repeat values (J or s).

    Attributes:
        n: repeats in the series. outliers: repeats flagged as outliers (left out of the mean).
        mean: mean over the kept repeats. median, spread: median and 1.4826 x MAD over all repeats.
        ci95: half-width of the 95% interval of the mean (Student t over the kept repeats; inf below 2).
        ci95_frac: ``ci95 / mean`` (inf when the mean is 0).
        keep: per repeat, True when it is not an outlier.
    """

    n: int
    outliers: int
    mean: float
    median: float
    spread: float
    ci95: float
    ci95_frac: float
    keep: tuple[bool, ...]


def outlier_mask(values: Sequence[float], k: float = OUTLIER_K) -> list[bool]:
    """True for the values kept: within ``k`` robust spreads (1.4826 x MAD) of the median.

    With a zero MAD (most values equal), only values equal to the median are kept when at
    least half the values are; fewer than 3 values are always all kept.

    Example:
        >>> outlier_mask([1.0, 1.1, 0.9, 1.0, 3.0])
        [True, True, True, True, False]
    """
    if len(values) < 3:
        return [True] * len(values)
    med = statistics.median(values)
    mad = MAD_SCALE * statistics.median(abs(v - med) for v in values)
    if mad == 0.0:
        return [v == med for v in values]
    return [abs(v - med) <= k * mad for v in values]


def summarise(values: Sequence[float], *, keep: Sequence[bool] | None = None) -> Summary:
    """Mean and 95% interval over the kept values, median and robust spread over all.

    ``keep`` defaults to :func:`outlier_mask` of ``values``; pass the mask of the totals to
    summarise a phase over the same repeats.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarise needs at least one value")
    mask = list(keep) if keep is not None else outlier_mask(vals)
    kept = [v for v, k in zip(vals, mask, strict=True) if k] or vals
    mean = statistics.fmean(kept)
    med = statistics.median(vals)
    spread = MAD_SCALE * statistics.median(abs(v - med) for v in vals)
    if len(kept) >= 2:
        ci = t_quantile_975(len(kept) - 1) * statistics.stdev(kept) / math.sqrt(len(kept))
    else:
        ci = float("inf")
    frac = ci / abs(mean) if mean != 0 else float("inf")
    return Summary(len(vals), len(vals) - sum(mask), mean, med, spread, ci, frac, tuple(bool(k) for k in mask))


@dataclass(frozen=True)
class Protocol:
    """When to stop warming up and repeating.

    Attributes:
        target: the wanted 95% half-width of the mean total, as a fraction of it (0.05 = 5%);
            0 turns the adaptive repeats off (exactly ``repeats`` runs).
        max_repeats: at most this many measured runs.
        max_seconds: stop repeating once this many seconds have been spent measuring
            (after the minimum ``repeats``).
        max_warmup: at most this many warm-up runs.
        warmup_tolerance: warm-up ends when a run's time is within this fraction of the previous one.
        progress: called before each run as ``progress(stage, i, least, most)``: ``stage`` is
            ``"warm-up"`` or ``"repeat"``, ``i`` the run's number in its stage (from 1), ``least``
            and ``most`` the stage's bounds (a repeat may also stop at ``max_seconds``). ``None``: silent.

    Example:
        >>> p = Protocol(target=0.05, max_repeats=10)
        >>> p.done(n=2, elapsed_s=0.1, totals=[1.0, 1.5])
        False
        >>> p.done(n=10, elapsed_s=0.1, totals=[1.0, 1.5] * 5)
        True
    """

    target: float = 0.05
    max_repeats: int = 20
    max_seconds: float = 30.0
    max_warmup: int = 5
    warmup_tolerance: float = 0.10
    progress: Callable[[str, int, int, int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.target >= 0 and math.isfinite(self.target)):
            raise ConfigError("target", self.target, "a 95% half-width fraction >= 0 (0.05 = 5%)")
        if self.max_repeats < 1:
            raise ConfigError("max_repeats", self.max_repeats, "an integer >= 1")
        if not self.max_seconds > 0:
            raise ConfigError("max_seconds", self.max_seconds, "a number of seconds > 0")
        if self.max_warmup < 0:
            raise ConfigError("max_warmup", self.max_warmup, "an integer >= 0")
        if not self.warmup_tolerance > 0:
            raise ConfigError("warmup_tolerance", self.warmup_tolerance, "a fraction > 0")

    @classmethod
    def fixed(cls) -> Protocol:
        """Exactly the config's ``repeats`` and ``warmup``: no adaptive runs."""
        return cls(target=0.0, max_warmup=0)

    @property
    def adaptive(self) -> bool:
        return self.target > 0

    def warm(self, n: int, times: Sequence[float], minimum: int) -> bool:
        """True when warm-up may stop after ``n`` runs whose times are ``times``."""
        stop = self._warm(n, times, minimum)
        if not stop and self.progress is not None:
            self.progress("warm-up", n + 1, minimum, max(minimum, self.max_warmup) if self.adaptive else minimum)
        return stop

    def _warm(self, n: int, times: Sequence[float], minimum: int) -> bool:
        if n < minimum:
            return False
        if not self.adaptive or n >= max(minimum, self.max_warmup) or n == 0:
            return True
        if len(times) < 2:
            return False
        prev, last = times[-2], times[-1]
        return prev > 0 and abs(last - prev) / prev <= self.warmup_tolerance

    def done(self, n: int, elapsed_s: float, totals: Sequence[float], minimum: int = 1) -> bool:
        """True when repeating may stop after ``n`` measured runs with per-run totals ``totals``."""
        stop = self._done(n, elapsed_s, totals, minimum)
        if not stop and self.progress is not None:
            self.progress("repeat", n + 1, minimum, max(minimum, self.max_repeats) if self.adaptive else minimum)
        return stop

    def _done(self, n: int, elapsed_s: float, totals: Sequence[float], minimum: int) -> bool:
        if n < minimum:
            return False
        if not self.adaptive:
            return True
        if n >= self.max_repeats or elapsed_s >= self.max_seconds:
            return True
        if n < 2:
            return False
        return self.met(summarise(totals))

    def met(self, summary: Summary) -> bool:
        """True when ``summary``'s interval is within the target (always True when not adaptive)."""
        return not self.adaptive or summary.ci95_frac <= self.target


#: The protocol of :func:`mlflow_energy.measure.measure` when none is given.
DEFAULT_PROTOCOL = Protocol()


#: Seconds of idle measured by :func:`idle_power` by default.
IDLE_SECONDS = 3.0


def idle_power(meter: object, seconds: float = IDLE_SECONDS) -> float:
    """The device's idle power (W): the meter's model of it, else one window over ``seconds`` of sleep.

    The process-attributed CPU estimate implies 0 W (a process that waits uses nothing); a
    Zeus meter (GPU board, CPU package) measures the idle draw, which the runner subtracts,
    phase by phase, for the dynamic energy. Call it when the device is quiet (before a sweep).

    Example:
        >>> from mlflow_energy.measure.meters import EstimateMeter
        >>> idle_power(EstimateMeter(tdp_w=85.0))
        0.0
    """
    import time

    model = getattr(meter, "idle_power_model_w", None)
    if model is not None:
        return float(model)
    if not seconds > 0:
        raise ConfigError("idle_seconds", seconds, "a number of seconds > 0")
    meter.begin_window("idle")  # type: ignore[attr-defined]
    time.sleep(seconds)
    energy_j, time_s = meter.end_window("idle")  # type: ignore[attr-defined]
    return energy_j / time_s if time_s > 0 else 0.0
