"""Sweep overhead per config: ``run_sweep`` against a plain loop that logs one MLflow run per config.

One fresh SQLite tracking store (in a temporary directory), N configs of a one-model grid.
The sweep is the library entry the CLI uses (:func:`mlflow_energy.sweep.run_sweep`, claims in
the store's database, the journal, resume, the summary): only the measurement below it is faked
(``measure`` returns a fixed result at once, no pipeline is built, idle power is 0 W), so what is
timed is the sweep's own code. The plain loop logs, per config, one run with as many params,
metrics and tags as a sweep's child run carries (``mlflow.start_run``, ``log_params``,
``log_metrics``, ``set_tags``), and a second loop that also logs each run's ``config.json``
artifact, which every measurement run carries (the run schema): the sweep against that one is
its overhead beyond logging the same run. Sweep and loops alternate in paired rounds, each on a
new experiment, so drifts in the load of a shared machine hit them alike.

Prints ms per config for both (median over the rounds) and the ratio sweep / loop with a 95%
bootstrap interval over the paired rounds (target: <= 1.0); ``--profile FILE`` also runs one
sweep under cProfile, prints its top calls and saves the profile; ``--parts`` also times the
sweep's steps (logging each run, the summary and its plot, claims, the journal) over a few
more sweeps, in ms per config; ``--plot N ...`` only times the summary's plot
(:func:`~mlflow_energy.sweep.summary.energy_plot`) alone for N configs each (best of 3).

    python benchmarks/sweep_overhead.py                        # 40 configs, 5 paired rounds
    python benchmarks/sweep_overhead.py --configs 40 --rounds 8 --profile /tmp/sweep.prof
    python benchmarks/sweep_overhead.py --configs 40 --rounds 4 --parts
    python benchmarks/sweep_overhead.py --plot 10 40 160
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np

HARDWARE = "benchmark-cpu"


def _fake_measure(cfg: Any, *, meter: Any = None, pipeline: Any = None, protocol: Any = None,
                  idle_power_w: float | None = None) -> Any:
    """A fixed measurement of ``cfg``, returned at once (what a real one records, with made-up values)."""
    from mlflow_energy import schema
    from mlflow_energy.measure.runner import Measurement

    phases = (*schema.PHASES, schema.PHASE_TOTAL)
    energy = {p: 1.0 for p in schema.PHASES}
    energy[schema.PHASE_TOTAL] = float(len(schema.PHASES))
    return Measurement(
        config=cfg, energy_j=energy, energy_total_std_j=0.01, time_s={p: 0.1 for p in phases},
        flops={p: 1e9 for p in (*phases, *schema.FLOPS_PHASES)}, power_avg_w=30.0, whole_window_j=energy[schema.PHASE_TOTAL],
        phase_sum_gap=0.0, energy_source=meter.source, hardware=meter.hardware, repeats=3, warmups=1,
        energy_total_ci95_j=0.02, protocol_target=0.05, energy_median_j=dict(energy),
        energy_spread_j={p: 0.01 for p in phases}, idle_power_w=0.0, dynamic_energy_j=dict(energy),
    )


def _fake_below_the_sweep() -> Any:
    """Fake the measurement (runner.measure, the pipeline cache, idle power); the sweep's code stays real."""
    from mlflow_energy.measure import protocol, runner

    runner.measure = _fake_measure
    runner.PipelineCache.get = lambda self, cfg: None
    protocol.idle_power = lambda meter, seconds=0.0: 0.0
    return SimpleNamespace(hardware=HARDWARE, source="zeus:benchmark", close=lambda: None)


def _spec(n: int) -> Any:
    from mlflow_energy.sweep import SweepSpec

    return SweepSpec.from_dict({"name": "overhead", "device": "cpu", "repeats": 1, "warmup": 0, "idle_seconds": 0.1,
                                "grid": {"model": ["tiny-sd2"], "resolution": [32], "steps": list(range(1, n + 1))}})


