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
``--rows-per-request N`` sends N rows per request (a fixed sample of configs); ``--floor`` then
loads the floor the same way (a scikit-learn LinearRegression on the numeric columns with a typed
signature, ``mlflow models serve --workers 1``) and prints our throughput as a ratio of its.

    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion
    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion --server mlflow
    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion --slow-clients 600 --nofile 512
    python benchmarks/serve_load.py --model-uri models:/mlenergy-energy@champion --server mlflow \
        --rows-per-request 100 --clients 1 --requests 200 --floor
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_bench import NUMERIC, floor_model, rows  # noqa: E402

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


def load(args: argparse.Namespace, server: str, uri: str, records: list[dict], serve_args: tuple[str, ...] = ()
         ) -> dict:
    """Start ``server`` for ``uri``, one warm-up request, then the load of ``args`` with ``records``
    in every request; the server stopped by PID. What it measured, as a dict."""
    import requests

    port = _port()
    log = Path(tempfile.gettempdir()) / f"serve-load-{port}.log"  # not in the caller's directory
    proc = start(server, uri, port, log, args.nofile, serve_args)
    slow, slow_closed = None, 0
    base = f"http://127.0.0.1:{port}"
    payload = {"dataframe_records": records}
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
        first = requests.post(f"{base}/invocations", json=payload, timeout=120)
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
                        r = s.post(f"{base}/invocations", json=payload, timeout=args.timeout)
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
    return {"latencies": latencies, "answered": answered, "errors": errors, "wall": wall, "startup": startup,
            "first_s": first_s, "slow_closed": slow_closed, "log": log}


def report(args: argparse.Namespace, label: str, got: dict) -> float:
    """Print what :func:`load` measured; the throughput in requests per second."""
    import numpy as np

    ms, errors = np.array(got["latencies"]) * 1000.0, got["errors"]
    rate = len(ms) / got["wall"] if got["wall"] > 0 else 0.0
    print(f"server: {label}; started in {got['startup']:.1f} s; first request {got['first_s'] * 1000:.0f} ms")
    print(f"{args.clients} clients x {args.requests} requests ({args.rows_per_request} row(s) each): {len(ms)} ok, "
          f"{len(errors)} errors" + (f" ({', '.join(sorted(set(errors)))})" if errors else ""))
    if len(ms):
        print(f"latency ms: p50 {np.percentile(ms, 50):.1f}, p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f}; "
              f"throughput {rate:.1f} req/s ({rate * args.rows_per_request:.0f} rows/s) over {got['wall']:.1f} s")
    if errors and got["answered"]:
        a = np.array(got["answered"]) * 1000.0
        print(f"any HTTP answer ({len(a)}): p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms, "
              f"max {a.max():.1f} ms")
    if args.slow_clients:
        text = got["log"].read_text(errors="replace")
        print(f"slow clients: {args.slow_clients} (server ulimit -n {args.nofile or 'unchanged'}), "
              f"{got['slow_closed']} closed by the server during the load; server log {len(text.splitlines())} lines, "
              f"{len(text.encode()) / 1e6:.2f} MB, {text.count('Traceback')} tracebacks")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-uri", required=True)
    ap.add_argument("--server", choices=("strict", "mlflow"), default="strict")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=250, help="per client")
    ap.add_argument("--rows-per-request", type=int, default=1, help="rows in each request (1: the row ROW)")
    ap.add_argument("--floor", action="store_true",
                    help="also load the floor (a scikit-learn model on `mlflow models serve`) the same way; the ratio")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    ap.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole load")
    ap.add_argument("--slow-clients", type=int, default=0, help="connections trickling a request head meanwhile")
    ap.add_argument("--nofile", type=int, default=0, help="the server's file-handle limit (ulimit -n)")
    ap.add_argument("--serve-arg", action="append", default=[], help="a flag for the server (repeatable)")
    args = ap.parse_args()

    records = [ROW] if args.rows_per_request == 1 else rows(args.rows_per_request, seed=2).to_dict("records")
    got = load(args, args.server, args.model_uri, records, tuple(args.serve_arg))
    ours = report(args, f"{args.server} ({args.model_uri})", got)
    total = args.clients * args.requests
    ok = len(got["latencies"]) == total
    if args.floor:
        import tempfile

        floor_uri = floor_model(tempfile.mkdtemp())
        floor_records = [{c: r[c] for c in NUMERIC} for r in records]
        floor_got = load(args, "mlflow", floor_uri, floor_records)
        floor = report(args, "mlflow (floor: scikit-learn LinearRegression on the numeric columns, typed signature)",
                       floor_got)
        ok = ok and len(floor_got["latencies"]) == total
        if floor > 0:
            print(f"throughput at {args.rows_per_request} row(s) per request: ours {ours:.1f} req/s, floor "
                  f"{floor:.1f} req/s = {ours / floor:.2f}x the floor's (load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
