"""Predictor cold start, throughput and REST latency: the four figures of the predictor's targets.

1. Cold start: a fresh Python process runs ``mlflow.pyfunc.load_model`` and one 1-row
   ``predict``; the wall time of those two calls (median of 3 processes), and whether torch,
   diffusers or transformers got imported (they must not).
2. In-process: seconds for ``model.predict`` on a 100,000-row frame (best of 3), through
   ``PyFuncModel.predict`` and in the predictor itself, and the same for the floor: a trivial
   scikit-learn model (a LinearRegression on the numeric input columns, saved with
   ``mlflow.sklearn`` and its inferred typed signature, loaded with ``mlflow.pyfunc.load_model``),
   measured in the same run; the ratio of ours to the floor.
3. REST: ``mlflow models serve --env-manager local --workers 1`` on a loopback port, a bounded
   number of single-row POSTs to /invocations; p50 and p95 latency in milliseconds.
4. ``mlflow-energy flops`` wall time, a fresh process (median of 3).

Usage (after ``mlflow-energy import-mlenergy --experiment mlenergy`` and
``mlflow-energy fit --experiment mlenergy --registered-model mlenergy-energy``):

    python benchmarks/predict_bench.py --model-uri models:/mlenergy-energy@champion
    python benchmarks/predict_bench.py --model-uri models:/mlenergy-energy@champion --throughput-only
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

#: The numeric input columns: what the floor model reads.
NUMERIC = ["height", "width", "steps", "guidance_scale", "batch_size"]

ROW = {"model": "sdxl", "height": 1024, "width": 1024, "steps": 30, "guidance_scale": 5.0, "precision": "fp16",
       "batch_size": 1, "hardware": "NVIDIA H100 80GB HBM3"}


def rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    models = np.array(["sd2", "sdxl", "sd1.5", "ssd-1b", "sd3-medium"])
    sizes = np.array([512, 768, 1024])
    return pd.DataFrame({
        "model": rng.choice(models, n), "height": rng.choice(sizes, n).astype("int64"),
        "width": rng.choice(sizes, n).astype("int64"), "steps": rng.integers(20, 51, n).astype("int64"),
        "guidance_scale": rng.choice([1.0, 5.0, 7.5], n), "precision": "fp16",
        "batch_size": rng.choice([1, 2, 4, 8], n).astype("int64"),
        "hardware": rng.choice(["H100-SXM5-80GB", "A100-SXM4-40GB"], n),
    })


def floor_model(dst: str) -> str:
    """The floor: a LinearRegression on the numeric input columns, saved as an MLflow model in
    ``dst`` with the signature MLflow infers (typed columns, checked a column at a time); its path."""
    import mlflow
    import sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    x = rows(1000, seed=1)[NUMERIC]
    y = np.log(x["height"] * x["width"] * x["steps"] * x["batch_size"])
    reg = LinearRegression().fit(x, y)
    path = str(Path(dst) / "floor-model")
    with warnings.catch_warnings():  # MLflow's hint that integer columns cannot hold a missing value
        warnings.simplefilter("ignore", UserWarning)
        signature = infer_signature(x, reg.predict(x))
    mlflow.sklearn.save_model(reg, path, signature=signature, pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
    return path


COLD = """
import json, sys, time
t0 = time.perf_counter()
import mlflow, pandas as pd
t1 = time.perf_counter()
m = mlflow.pyfunc.load_model(sys.argv[1])
m.predict(pd.DataFrame([json.loads(sys.argv[2])]))
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "s": t2 - t1,
                  "heavy": sorted(k for k in ("torch", "diffusers", "transformers") if k in sys.modules)}))
