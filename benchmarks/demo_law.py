"""The CPU demo's energy law, per family: slope, R2, leave-one-config-out MAPE, and where the time goes.

Runs the demo sweep (``projects/cpu-demo.yaml``: the ``small-`` families over resolution and
steps) into a fresh SQLite MLflow store, fits it as ``mlflow-energy fit`` does (runs tagged
noisy down-weighted), and prints per family: configs, FLOPs span, slope ``b`` of
``log E = log a + b log FLOPs``, R2, and the MAPE of each config predicted by the law fitted
on the others. The targets: b in [0.8, 1.2], R2 >= 0.9, LOCO MAPE <= 10%, FLOPs span >= 30x.
Also: the sweep's wall time and the share spent measuring (``sweep/inference_s`` /
``sweep/wall_s``), and the energy-vs-FLOPs plot (``--plot``).

Usage::

    python benchmarks/demo_law.py --plot docs/img/demo_energy_vs_flops.png
    python benchmarks/demo_law.py --experiment mlflow-energy-demo --no-sweep   # an existing store
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow_energy  # noqa: F401  (sets the OpenMP wait policy before torch loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="projects/cpu-demo.yaml")
    parser.add_argument("--experiment", default="demo-law")
    parser.add_argument("--no-sweep", action="store_true", help="Fit the runs already in the tracking store.")
    parser.add_argument("--plot", help="Write the plot of the per-family laws (J vs FLOPs per image) here (PNG).")
    args = parser.parse_args()

    tmp = None
    if not args.no_sweep and "MLFLOW_TRACKING_URI" not in os.environ:
        tmp = tempfile.mkdtemp(prefix="demo-law-")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        import mlflow

        # artifacts next to the temporary store (a SQLite store's default artifact root is ./mlruns)
        mlflow.create_experiment(args.experiment, artifact_location=Path(tmp, "artifacts").as_uri())
    start = time.perf_counter()
    if not args.no_sweep:
        from mlflow_energy.sweep import run_sweep

        result = run_sweep(args.spec, experiment=args.experiment, progress=False)
        print(f"sweep: {result.measured} measured, {len(result.failed)} failed, {result.noisy} noisy; "
              f"wall {result.wall_s:.1f} s, measuring {result.inference_s:.1f} s "
              f"({100 * result.inference_s / max(result.wall_s, 1e-9):.0f}%: non-measuring "
              f"{100 * (1 - result.inference_s / max(result.wall_s, 1e-9)):.0f}%)")
    from mlflow_energy.fit import family_laws, fit_energy_model, runs_frame, weigh_noisy

    frame, noisy = weigh_noisy(runs_frame(args.experiment))
    fit = fit_energy_model(frame, n_boot=0, cv=False)
    laws = family_laws(fit.frame)
    print(f"fit: {len(frame)} runs ({noisy} noisy, down-weighted), energy source(s) "
          f"{sorted(set(frame['energy_source']))}")
    print(f"{'family':<22} {'configs':>7} {'FLOPs span':>10} {'b':>6} {'R2':>6} {'LOCO MAPE':>9}  targets met")
    for _, r in laws.iterrows():
        ok = (0.8 <= r["b"] <= 1.2, r["r2"] >= 0.9, r["loco_mape"] <= 0.10, r["flops_span"] >= 30)
        print(f"{r['family']:<22} {int(r['configs']):>7} {r['flops_span']:>9.0f}x {r['b']:>6.3f} {r['r2']:>6.3f} "
              f"{r['loco_mape']:>8.1%}  {'yes' if all(ok) else 'no (' + ', '.join(n for n, o in zip(('b', 'R2', 'MAPE', 'span'), ok, strict=True) if not o) + ')'}")
    if args.plot:
        from mlflow_energy.fit.plots import make_plots

        with tempfile.TemporaryDirectory() as out:
            written = {p.name: p for p in make_plots(fit, Path(out))}
            target = Path(args.plot)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(written["family_laws_total.png"].read_bytes())
        print(f"plot: {args.plot}")
    print(f"total wall (sweep + fit): {time.perf_counter() - start:.0f} s on {os.cpu_count()} core(s), "
          f"load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
