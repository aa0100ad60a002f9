"""Trials Optuna needs to reach the brute-force optimum, in predict mode, against the grid size.

The predictor is the in-process analytic stand-in (``E = a * FLOPs^b`` from the analytical FLOP
counts, latency = energy / 400 W; see ``mlflow_energy/predict/analytic.py``), so one trial
costs milliseconds and the whole grid can be brute-forced. For each seed, :func:`search` runs
``--budget`` trials (TPE, constraints through ``Trial.set_constraint``); we report the first
trial whose best feasible energy equals the brute-force feasible optimum. Median over seeds.

    python benchmarks/search_bench.py            # 10 seeds, 300-trial budget
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="search-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.chdir(tmp)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])

    from mlflow_energy import schema
    from mlflow_energy.predict import AnalyticPredictor
    from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace, search
    from mlflow_energy.search.study import _config

    space = SearchSpace.from_options({
        "model": ["sd2,sdxl,sd3.5-medium"], "steps": ["10:50"], "resolution": ["512,768,1024"],
        "precision": ["fp16,fp32"], "batch_size": ["1,2,4"], "guidance_scale": ["5.0"],
    })
    constraints = Constraints(min_steps=25, max_latency_s=0.5)
    evaluator = PredictEvaluator(AnalyticPredictor(), "H100")

    start = time.perf_counter()
    configs = [_config(v, evaluator) for v in space.grid()]
    scored = evaluator.predict(configs)
    steps = pd.Series([c.steps for c in configs])
    feasible = (steps >= 25) & (scored[schema.M_TIME_TOTAL] <= 0.5)
    optimum = scored.loc[feasible, schema.M_ENERGY_TOTAL].min()
    brute_s = time.perf_counter() - start
    best = configs[scored.loc[feasible, schema.M_ENERGY_TOTAL].idxmin()]
    print(f"grid: {len(configs)} configs, {int(feasible.sum())} feasible; brute force {brute_s:.1f} s")
    print(f"optimum: {best.model} {best.height}x{best.width} steps={best.steps} {best.precision} "
          f"batch={best.batch_size}: {optimum:.4g} J/image")

    needed: list[float] = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        result = search(space, evaluator, constraints, trials=args.budget, seed=seed, experiment="bench",
                        plots=False, log_trials=False, quality_floor=False)  # the brute force has no quality
        frame = result.trials.sort_values("trial")
        energy = frame[schema.M_ENERGY_TOTAL].where(frame["feasible"])
        reached = (energy.cummin() <= optimum * (1 + 1e-9)).to_numpy()
        first = int(reached.argmax()) + 1 if reached.any() else None
        needed.append(first if first is not None else float("inf"))
        print(f"seed {seed}: optimum reached at trial {first if first else f'> {args.budget}'} "
              f"({time.perf_counter() - t0:.1f} s for {args.budget} trials)")
    median = statistics.median(needed)
    print(f"median trials to the brute-force optimum over {args.seeds} seeds: {median:g} "
          f"of a {len(configs)}-config grid ({100 * median / len(configs):.1f}% of the grid); "
          f"reached within {args.budget} trials by {sum(n != float('inf') for n in needed)}/{args.seeds} seeds")


if __name__ == "__main__":
    main()
