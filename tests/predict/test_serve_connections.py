"""`mlflow-energy serve` under hostile clients: deadlines, the connection cap, a quiet log, a busy port.

Real servers on free loopback ports; every client loop is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fit"))
sys.path.insert(0, str(Path(__file__).parents[1]))
from services import free_port, serving_process  # noqa: E402
from test_predictor import NAME, registered_store, row  # noqa: E402

requests = pytest.importorskip("requests")

REPO = Path(__file__).parents[2]
# `mlflow-energy` with the file-handle limit (soft and hard) set first when MLFLOW_ENERGY_TEST_NOFILE says so.
CLI = ("import os, resource, sys\n"
       "n = int(os.environ.get('MLFLOW_ENERGY_TEST_NOFILE', '0'))\n"
       "if n: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
       "from mlflow_energy.cli import main\n"
       "main()")


def _env(uri: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), **extra}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("conn")
    return tmp, registered_store(tmp)


@contextlib.contextmanager
def front(store: tuple[Path, str], *flags: str, nofile: int = 0) -> Iterator[tuple[str, Path]]:
    """`mlflow-energy serve` of the test model with ``flags``: (base URL, its log)."""
    tmp, uri = store
    port = free_port()
    argv = [sys.executable, "-c", CLI, "serve", "-m", f"models:/{NAME}@champion", "-p", str(port), *flags]
    env = _env(uri, MLFLOW_ENERGY_TEST_NOFILE=str(nofile))
    with serving_process(argv, port=port, cwd=tmp, env=env) as (base, _):
        requests.post(f"{base}/invocations", json={"dataframe_records": [row()]}, timeout=120)  # warm
        yield base, tmp / f"server-{port}.log"


class SlowClients:
    """``n`` connections that each send a request head one byte per :meth:`tick`, never finishing it."""

    HEAD = b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Slow: "

    def __init__(self, port: int, n: int) -> None:
        self.socks, self.sent, self.answers = [], [0] * n, [b""] * n
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))  # in progress; the kernel completes it even while the server is full
            self.socks.append(s)
        self.open = set(range(n))

    def tick(self) -> None:
        """Read what each open one was sent, drop the ones the server closed, send one more byte."""
        for i in sorted(self.open):
            s = self.socks[i]
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.open.discard(i)
                continue
            try:
                s.getpeername()
            except OSError:  # not connected yet
                continue
            try:
                data = s.recv(4096)
                if not data:
                    self.open.discard(i)
                    continue
                self.answers[i] += data
            except BlockingIOError:
                pass
            except OSError:
                self.open.discard(i)
                continue
            byte = self.HEAD[self.sent[i]:self.sent[i] + 1] or b"a"
            try:
                self.sent[i] += s.send(byte)
            except BlockingIOError:
                pass
            except OSError:
                self.open.discard(i)

    def run_until_closed(self, limit_s: float = 30.0, every: float = 0.5) -> None:
        end = time.monotonic() + limit_s
        while self.open and time.monotonic() < end:
            self.tick()
            time.sleep(every)

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _log_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.strip()]


def test_busy_port_is_one_line_with_the_address_and_exit_2(tmp_path):
    """Before: the model was loaded, 'serving ... on http://127.0.0.1:PORT' printed, then uvicorn failed (exit 1)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-c", CLI, "serve", "-m", "models:/energy@champion", "-p", str(port)],
                              capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env=_env(f"sqlite:///{tmp_path}/mlflow.db"))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout  # nothing about serving
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], proc.stderr


def test_an_address_not_of_this_machine_is_one_line_naming_the_host(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CLI, "serve", "--host", "192.0.2.1", "-p", str(free_port())],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env=_env(f"sqlite:///{tmp_path}/mlflow.db"))
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: host='192.0.2.1'") and "192.0.2.1:" in lines[0], lines