def _sweep(spec: Any, experiment: str, meter: Any, journal: str) -> float:
    from mlflow_energy.sweep import run_sweep

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # one line per config, as `mlflow run` shows them
        result = run_sweep(spec, experiment=experiment, meter=meter, progress=False, journal=journal)
    took = time.perf_counter() - start
    assert result.measured == result.total and not result.failed, result
    return took


def _child_fields(experiment: str) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """Params, metrics and tags of one child run of a sweep (the plain loop logs as many)."""
    import mlflow

    from mlflow_energy import schema

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment).experiment_id
    run = client.search_runs([exp], f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}'", max_results=1)[0]
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return dict(run.data.params), dict(run.data.metrics), tags


def _loop(n: int, experiment: str, fields: tuple[dict[str, str], dict[str, float], dict[str, str]],
          artifact: bool = False) -> float:
    """Seconds for ``n`` runs; ``artifact``: each also logs its ``config.json``, as every measurement run does."""
    import mlflow

    params, metrics, tags = fields
    start = time.perf_counter()
    exp = mlflow.set_experiment(experiment).experiment_id
    for i in range(n):
        with mlflow.start_run(experiment_id=exp, run_name=f"config-{i}"):
            mlflow.log_params({**params, "steps": str(i + 1)})
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            if artifact:
                mlflow.log_dict({**params, "steps": i + 1}, "config.json")
    return time.perf_counter() - start


#: The steps ``--parts`` times: (module, class or None, function, label).
PARTS = (
    ("mlflow_energy.tracking", None, "log_measurement", "logging each run (log_measurement)"),
    ("mlflow_energy.sweep.summary", None, "log_summary", "the summary (log_summary)"),
    ("mlflow_energy.sweep.summary", None, "energy_plot", "  of which its plot"),
    ("mlflow_energy.sweep.claims", "SweepGuard", "claim", "claim checks"),
    ("mlflow_energy.sweep.claims", "SweepGuard", "fenced", "fencing checks (partly within the claim checks)"),
    ("mlflow_energy.sweep.claims", "SweepGuard", "_settle", "settling a config, claiming the next"),
    ("mlflow_energy.tracking.journal", "Journal", "append", "the journal's line (fsync)"),
    ("mlflow_energy.tracking.journal", "Journal", "mark_logged", "the journal's logged mark"),
    ("mlflow_energy.sweep.claims", "SweepGuard", "start", "the guard's start and finish"),
    ("mlflow_energy.sweep.claims", "SweepGuard", "finish", "the guard's start and finish"),
    ("mlflow_energy.tracking.journal", "Journal", "pending", "  of which the journal's pending scans"),
)


