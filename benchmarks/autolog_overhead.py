"""Overhead of ``mlflow_energy.autolog()`` against an unhooked call of the same pipeline, one run.

Three kinds of call of one tiny pipeline on the CPU, interleaved round-robin so drifts in
machine load hit each alike:

``plain``     the pipeline's own ``__call__`` (autolog off);
``hooks``     the module hooks and meter windows only (:class:`CallProbe`), nothing logged;
``autolog``   ``mlflow_energy.autolog()`` end to end: hooks, meter, a new run in a SQLite store.

Prints the median seconds per call of each and the overhead ratios ``hooks/plain - 1`` and
``autolog/plain - 1`` with a 95% bootstrap interval over the paired rounds.

    python benchmarks/autolog_overhead.py                          # tiny-sd2, 128 px, 8 steps, 15 rounds
    python benchmarks/autolog_overhead.py --model tiny-sdxl --size 64 --steps 4 --rounds 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-sd2")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import mlflow
    import torch

    import mlflow_energy
    from mlflow_energy.autologging.probe import CallProbe
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.meters import auto_meter
    from mlflow_energy.measure.runner import build_pipeline

    warnings.filterwarnings("ignore")
    tmp = tempfile.mkdtemp()
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("autolog-overhead")
    pipe = build_pipeline(InferenceConfig(model=args.model).validate())
    meter = auto_meter("cpu")
    call = {"prompt": "a lighthouse at dusk", "num_inference_steps": args.steps, "height": args.size,
            "width": args.size}

    def plain() -> None:
        pipe(**call, generator=torch.Generator().manual_seed(args.seed))

    def hooks() -> None:
        with CallProbe(pipe, meter, device="cpu"):
            pipe(**call, generator=torch.Generator().manual_seed(args.seed))

    def autolog() -> None:
        mlflow_energy.autolog(log_images=False, silent=True, meter=meter)
        try:
            pipe(**call, generator=torch.Generator().manual_seed(args.seed))
        finally:
            mlflow_energy.autolog(disable=True)

    kinds = {"plain": plain, "hooks": hooks, "autolog": autolog}
    for fn in kinds.values():  # warm-up: first calls allocate, the first run creates the experiment
        fn()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        order = list(kinds)[r % 3:] + list(kinds)[: r % 3]
        for name in order:
            t0 = time.perf_counter()
            kinds[name]()
            times[name].append(time.perf_counter() - t0)
    t = {k: np.array(v) for k, v in times.items()}
    rng = np.random.default_rng(args.seed)
    print(f"{args.model} {args.size}x{args.size}, {args.steps} steps, {args.rounds} rounds, "
          f"torch threads {torch.get_num_threads()}, energy source {meter.source}")
    for k, v in t.items():
        print(f"  {k:8s} median {np.median(v) * 1e3:8.1f} ms per call")
    for k in ("hooks", "autolog"):
        ratio = t[k] / t["plain"] - 1.0
        boots = [np.median(rng.choice(ratio, ratio.size)) for _ in range(2000)]
        lo, hi = np.percentile(boots, [2.5, 97.5])
        print(f"  overhead {k:8s} {np.median(ratio) * 100:+6.2f}%  (95% CI {lo * 100:+.2f}% .. {hi * 100:+.2f}%)")


if __name__ == "__main__":
    main()
