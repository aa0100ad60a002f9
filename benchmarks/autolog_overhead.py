"""Overhead of ``mlflow_energy.autolog()`` on the caller's thread, against the same call unhooked, one run.

Paired rounds, plain and autologged calls of one tiny pipeline interleaved so drifts in machine
load hit both alike; the autologged call is timed until the pipeline returns (its run is created
and logged by the background logger; the benchmark flushes and counts the runs at the end).

Prints, with 95% bootstrap intervals over the paired rounds:

- the time autolog adds to a short call (median of ``autolog - plain``, in ms; target <= 5 ms), and
  the CPU time it adds on the caller's thread (``time.thread_time``: hooks, meter reads, the
  journal append; steadier than wall time on a shared machine);
- the extra time of the first autologged call of the process (target <= 0.1 s), and what the
  first ``autolog()`` itself took (it opens the meter, so the first call does not);
- the relative overhead of calls of about 1 s and 3 s (target within 1%), in wall time and in the
  process's CPU time (every thread: the pipeline's, the hooks, the background thread's), the
  work autolog adds, which other processes on a shared machine disturb less than wall time;
- the CPU time of the logger process (the MLflow work, moved off your process, not removed).

``--threads 1`` runs the pipeline on one intra-op thread, so the process's CPU time is the
pipeline's work rather than its spin-waiting threads, and the background logger has a core.

    python benchmarks/autolog_overhead.py                   # tiny-sd2; 25 short rounds, 6 long ones
    python benchmarks/autolog_overhead.py --model tiny-sdxl --rounds 40
    python benchmarks/autolog_overhead.py --threads 1 --rounds 40 --long-rounds 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np


def _ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    boots = [np.median(rng.choice(values, values.size)) for _ in range(2000)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(np.median(values)), float(lo), float(hi)


def _process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of another process (Linux ``/proc``), else ``None``."""
    import os

    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, TypeError, ValueError, IndexError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-sd2")
    ap.add_argument("--size", type=int, default=64, help="image side of the short calls")
    ap.add_argument("--steps", type=int, default=3, help="steps of the short calls")
    ap.add_argument("--rounds", type=int, default=25, help="paired rounds of short calls")
    ap.add_argument("--long-rounds", type=int, default=6, help="paired rounds of the 1-s and 3-s calls")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()

    import mlflow
    import torch

    import mlflow_energy
    from mlflow_energy.autologging import background, patch
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    warnings.filterwarnings("ignore")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp()
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("autolog-overhead")
    pipe = build_pipeline(InferenceConfig(model=args.model).validate())
    rng = np.random.default_rng(args.seed)

    cpu: dict[bool, list[float]] = {False: [], True: []}  # the caller thread's CPU seconds of short calls
    process_cpu: list[float] = []  # the process's CPU seconds of the last call

    def call(size: int, steps: int, autolog: bool) -> float:
        if autolog:
            mlflow_energy.autolog(log_images=False, silent=True)
        try:
            t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
            pipe("a lighthouse at dusk", num_inference_steps=steps, height=size, width=size,
                 generator=torch.Generator().manual_seed(args.seed))
            if size == args.size and steps == args.steps:
                cpu[autolog].append(time.thread_time() - c0)
            process_cpu[:] = [time.process_time() - p0]
            return time.perf_counter() - t0
        finally:
            if autolog:
                mlflow_energy.autolog(disable=True)

    n_autolog = 0
    # The first autologged call of the process: the meter is opened (Zeus imported) by it.
    plain_first = [call(args.size, args.steps, False) for _ in range(3)]
    patch._METERS.clear()
    t0 = time.perf_counter()
    mlflow_energy.autolog(log_images=False, silent=True)  # opens the meter: paid here, once
    enable_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe("a lighthouse at dusk", num_inference_steps=args.steps, height=args.size, width=args.size,
         generator=torch.Generator().manual_seed(args.seed))
    first = time.perf_counter() - t0 - float(np.median(plain_first))
    mlflow_energy.autolog(disable=True)
    n_autolog += 1

    for side in cpu.values():
        side.clear()  # only the paired rounds below
    added = []
    for r in range(args.rounds):  # alternate which call of the pair goes first
        order = (False, True) if r % 2 == 0 else (True, False)
        t = {a: call(args.size, args.steps, a) for a in order}
        added.append(t[True] - t[False])
        n_autolog += 1
    short_plain = float(np.median([call(args.size, args.steps, False) for _ in range(3)]))

    # Calls of about 1 s and 3 s: the step count that takes that long at 128 px.
    per_step = call(128, 4, False) / 4
    long_rows = []
    for target_s in (1.0, 3.0):
        steps = max(1, round(target_s / per_step))
        ratios, cpu_ratios = [], []
        for r in range(args.long_rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            t, c = {}, {}
            for a in order:
                t[a] = call(128, steps, a)
                c[a] = process_cpu[0]
            ratios.append(t[True] / t[False] - 1.0)
            cpu_ratios.append(c[True] / c[False] - 1.0)
            n_autolog += 1
        long_rows.append((target_s, steps, np.array(ratios), np.array(cpu_ratios)))

    t0 = time.perf_counter()
    ok = mlflow_energy.flush(timeout=300)
    flush_s = time.perf_counter() - t0
    logger_cpu = _process_cpu_s(background.logger_pid())
    runs = mlflow.search_runs(experiment_names=["autolog-overhead"], output_format="list", max_results=10000)

    print(f"{args.model}, torch intra-op threads {torch.get_num_threads()}; short call {args.size}x{args.size} px, "
          f"{args.steps} steps: {short_plain * 1e3:.1f} ms plain")
    med, lo, hi = _ci(np.array(added) * 1e3, rng)
    print(f"  added per short call      median {med:+7.2f} ms  (95% CI {lo:+.2f} .. {hi:+.2f}; target <= 5 ms)")
    n = min(len(cpu[False]), len(cpu[True]))
    med, lo, hi = _ci((np.array(cpu[True][:n]) - np.array(cpu[False][:n])) * 1e3, rng)
    print(f"    of it CPU on the caller's thread  median {med:+.2f} ms  (95% CI {lo:+.2f} .. {hi:+.2f}; "
          "less sensitive to other processes than wall time)")
    print(f"  first autologged call     {first * 1e3:+7.1f} ms extra (one measurement; target <= 100 ms); "
          f"the first autolog() itself took {enable_s * 1e3:.0f} ms (opens the meter)")
    for target_s, steps, ratios, cpu_ratios in long_rows:
        med, lo, hi = _ci(ratios * 100, rng)
        print(f"  ~{target_s:.0f}-s call ({steps:3d} steps)    median {med:+6.2f}%  (95% CI {lo:+.2f}% .. {hi:+.2f}%; "
              "target within 1%)")
        med, lo, hi = _ci(cpu_ratios * 100, rng)
        print(f"    process CPU time (all threads)  median {med:+6.2f}%  (95% CI {lo:+.2f}% .. {hi:+.2f}%)")
    print(f"  background: {len(runs)} runs for {n_autolog} autologged calls, flushed in {flush_s:.2f} s "
          f"({'all logged' if ok else 'NOT all logged'})")
    if logger_cpu is not None:
        print(f"  the logger process's CPU time: {logger_cpu:.2f} s, {logger_cpu / max(1, len(runs)) * 1e3:.1f} ms per run "
              "(its start included; off your process, at nice 19)")


if __name__ == "__main__":
    main()
