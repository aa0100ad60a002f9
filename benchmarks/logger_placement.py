"""Why autolog logs from a process: the same background work on a thread and in a process, one run.

Paired rounds of a ~1-s pipeline call (tiny-sd2, 128 px, 4 steps, torch's default threads) with
nothing else running, with a ``nice`` 19 *thread* doing ``--work-ms`` of pure-Python work per call
(what creating and logging an MLflow run costs), and with a ``nice`` 19 *process* doing the same.
Prints each one's slowdown against the plain call (median and mean of the paired ratios).

On a thread the work holds the interpreter lock the pipeline's thread needs between kernels, which
no CPU priority lowers; in a process it only competes for a core, at the lowest priority.

    python benchmarks/logger_placement.py                  # 30 rounds, 30 ms of work per call
    python benchmarks/logger_placement.py --rounds 10 --work-ms 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np

_CHILD = """
import os, sys, time
if hasattr(os, "nice"):
    os.nice(19)
for line in sys.stdin:
    t = time.process_time()
    while time.process_time() - t < float(line) / 1000:
        sum(range(200))
"""


def _work(ms: float) -> None:
    t = time.thread_time()
    while time.thread_time() - t < ms / 1000:
        sum(range(200))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--work-ms", type=float, default=30.0, help="Python work per call, ms of CPU")
    args = ap.parse_args()

    import torch

    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    warnings.filterwarnings("ignore")
    pipe = build_pipeline(InferenceConfig(model="tiny-sd2").validate())
    go = threading.Event()

    def worker() -> None:
        if sys.platform.startswith("linux"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            go.wait()
            go.clear()
            _work(args.work_ms)

    threading.Thread(target=worker, daemon=True).start()
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, text=True, bufsize=1)

    def call() -> float:
        t0 = time.perf_counter()
        pipe("a lighthouse at dusk", num_inference_steps=4, height=128, width=128,
             generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0

    call()  # warm-up
    times: dict[str, list[float]] = {"none": [], "thread": [], "process": []}
    for _ in range(args.rounds):
        for mode in times:
            if mode == "thread":
                go.set()
            elif mode == "process":
                child.stdin.write(f"{args.work_ms}\n")
            times[mode].append(call())
            time.sleep(0.05)  # the work of this call ends before the next
    child.stdin.close()
    child.wait()
    base = np.array(times["none"])
    print(f"plain call: median {np.median(base):.3f} s over {args.rounds} rounds; "
          f"{args.work_ms:g} ms of Python work per call alongside:")
    for mode in ("thread", "process"):
        ratio = (np.array(times[mode]) / base - 1.0) * 100
        print(f"  on a nice-19 {mode:<8}  slowdown median {np.median(ratio):+.2f}%  mean {ratio.mean():+.2f}%")


if __name__ == "__main__":
    main()
