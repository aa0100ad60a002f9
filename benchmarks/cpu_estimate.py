"""Does the CPU estimate measure work, not waiting? Energy vs time over 20 configs, 1 vs 2 threads.

The estimate is ``TDP / cores x user CPU seconds`` (``estimate:cpu-tdp``). With OpenMP
threads that spin while they wait, CPU seconds grow with the thread count and with whatever
else runs on the machine, not with the work. This benchmark measures, with the runner and the
``EstimateMeter``:

1. 20 configs of the CPU demo (``projects/cpu-demo.yaml``: per ``small-`` family, its grid
   without the largest config, to keep the benchmark short): R^2 of energy against time over
   the configs (log-log and linear), and the spread of J/s between them;
2. the same configs at 1 and at 2 intra-op threads: energy ratio 2-thread / 1-thread
   (the work is the same, so the estimate should be too: within 10%).

The OpenMP wait policy in force is printed (``mlflow_energy`` sets ``OMP_WAIT_POLICY=PASSIVE``
unless it is set already; run with ``OMP_WAIT_POLICY=ACTIVE`` to see the spinning estimate).

Usage::

    python benchmarks/cpu_estimate.py              # about 3 minutes on 2 idle cores
    OMP_WAIT_POLICY=ACTIVE python benchmarks/cpu_estimate.py
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

import mlflow_energy  # noqa: F401  (sets the OpenMP wait policy before torch loads)

SPEC = "projects/cpu-demo.yaml"


def demo_configs(spec_path: str = SPEC) -> list:
    """The demo's configs, per family without its largest (most FLOPs) one, in the sweep's order."""
    from mlflow_energy.flops.count import config_flops
    from mlflow_energy.sweep.spec import SweepSpec, expand

    configs = expand(SweepSpec.from_yaml(spec_path))
    largest = {}
    for cfg in sorted(configs, key=lambda c: config_flops(c)["total"]):  # each config's FLOPs counted once
        largest[cfg.model] = cfg
    return [cfg for cfg in configs if cfg is not largest[cfg.model]]


def r2(x: list[float], y: list[float]) -> float:
    import numpy as np

    xa, ya = np.asarray(x), np.asarray(y)
    slope, icpt = np.polyfit(xa, ya, 1)
    res = ya - (slope * xa + icpt)
    return float(1.0 - (res**2).sum() / ((ya - ya.mean()) ** 2).sum())


def gemm_speedups(sizes: tuple[int, ...] = (256, 512, 1024)) -> dict[int, float]:
    """Wall-time speedup of an n x n x n fp32 matrix product from 1 to 2 intra-op threads (median of 5)."""
    import statistics

    import torch

    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        reps = max(3, int(2e9 / (2 * n**3)))
        median = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a @ b
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(reps):
                    a @ b
                times.append(time.perf_counter() - t0)
            median[threads] = statistics.median(times)
        out[n] = median[1] / median[2]
    torch.set_num_threads(2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spec", default=SPEC)
    args = parser.parse_args()

    import torch

    from mlflow_energy.measure.meters import EstimateMeter, omp_wait_policy
    from mlflow_energy.measure.protocol import Protocol
    from mlflow_energy.measure.runner import build_pipeline, measure

    meter = EstimateMeter()
    protocol = Protocol.fixed()
    print(f"OpenMP wait policy: {omp_wait_policy()}; cores: {meter.cores}; TDP {meter.tdp_w:g} W; "
          f"repeats {args.repeats}; load average at start {os.getloadavg()[0]:.2f} "
          "(above the core count, other processes take CPU and time stops tracking work)")
    print("matrix product n^3 (fp32), speedup 1 -> 2 threads: " + ", ".join(
        f"n={n}: {x:.2f}x" for n, x in gemm_speedups().items()))
    start = time.perf_counter()
    rows = []
    pipes: dict[str, object] = {}
    for demo_cfg in demo_configs(args.spec):
        family, res, steps = demo_cfg.model, demo_cfg.height, demo_cfg.steps
        cfg = dataclasses.replace(demo_cfg, repeats=args.repeats, warmup=1)
        if family not in pipes:
            pipes.clear()
            pipes[family] = build_pipeline(cfg)
        pipe = pipes[family]
        out = {}
        for threads in (2, 1):
            torch.set_num_threads(threads)
            m = measure(cfg, meter=meter, pipeline=pipe, protocol=protocol)
            out[threads] = (m.energy_j["total"], m.time_s["total"])
        rows.append((family, res, steps, out))
        print(f"{family:<22} {res:>4}px {steps} steps: 2 threads {out[2][0]:7.3f} J {out[2][1]:6.3f} s | "
              f"1 thread {out[1][0]:7.3f} J {out[1][1]:6.3f} s | E2/E1 {out[2][0] / out[1][0]:.3f}", flush=True)
    torch.set_num_threads(2)
    e2 = [r[3][2][0] for r in rows]
    t2 = [r[3][2][1] for r in rows]
    ratios = [r[3][2][0] / r[3][1][0] for r in rows]
    print()
    print(f"configs: {len(rows)}; wall {time.perf_counter() - start:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.2f}")
    print(f"energy vs time, 2 threads: R2 log-log {r2([math.log(t) for t in t2], [math.log(e) for e in e2]):.4f}, "
          f"linear {r2(t2, e2):.4f}; J/s min {min(e / t for e, t in zip(e2, t2, strict=True)):.1f} "
          f"max {max(e / t for e, t in zip(e2, t2, strict=True)):.1f}")
    worst = max(abs(r - 1.0) for r in ratios)
    print(f"2 vs 1 thread energy ratio: median {sorted(ratios)[len(ratios) // 2]:.3f}, min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}; worst deviation {worst:.1%} ({'within' if worst <= 0.10 else 'outside'} 10%)")


if __name__ == "__main__":
    main()
