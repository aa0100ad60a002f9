"""Load on the served energy model: C clients on loopback, N single-row requests each.

Starts ``mlflow-energy serve`` (the strict front; ``--server mlflow`` for ``mlflow models
serve --env-manager local --workers 1``) on a free loopback port, sends one warm-up request
(reported apart: the first prediction loads the model's libraries), then ``--clients``
threads each POST ``--requests`` one-row ``dataframe_records`` payloads. Every request has a
timeout and the whole run a deadline, so the benchmark is bounded. Prints p50, p99, max,
throughput and the error count; stops the server by PID.

``--slow-clients N`` first opens N connections that each send a request head one byte a second
and never finish it (they stop with the load); ``--nofile N`` starts the server with that
file-handle limit (``ulimit -n``); ``--serve-arg`` passes a flag to the server. It then also
prints how many slow clients the server closed and the size of the server's log.

    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion
    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion --server mlflow
    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion --slow-clients 600 --nofile 512
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


def start(server: str, uri: str, port: int, log: Path, nofile: int = 0, extra: tuple[str, ...] = ()
          ) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PATH": str(bin_dir) + os.pathsep + os.environ.get("PATH", "")}
    if server == "mlflow":
        cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port), "--workers", "1"]
    else:
        cmd = [sys.executable, "-c", "from mlflow_energy.cli import main; main()", "serve", "-m", uri, "-p", str(port)]
    cmd += list(extra)

    def limit() -> None:
        if nofile:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=limit)


class SlowClients(threading.Thread):
    """``n`` connections sending a request head one byte a second, never finishing it, until :meth:`stop`."""

    def __init__(self, port: int, n: int) -> None:
        super().__init__(daemon=True)
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)
        self.open, self.done = set(range(n)), threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            for i in sorted(self.open):
                s = self.socks[i]
                try:
                    s.getpeername()
                except OSError:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.open.discard(i)
                    continue  # still connecting
                try:
                    if s.recv(4096) == b"":
                        self.open.discard(i)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.open.discard(i)
                    continue
                try:
                    s.send(b"X")
                except BlockingIOError:
                    pass
                except OSError:
                    self.open.discard(i)

    def stop(self) -> int:
        """Stop trickling, close them all; how many the server had closed."""
        self.done.set()
        self.join(timeout=30)
        for s in self.socks:
            s.close()
        return len(self.socks) - len(self.open)


def main() -> None:
    import requests

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--server", choices=("strict", "mlflow"), default="strict")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=250, help="per client")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    ap.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole load")
    ap.add_argument("--slow-clients", type=int, default=0, help="connections trickling a request head meanwhile")
    ap.add_argument("--nofile", type=int, default=0, help="the server's file-handle limit (ulimit -n)")
    ap.add_argument("--serve-arg", action="append", default=[], help="a flag for the server (repeatable)")
    args = ap.parse_args()

    port = _port()
    log = Path(f"serve-load-{port}.log")
    proc = start(args.server, args.model_uri, port, log, args.nofile, tuple(args.serve_arg))
    slow, slow_closed = None, 0
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
        answered: list[float] = []  # any HTTP answer, 200 or not
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
                        with lock:
                            answered.append(time.perf_counter() - t1)
                    except requests.RequestException as exc:
                        ok, why = False, type(exc).__name__
                    dt = time.perf_counter() - t1
                    with lock:
                        (latencies.append(dt) if ok else errors.append(why))

        if args.slow_clients:
            slow = SlowClients(port, args.slow_clients)
            slow.start()
            time.sleep(2)  # they are connected (or queued) before the load starts
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t_all = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t_all
    finally:
        if slow is not None:
            slow_closed = slow.stop()
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
    if errors and answered:
        a = np.array(answered) * 1000.0
        print(f"any HTTP answer ({len(a)}): p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms, "
              f"max {a.max():.1f} ms")
    if args.slow_clients:
        text = log.read_text(errors="replace")
        print(f"slow clients: {args.slow_clients} (server ulimit -n {args.nofile or 'unchanged'}), "
              f"{slow_closed} closed by the server during the load; server log {len(text.splitlines())} lines, "
              f"{len(text.encode()) / 1e6:.2f} MB, {text.count('Traceback')} tracebacks")
    sys.exit(0 if len(ms) == total else 1)


if __name__ == "__main__":
    main()