@pytest.mark.slow
def test_slow_clients_are_closed_at_their_deadline_and_others_are_answered_meanwhile(store):
    """300 clients trickle a request head byte by byte: a normal request is answered while they are connected,
    and each is closed with a 408 once its header deadline has passed (trickling does not extend it)."""
    with front(store, "--header-timeout", "4", "--body-timeout", "4", "--max-connections", "400") as (base, log):
        slow = SlowClients(int(base.rsplit(":", 1)[1]), 300)
        try:
            for _ in range(3):
                slow.tick()
                time.sleep(0.3)
            r = requests.post(f"{base}/invocations", json={"dataframe_records": [row()]}, timeout=60)
            still_connected = len(slow.open)
            assert r.status_code == 200, r.text
            assert still_connected > 0, "every slow client was gone before the normal request was answered"
            slow.run_until_closed(limit_s=30)
            assert not slow.open, f"{len(slow.open)} of 300 slow clients still connected after 30 s"
            timed_out = [a for a in slow.answers if a]
            assert timed_out and all(a.startswith(b"HTTP/1.1 408 ") for a in timed_out), timed_out[:3]
            assert b"did not arrive within 4 s" in timed_out[0]
        finally:
            slow.close()
        lines = _log_lines(log)
        assert "Traceback" not in log.read_text() and len(lines) < 20, lines[:30]


def _status(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.fixture(scope="module")
def capped(store):
    """A server whose cap is 20 connections, with a long header deadline (holders stay)."""
    with front(store, "--max-connections", "20", "--header-timeout", "60") as (base, log):
        yield base, int(base.rsplit(":", 1)[1]), log


@pytest.mark.slow
def test_connections_past_the_cap_get_503_and_the_log_stays_small(capped):
    """20 connections holding the cap of 20: 600 more are answered 503 at once, the log stays a few lines,
    and once the holders go, requests succeed."""
    base, port, log = capped
    holders = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(20)]
    try:
        for h in holders:
            h.sendall(b"G")
        time.sleep(0.5)
        statuses = [_status(port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(600)]
        assert statuses.count(b"HTTP/1.1 503 Service Unavailable") == 600, sorted(set(statuses))
        r = requests.get(f"{base}/ping", timeout=30)
        assert r.status_code == 503 and "20 open connections" in r.json()["message"], r.text
        assert r.headers["Retry-After"] == "1"
    finally:
        for h in holders:
            h.close()
    deadline = time.monotonic() + 30  # the server sees the holders go
    while requests.get(f"{base}/ping", timeout=30).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert requests.get(f"{base}/ping", timeout=30).status_code == 200
    text = log.read_text()
    lines = _log_lines(log)
    assert "Traceback" not in text and len(lines) < 20, lines[:30]
    assert any("refused" in line and "(--max-connections)" in line for line in lines), lines


@pytest.mark.slow
def test_a_client_that_disconnects_mid_body_leaves_no_traceback(capped):
    """30 clients send headers and part of a body, then close (half of them with a reset): no traceback,
    at most a line a minute, and the server answers the next request."""
    base, port, log = capped
    for i in range(30):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"dataframe_records\": [")
        time.sleep(0.05)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    time.sleep(1)
    r = requests.post(f"{base}/invocations", json={"dataframe_records": [row()]}, timeout=60)
    assert r.status_code == 200, r.text
    text = log.read_text()
    assert "Traceback" not in text and "ClientDisconnect" not in text, text[-3000:]
    disconnects = [line for line in _log_lines(log) if "disconnected" in line]
    assert len(disconnects) == 1 and "before their answer was sent" in disconnects[0], disconnects


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="sets the file-handle limit with setrlimit")
@pytest.mark.parametrize("flags", [(), ("--max-connections", "1000")], ids=["default-cap", "cap-above-the-limit"])
def test_600_slow_clients_under_512_file_handles(store, flags):
    """ulimit -n 512: 600 clients trickling bytes. A normal request is answered (200, or 503 while the cap is
    full) instead of waiting for them; they are closed at the deadline; then requests succeed; the log (running
    out of handles included, with a cap above the limit) stays a few lines, without a traceback."""
    with front(store, "--header-timeout", "3", *flags, nofile=512) as (base, log):
        slow = SlowClients(int(base.rsplit(":", 1)[1]), 600)
        try:
            for _ in range(4):
                slow.tick()
                time.sleep(0.25)
            r = requests.get(f"{base}/ping", timeout=20)
            assert r.status_code in (200, 503), r.text
            slow.run_until_closed(limit_s=40)
            assert not slow.open, f"{len(slow.open)} of 600 slow clients still connected"
        finally:
            slow.close()
        r = requests.post(f"{base}/invocations", json={"dataframe_records": [row()]}, timeout=60)
        assert r.status_code == 200, r.text
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        lines = _log_lines(log)
        assert len(lines) < 20, lines[:30]
        if flags:
            assert "file-handle limit (ulimit -n 512)" in lines[0], lines


