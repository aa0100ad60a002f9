"""CPU time of a measurement window at sub-millisecond resolution (the CPU estimate's clock)."""

from __future__ import annotations

import resource
import time

__all__ = ["SHORT_WINDOW_CPU_S", "cpu_clocks", "window_user_cpu_s"]

#: A window with less user + system time than this (in ``getrusage``'s split) reads its CPU time
#: from the nanosecond process clock instead: where the kernel splits user from system time by
#: sampling ticks (4-10 ms), a short window (one denoiser step of a small model) can read 0 s.
SHORT_WINDOW_CPU_S = 0.05


def cpu_clocks() -> tuple[float, float, float]:
    """``(user s, system s, process CPU s)``: getrusage's split and the nanosecond process clock."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime, time.process_time()


def window_user_cpu_s(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """User CPU seconds between two :func:`cpu_clocks` readings, never 0 for a window that ran.

    Over ``SHORT_WINDOW_CPU_S`` or more: getrusage's user time. Shorter: the process clock's CPU
    time (nanoseconds) times the user share of this process so far.

    Example:
        >>> round(window_user_cpu_s((1.0, 0.2, 1.2), (1.0, 0.2, 1.203)), 6)  # a 3 ms window the split missed
        0.0025
    """
    du, ds, dp = (e - s for s, e in zip(start, end, strict=True))
    if du + ds >= SHORT_WINDOW_CPU_S:
        return du
    busy = end[0] + end[1]
    share = end[0] / busy if busy > 0 else 1.0
    return max(0.0, dp) * share
