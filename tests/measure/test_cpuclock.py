"""The CPU estimate's clock: a short window that ran never reads 0 J, even where the kernel's
user/system split is tick-sampled and stands still."""

from __future__ import annotations

import time

from mlflow_energy.measure import _cpuclock, meters


def test_a_short_window_the_split_missed_reads_the_process_clock():
    # getrusage's split stood still (tick-sampled), the nanosecond process clock moved 2 ms
    assert abs(_cpuclock.window_user_cpu_s((3.0, 1.0, 4.0), (3.0, 1.0, 4.002)) - 0.002 * 0.75) < 1e-12


def test_a_long_window_keeps_getrusage_user_time():
    assert abs(_cpuclock.window_user_cpu_s((1.0, 0.0, 1.0), (1.3, 0.2, 1.5)) - 0.3) < 1e-12


def test_estimate_meter_step_is_never_zero_when_the_rusage_split_is_coarse(monkeypatch):
    frozen = type("RU", (), {"ru_utime": 5.0, "ru_stime": 1.0})()
    monkeypatch.setattr(_cpuclock.resource, "getrusage", lambda who: frozen)
    meter = meters.EstimateMeter(tdp_w=100.0, cores=1)
    meter.begin_window("step")
    t = time.perf_counter()
    while time.perf_counter() - t < 0.003:  # 3 ms of work
        pass
    energy, wall = meter.end_window("step")
    assert wall > 0 and energy > 0