def _parts(spec: Any, meter: Any, journal: str, sweeps: int = 3) -> None:
    """Time the sweep's steps (wrappers around the real functions) over ``sweeps`` sweeps; print ms per config."""
    import importlib

    spent: dict[str, float] = dict.fromkeys((label for *_, label in PARTS), 0.0)

    def timed(f: Any, label: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - start
        return wrapper

    for module, cls, name, label in PARTS:
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        setattr(owner, name, timed(getattr(owner, name), label))
    total = sum(_sweep(spec, f"parts-{i}", meter, journal) for i in range(sweeps))
    per = 1e3 / (sweeps * len(list(spec.configs())))
    print(f"where a sweep's {per * total:.1f} ms per config go ({sweeps} sweeps; steps nest where indented):")
    for label, seconds in spent.items():
        print(f"  {label:48s} {per * seconds:6.2f} ms/config")


def _plot_times(sizes: list[int]) -> None:
    """ms (best of 3) of the summary's plot alone for each size: configs of three families named as a sweep names them."""
    import shutil

    from mlflow_energy.sweep.summary import energy_plot

    tmp = tempfile.mkdtemp(prefix="sweep-plot-")
    families = ("tiny-sd2", "tiny-sdxl", "sd15")
    for n in sizes:
        rows = [{"run_name": f"{families[i % 3]}-{256 * (1 + i % 4)}x{256 * (1 + i % 4)}-{i + 1}st-g7.5-fp16-b{1 + i % 2}",
                 "model": families[i % 3], "energy_total_j": 0.01 * 1.07 ** i, "energy_source": "zeus:benchmark"}
                for i in range(n)]
        energy_plot(rows, os.path.join(tmp, "warm.png"))
        best = min(_timed(energy_plot, rows, os.path.join(tmp, "plot.png")) for _ in range(3))
        print(f"plot of {n:4d} configs: {best * 1e3:7.1f} ms ({best * 1e3 / n:5.2f} ms/config)")
    shutil.rmtree(tmp)


def _timed(f: Any, *args: Any) -> float:
    start = time.perf_counter()
    f(*args)
    return time.perf_counter() - start


def _ratio_ci(sweep: np.ndarray, loop: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Median over paired rounds of sweep/loop, with a 95% bootstrap interval."""
    rng = np.random.default_rng(seed)
    ratios = sweep / loop
    boots = [np.median(rng.choice(ratios, ratios.size)) for _ in range(2000)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(np.median(ratios)), float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=40, help="configs per sweep (and runs per loop)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (one sweep and one loop each)")
    parser.add_argument("--profile", help="also profile one sweep with cProfile; save the profile here")
    parser.add_argument("--parts", action="store_true", help="also time the sweep's steps, in ms per config")
    parser.add_argument("--plot", type=int, nargs="+", metavar="N", help="only time the summary's plot for N configs")
    args = parser.parse_args()
    if args.plot:
        _plot_times(args.plot)
        return
    warnings.filterwarnings("ignore")
    os.environ["GIT_PYTHON_REFRESH"] = "quiet"
    root = tempfile.mkdtemp(prefix="sweep-overhead-")
    os.chdir(root)  # run artifacts under the temporary directory
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    meter = _fake_below_the_sweep()
    spec = _spec(args.configs)
    journal = os.path.join(root, "journal.jsonl")

    _sweep(spec, "warm-sweep", meter, journal)  # imports, the store's schema, the claims tables
    fields = _child_fields("warm-sweep")
    _loop(2, "warm-loop", fields)
    sweep_s, loop_s, same_s = [], [], []
    for r in range(args.rounds):
        order = ("sweep", "loop", "same") if r % 2 == 0 else ("same", "loop", "sweep")
        for what in order:
            if what == "sweep":
                sweep_s.append(_sweep(spec, f"sweep-{r}", meter, journal) / args.configs)
            elif what == "loop":
                loop_s.append(_loop(args.configs, f"loop-{r}", fields) / args.configs)
            else:
                same_s.append(_loop(args.configs, f"same-{r}", fields, artifact=True) / args.configs)
    sweep, loop, same = np.array(sweep_s) * 1e3, np.array(loop_s) * 1e3, np.array(same_s) * 1e3
    ratio, lo, hi = _ratio_ci(sweep, loop)
    ratio_same, lo_same, hi_same = _ratio_ci(sweep, same)
    params, metrics, tags = fields
    print(f"{args.configs} configs x {args.rounds} paired rounds on SQLite; a run: {len(params)} params, "
          f"{len(metrics)} metrics, {len(tags)} tags")
    print(f"sweep (run_sweep, measurement faked): {np.median(sweep):.1f} ms/config "
          f"(rounds {', '.join(f'{v:.0f}' for v in sweep)})")
    print(f"plain loop (one run per config):      {np.median(loop):.1f} ms/config "
          f"(rounds {', '.join(f'{v:.0f}' for v in loop)})")
    print(f"plain loop, with each run's config.json: {np.median(same):.1f} ms/config "
          f"(rounds {', '.join(f'{v:.0f}' for v in same)})")
    print(f"ratio sweep/loop: {ratio:.2f} (95% interval {lo:.2f}-{hi:.2f}; target <= 1.0)")
    print(f"ratio sweep/loop logging the same run (config.json too): {ratio_same:.2f} "
          f"(95% interval {lo_same:.2f}-{hi_same:.2f})")
    if args.parts:
        _parts(spec, meter, journal)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        _sweep(spec, "profiled", meter, journal)
        prof.disable()
        prof.dump_stats(args.profile)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