def test_framing_follows_heads_length_and_chunked_bodies():
    from mlflow_energy.predict.connections import Framing

    f = Framing()
    assert f.in_head and not f.started
    for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n":  # one byte at a time
        f.feed(bytes([byte]))
    assert (f.heads, f.requests, f.in_head, f.started) == (1, 1, True, False)
    f.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n")
    assert (f.heads, f.requests, f.in_head) == (2, 1, False)
    f.feed(b"0\r\nTrailer: y\r\n\r\nPOST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nab")
    assert (f.heads, f.requests, f.in_head) == (3, 2, False)
    f.feed(b"c\r\n")  # the 3rd body ends; a blank line between requests is not a new head
    assert (f.heads, f.requests, f.in_head, f.started) == (3, 3, True, False)
    f.feed(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n")  # a length it cannot read: its body deadline stands
    assert not f.in_head


def test_out_of_handles_and_resets_log_one_line_per_minute(caplog, monkeypatch):
    import asyncio
    import logging

    from mlflow_energy.predict import connections

    monkeypatch.setattr(connections, "QUIET", connections.Quiet(logging.getLogger("test.quiet")))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(500):
            connections.loop_exception_handler(loop, {"message": "socket.accept() out of system resource",
                                                      "exception": OSError(errno.EMFILE, "Too many open files")})
            connections.loop_exception_handler(loop, {"message": "x", "exception": ConnectionResetError(104, "x")})

    with caplog.at_level(logging.WARNING, logger="test.quiet"):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("could not accept 1 connection(s)") and "Too many open files" in messages[0]
    assert messages[1].startswith("1 client(s) disconnected")
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--header-timeout", "0"], {}, "header_timeout='0'"),
        (["--body-timeout", "inf"], {}, "body_timeout='inf'"),
        (["--max-connections", "0"], {}, "max_connections=0"),
        ([], {"MLFLOW_ENERGY_SERVE_MAX_CONNECTIONS": "many"}, "max_connections='many'"),
        ([], {"MLFLOW_ENERGY_SERVE_HEADER_TIMEOUT": "-1"}, "header_timeout='-1'"),
    ],
    ids=["zero-header-timeout", "infinite-body-timeout", "zero-connections", "env-connections", "env-timeout"],
)
def test_bad_limits_are_one_line_and_exit_2(tmp_path, args, env, needle):
    proc = subprocess.run([sys.executable, "-c", CLI, "serve", "-p", str(free_port()), *args], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path, env=_env(f"sqlite:///{tmp_path}/mlflow.db", **env))
    assert proc.returncode == 2 and proc.stdout == "", (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {needle} is not allowed"), lines


@pytest.mark.slow
def test_invalid_requests_log_one_line_a_minute(capped):
    """50 malformed requests are each answered 400; uvicorn's warning for each becomes one counted line."""
    base, port, log = capped
    for _ in range(50):
        assert _status(port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400"), "a 400 for garbage"
    assert requests.get(f"{base}/ping", timeout=30).status_code == 200
    lines = _log_lines(log)
    assert not any("Invalid HTTP request received" in line for line in lines), lines
    assert len([line for line in lines if "invalid HTTP request" in line]) == 1, lines
