"""Load on the served energy model: C clients on loopback, N single-row requests each.

Starts ``mlflow-energy serve`` (the strict front; ``--server mlflow`` for ``mlflow models
serve --env-manager local --workers 1``) on a free loopback port, sends one warm-up request
(reported apart: the first prediction loads the model's libraries), then ``--clients``
threads each POST ``--requests`` one-row ``dataframe_records`` payloads. Every request has a
timeout and the whole run a deadline, so the benchmark is bounded. Prints p50, p99, max,
throughput and the error count; stops the server by PID.

    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion
    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion --server mlflow
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROW = {"model": "sdxl", "height": 1024, "width": 1024, "steps": 30, "guidance_scale": 5.0, "precision": "fp16",
       "batch_size": 1, "hardware": "NVIDIA H100 80GB HBM3"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server: str, uri: str, port: int, log: Path) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PATH": str(bin_dir) + os.pathsep + os.environ.get("PATH", "")}
    if server == "mlflow":
        cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port), "--workers", "1"]
    else:
        cmd = [sys.executable, "-c", "from mlflow_energy.cli import main; main()", "serve", "-m", uri, "-p", str(port)]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    import requests

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--server", choices=("strict", "mlflow"), default="strict")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=250, help="per client")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    ap.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole load")
    args = ap.parse_args()

    port = _port()
    log = Path(f"serve-load-{port}.log")
    proc = start(args.server, args.model_uri, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                sys.exit("server exited: " + log.read_text()[-2000:])
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - t0 > 300:
                sys.exit("server did not start within 300 s")
            time.sleep(0.5)
        startup = time.monotonic() - t0
        t = time.perf_counter()
        first = requests.post(f"{base}/invocations", json={"dataframe_records": [ROW]}, timeout=120)
        first_s = time.perf_counter() - t
        if first.status_code != 200:
            sys.exit(f"warm-up request failed: {first.status_code} {first.text[:300]}")

        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.deadline

        def client() -> None:
            with requests.Session() as s:
                for _ in range(args.requests):
                    if time.monotonic() > stop_at:
                        with lock:
                            errors.append("deadline")
                        return
                    t1 = time.perf_counter()
                    try:
                        r = s.post(f"{base}/invocations", json={"dataframe_records": [ROW]}, timeout=args.timeout)
                        ok = r.status_code == 200
                        why = f"HTTP {r.status_code}"
                    except requests.RequestException as exc:
                        ok, why = False, type(exc).__name__
                    dt = time.perf_counter() - t1
                    with lock:
                        (latencies.append(dt) if ok else errors.append(why))

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t_all = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t_all
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    import numpy as np

    ms = np.array(latencies) * 1000.0
    total = args.clients * args.requests
    print(f"server: {args.server} ({args.model_uri}); started in {startup:.1f} s; first request {first_s * 1000:.0f} ms")
    print(f"{args.clients} clients x {args.requests} requests (1 row each): {len(ms)} ok, {len(errors)} errors"
          + (f" ({', '.join(sorted(set(errors)))})" if errors else ""))
    if len(ms):
        print(f"latency ms: p50 {np.percentile(ms, 50):.1f}, p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f}; "
              f"throughput {len(ms) / wall:.1f} req/s over {wall:.1f} s")
    sys.exit(0 if len(ms) == total else 1)


if __name__ == "__main__":
    main()