"""


def cold_start(uri: str, tries: int = 3) -> tuple[float, float, list[str]]:
    """Fresh processes: median seconds of ``import mlflow, pandas`` and of load + first 1-row predict,
    and the heavy modules seen."""
    imports, times, heavy = [], [], set()
    for _ in range(tries):
        out = subprocess.run([sys.executable, "-c", COLD, uri, json.dumps(ROW)], capture_output=True, text=True,
                             timeout=600, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        imports.append(got["import"])
        times.append(got["s"])
        heavy |= set(got["heavy"])
    return float(np.median(imports)), float(np.median(times)), sorted(heavy)


def flops_cli(tries: int = 3) -> float:
    """Median wall seconds of ``mlflow-energy flops`` in a fresh process."""
    exe = str(Path(sys.executable).parent / "mlflow-energy")
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        subprocess.run([exe, "flops", "--model", "sdxl", "--height", "1024", "--width", "1024", "--steps", "30",
                        "--json"], capture_output=True, check=True, timeout=600)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def in_process(uri: str, n: int, floor_uri: str) -> tuple[float, float, float]:
    """Best-of-3 seconds for ``n`` rows: through ``PyFuncModel.predict`` (MLflow's schema enforcement
    included), through the predictor itself (``unwrap_python_model().predict``), and the floor
    model's ``PyFuncModel.predict`` on the numeric columns of the same rows (interleaved)."""
    import mlflow

    model = mlflow.pyfunc.load_model(uri)
    inner = model.unwrap_python_model()
    floor = mlflow.pyfunc.load_model(floor_uri)
    frame = rows(n)
    numeric = frame[NUMERIC]
    model.predict(frame.head(10))
    floor.predict(numeric.head(10))
    best = [float("inf")] * 3
    for _ in range(3):
        for k, call in enumerate((lambda: model.predict(frame), lambda: inner.predict(None, frame),
                                  lambda: floor.predict(numeric))):
            t0 = time.perf_counter()
            out = call()
            best[k] = min(best[k], time.perf_counter() - t0)
            assert len(out) == n
    return best[0], best[1], best[2]


def rest(uri: str, requests_n: int) -> tuple[float, float]:
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.Popen(
        [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the model server did not start")
            time.sleep(1)
        payload = json.dumps({"dataframe_records": [ROW]})
        headers = {"Content-Type": "application/json"}
        with requests.Session() as session:
            for _ in range(5):
                session.post(f"{base}/invocations", data=payload, headers=headers, timeout=60).raise_for_status()
            lat = []
            for _ in range(requests_n):
                t0 = time.perf_counter()
                session.post(f"{base}/invocations", data=payload, headers=headers, timeout=60).raise_for_status()
                lat.append(time.perf_counter() - t0)
        return float(np.percentile(lat, 50) * 1e3), float(np.percentile(lat, 95) * 1e3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-uri", default="models:/mlenergy-energy@champion")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--requests", type=int, default=200, help="single-row requests (bounded; loopback only)")
    p.add_argument("--no-rest", action="store_true")
    p.add_argument("--throughput-only", action="store_true", help="only the in-process figures and the floor")
    a = p.parse_args()
    import tempfile

    import mlflow

    tmp = tempfile.mkdtemp()
    if not a.throughput_only:
        local = mlflow.artifacts.download_artifacts(a.model_uri, dst_path=tmp)
        for label, uri in ((a.model_uri, a.model_uri), ("local copy", local)):
            imp, cold, heavy = cold_start(uri)
            print(f"cold start, {label}: load + first 1-row predict {cold:.2f} s (import mlflow+pandas before it: "
                  f"{imp:.2f} s; median of 3 fresh processes; torch/diffusers/transformers imported: "
                  f"{', '.join(heavy) or 'none'})")
    secs, own, floor = in_process(a.model_uri, a.rows, floor_model(tmp))
    print(f"in-process predict, {a.rows} rows (best of 3; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs): floor (scikit-learn LinearRegression, typed signature) {floor * 1e3:.1f} ms; "
          f"ours {secs * 1e3:.1f} ms through PyFuncModel.predict = {secs / floor:.1f}x the floor, "
          f"{own * 1e3:.1f} ms in the predictor itself = {own / floor:.1f}x (the difference: MLflow's per-value "
          f"check of the AnyType numeric columns)")
    if a.throughput_only:
        return
    print(f"mlflow-energy flops (fresh process): {flops_cli():.2f} s (median of 3)")
    if not a.no_rest:
        p50, p95 = rest(a.model_uri, a.requests)
        print(f"REST /invocations, 1 row per request, {a.requests} requests: p50 {p50:.1f} ms, p95 {p95:.1f} ms")


if __name__ == "__main__":
    main()
