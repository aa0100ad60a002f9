"""The measurement protocol: statistics on synthetic series, and the runner driven by scripted meters."""

from __future__ import annotations

import random
import statistics

import pytest

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError
from mlflow_energy.measure.meters import EnergyMeter, ZeusMeter
from mlflow_energy.measure.protocol import Protocol, idle_power, outlier_mask, summarise, t_quantile_975
from mlflow_energy.measure.runner import measure
from mlflow_energy.tracking.jsonl import run_metrics, run_tags


def test_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = random.Random(0)
    trials, covered = 2000, 0
    for _ in range(trials):
        sample = [rng.gauss(10.0, 1.0) for _ in range(5)]
        s = summarise(sample, keep=[True] * 5)
        covered += abs(s.mean - 10.0) <= s.ci95
    assert 0.93 <= covered / trials <= 0.97


def test_t_quantiles_match_the_tables():
    assert t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile_975(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile_975(0) == float("inf")


def test_outliers_are_counted_and_left_out_of_the_mean():
    values = [10.0, 10.1, 9.9, 10.05, 9.95, 30.0]
    assert outlier_mask(values) == [True] * 5 + [False]
    s = summarise(values)
    assert s.outliers == 1 and s.n == 6
    assert s.mean == pytest.approx(10.0)
    assert s.median == pytest.approx(statistics.median(values))
    assert 0 < s.spread < 0.5
    # no outlier in a clean normal sample of 20
    rng = random.Random(1)
    assert summarise([rng.gauss(5, 0.1) for _ in range(20)]).outliers == 0


def test_equal_values_keep_the_majority_and_tiny_series_keep_all():
    assert outlier_mask([1.0, 1.0, 1.0, 2.0]) == [True, True, True, False]
    assert outlier_mask([1.0, 5.0]) == [True, True]
    s = summarise([3.0])
    assert s.ci95 == float("inf") and s.mean == 3.0


def test_stopping_rule():
    p = Protocol(target=0.05, max_repeats=8, max_seconds=100.0)
    assert not p.done(1, 0.0, [10.0])  # one run has no interval
    assert p.done(3, 0.0, [10.0, 10.05, 9.95])  # tight
    assert not p.done(3, 0.0, [10.0, 13.0, 7.0])  # wide
    assert p.done(8, 0.0, [10.0, 13.0, 7.0] * 3)  # repeat cap
    assert p.done(3, 100.0, [10.0, 13.0, 7.0])  # time cap
    assert not p.done(2, 0.0, [10.0, 10.0], minimum=3)  # the config's repeats come first
    fixed = Protocol.fixed()
    assert fixed.done(1, 0.0, [1.0]) and not fixed.adaptive


def test_warmup_runs_until_the_time_settles():
    p = Protocol(max_warmup=5, warmup_tolerance=0.1)
    assert not p.warm(1, [3.0], 1)  # nothing to compare yet
    assert not p.warm(2, [3.0, 1.5], 1)  # still falling
    assert p.warm(3, [3.0, 1.5, 1.45], 1)  # settled
    assert p.warm(5, [5.0, 4.0, 3.0, 2.0, 1.0], 1)  # cap
    assert p.warm(0, [], 0) and Protocol.fixed().warm(2, [3.0, 1.0], 2)


@pytest.mark.parametrize(
    "kwargs, field", [({"target": -0.1}, "target"), ({"max_repeats": 0}, "max_repeats"),
                      ({"max_seconds": 0}, "max_seconds"), ({"warmup_tolerance": 0}, "warmup_tolerance")]
)
def test_bad_protocol_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        Protocol(**kwargs)


class ScriptedMeter(EnergyMeter):
    """Replays per-run energies: the whole window of run k reads ``script[k]`` J, each phase a third."""

    source = "estimate:scripted"
    hardware = "scripted CPU"

    def __init__(self, script: list[float]) -> None:
        self.script = script
        self.run = 0
        self.open: set[str] = set()

    def begin_window(self, name: str) -> None:
        self.open.add(name)

    def end_window(self, name: str) -> tuple[float, float]:
        self.open.discard(name)
        total = self.script[self.run % len(self.script)]
        if name == "whole":
            self.run += 1
            return total, 1.0
        return total / 3.0, 1.0 / 3.0


def test_runner_repeats_until_the_target_then_stops(small_config):
    meter = ScriptedMeter([10.0, 10.1, 9.9, 10.0])
    m = measure(small_config(repeats=1, warmup=0), meter=meter, protocol=Protocol(target=0.05))
    # two runs: t(1) = 12.7 makes the interval 6.3% wide; the third brings it to 2.5%
    assert m.repeats == 3 and not m.noisy and m.outliers == 0
    assert m.energy_j["total"] == pytest.approx(10.0)
    assert m.energy_total_ci95_j / m.energy_j["total"] <= 0.05


def test_runner_tags_a_run_noisy_when_the_cap_hits_first(small_config):
    meter = ScriptedMeter([10.0, 14.0, 6.0, 12.0, 8.0])
    m = measure(small_config(repeats=1, warmup=0), meter=meter, protocol=Protocol(target=0.01, max_repeats=5))
    assert m.repeats == 5 and m.noisy
    assert run_tags(m)[schema.T_NOISY] == "true"
    metrics = run_metrics(m)
    assert metrics[schema.M_REPEATS] == 5
    assert metrics[schema.M_PROTOCOL_TARGET] == 0.01  # the fit weighs the run by its interval against it
    assert metrics[schema.M_ENERGY_TOTAL_CI95] == pytest.approx(m.energy_total_ci95_j)
    assert metrics[schema.M_ENERGY_TOTAL_CI95] > 0.01 * m.energy_j["total"]


def test_runner_leaves_a_replayed_outlier_out(small_config):
    meter = ScriptedMeter([10.0, 10.1, 9.9, 10.0, 10.05, 40.0])
    m = measure(small_config(repeats=6, warmup=0), meter=meter, protocol=Protocol.fixed())
    assert m.repeats == 6 and m.outliers == 1
    assert schema.M_PROTOCOL_TARGET not in run_metrics(m)  # fixed repeats: no target
    assert m.energy_j["total"] == pytest.approx(10.01)
    assert m.energy_median_j["total"] == pytest.approx(10.025)


def test_idle_power_and_dynamic_energy_on_a_constant_power_gpu(fake_gpu, small_config):
    meter = ZeusMeter("cuda")
    try:
        idle = idle_power(meter, seconds=0.5)
        m = measure(small_config(repeats=2, warmup=0), meter=meter, idle_power_w=idle, protocol=Protocol.fixed())
    finally:
        meter.close()
    # The fake board draws 150 W whatever it does: all of it is idle, none is dynamic. The counter and
    # the meter's timestamps are read apart, by 10s of ms on a busy machine: 10% margins.
    assert idle == pytest.approx(150.0, rel=0.1)
    assert m.energy_scope == schema.SCOPE_TOTAL
    assert m.dynamic_energy_j["total"] == pytest.approx(0.0, abs=0.2 * m.energy_j["total"])
    metrics = run_metrics(m)
    assert metrics[schema.M_IDLE_POWER] == pytest.approx(idle)
    assert schema.dynamic_energy_key("denoise") in metrics


def test_the_estimate_holds_dynamic_energy_only(small_config, no_rapl):
    from mlflow_energy.measure.meters import EstimateMeter

    meter = EstimateMeter(tdp_w=85.0)
    assert idle_power(meter) == 0.0
    m = measure(small_config(repeats=2, warmup=0), meter=meter, protocol=Protocol.fixed())
    assert m.energy_scope == schema.SCOPE_DYNAMIC
    assert m.dynamic_energy_j == pytest.approx(m.energy_j)
    assert run_tags(m)[schema.T_ENERGY_SCOPE] == "dynamic"


def test_the_progress_hook_hears_each_run_before_it_starts(small_config, no_rapl):
    from mlflow_energy.measure.meters import EstimateMeter

    heard: list[tuple[str, int, int, int]] = []
    fixed = Protocol(target=0.0, max_warmup=0, progress=lambda *a: heard.append(a))
    m = measure(small_config(repeats=3, warmup=2), meter=EstimateMeter(tdp_w=85.0), protocol=fixed)
    assert (m.warmups, m.repeats) == (2, 3)
    assert heard == [("warm-up", 1, 2, 2), ("warm-up", 2, 2, 2), ("repeat", 1, 3, 3), ("repeat", 2, 3, 3),
                     ("repeat", 3, 3, 3)]
    heard.clear()
    adaptive = Protocol(max_repeats=6, max_warmup=4, progress=lambda *a: heard.append(a))
    m = measure(small_config(repeats=1, warmup=1), meter=EstimateMeter(tdp_w=85.0), protocol=adaptive)
    assert [h for h in heard if h[0] == "warm-up"] == [("warm-up", i, 1, 4) for i in range(1, m.warmups + 1)]
    assert [h for h in heard if h[0] == "repeat"] == [("repeat", i, 2, 6) for i in range(1, m.repeats + 1)]
    assert Protocol(progress=print) == Protocol()  # the hook is no part of what a protocol is
