"""The connections of ``mlflow-energy serve``: deadlines, a cap, a quiet log.

A client that trickles its request one byte a second, or opens a connection and says nothing,
held a uvicorn connection (and a file handle) for as long as it liked; enough of them used up
the process's file handles, a normal request waited behind them, and every refused ``accept``
and every client disconnect logged a traceback. Here:

- **Deadlines.** A request's headers must arrive within ``header_timeout`` seconds of the
  moment the server owes the client nothing (the connection opened, or its previous answer
  went out), and its body within ``body_timeout`` seconds of its headers. Trickled bytes do
  not extend them. Past one, the connection is closed: with a 408 when part of a request has
  arrived and nothing of an answer has been sent, silently when the client sent nothing.
- **A cap.** At most ``max_connections`` connections are open at once; the next one is answered
  503 (``Retry-After: 1``) and closed. The default is 256, less where the file-handle limit
  (``ulimit -n``) leaves fewer than 256 + :data:`FD_HEADROOM` handles.
- **A quiet log.** Refused connections, closed slow clients, client disconnects (reset, broken
  pipe), ``accept`` failures (out of file handles) and invalid HTTP requests each log at most
  one line a minute, with a count; never a traceback.

The deadlines follow the HTTP/1.1 framing of the byte stream (:class:`Framing`: headers, then a
``Content-Length`` or chunked body), whichever uvicorn protocol parses it.

Example:
    >>> f = Framing()
    >>> f.feed(b"POST /invocations HTTP/1.1\\r\\nContent-Length: 4\\r\\n\\r\\nab")
    >>> f.in_head, f.heads, f.requests
    (False, 1, 0)
    >>> f.feed(b"cd")
    >>> f.in_head, f.requests
    (True, 1)
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256
BACKLOG = 128  # the listen queue, and so the most connections asyncio accepts in one go (each a file handle)
MAX_LINGERING = 32  # refused connections kept open (up to LINGER_S) so that their 503 arrives before the close
FD_HEADROOM = BACKLOG + MAX_LINGERING + 64  # handles kept past the cap: a burst of accepts, refusals, the process
LINGER_S = 1.0
LOG_PERIOD_S = 60.0
MAX_LINE = 65536  # a request head or chunk line longer than this is not followed (uvicorn refuses it anyway)
OUT_OF_HANDLES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _raw_response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED" if status == 503 else "BAD_REQUEST",
                       "message": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n")
    return head.encode() + body


def file_handle_limit() -> int | None:
    """This process's soft limit on open files (``ulimit -n``), or None where it cannot be read."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def default_max_connections() -> int:
    """256, or fewer where the file-handle limit leaves less than 256 + :data:`FD_HEADROOM`."""
    limit = file_handle_limit()
    return MAX_CONNECTIONS if limit is None else max(8, min(MAX_CONNECTIONS, limit - FD_HEADROOM))


@dataclass(frozen=True)
class Limits:
    """The deadlines (seconds) and the connection cap of one server."""

    header_timeout: float = HEADER_TIMEOUT_S
    body_timeout: float = BODY_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS


class Quiet:
    """Counts client-caused events by kind and logs at most one line per kind per :data:`LOG_PERIOD_S`."""

    TEXTS = {
        "refused": "refused {n} connection(s) with 503: {detail} open connections is the cap (--max-connections)",
        "timeout": "closed {n} connection(s) whose request did not arrive in time ({detail})",
        "disconnect": "{n} client(s) disconnected before their answer was sent ({detail})",
        "accept": "could not accept {n} connection(s) for a while: {detail}",
        "invalid": "answered {n} invalid HTTP request(s) with 400 ({detail})",
    }

    def __init__(self, logger: logging.Logger | None = None, period: float = LOG_PERIOD_S) -> None:
        self.logger = logger or logging.getLogger("uvicorn.error")
        self.period = period
        self._state: dict[str, dict[str, Any]] = {}

    def note(self, kind: str, detail: str) -> None:
        """Count one event of ``kind``; log it now if this kind logged nothing in the last period."""
        now = time.monotonic()
        state = self._state.setdefault(kind, {"count": 0, "until": 0.0, "detail": "", "flush": None})
        state["detail"] = detail
        if now >= state["until"]:  # a new period: log now, with what the last one left uncounted
            if state["flush"] is not None:
                state["flush"].cancel()
                state["flush"] = None
            self._log(kind, state["count"] + 1, detail)
            state["until"], state["count"] = now + self.period, 0
            return
        state["count"] += 1
        if state["flush"] is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # the next event logs it
            state["flush"] = loop.call_later(state["until"] - now, self._flush, kind)

    def _flush(self, kind: str) -> None:
        state = self._state[kind]
        if state["flush"] is not None:
            state["flush"].cancel()
            state["flush"] = None
        if state["count"]:
            self._log(kind, state["count"], state["detail"])
            state["until"], state["count"] = time.monotonic() + self.period, 0

    def _log(self, kind: str, n: int, detail: str) -> None:
        self.logger.warning(self.TEXTS[kind].format(n=n, detail=" ".join(str(detail).split())[:200]))


QUIET = Quiet()


def _client_side(exc: BaseException | None) -> bool:
    """True for what a client causes by going away: a reset, a broken pipe, Starlette's ClientDisconnect."""
    return isinstance(exc, ConnectionError) or type(exc).__name__ == "ClientDisconnect"


class QuietFilter(logging.Filter):
    """Turns uvicorn's per-client log records (disconnect tracebacks, invalid requests) into :data:`QUIET` counts."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if _client_side(exc):
            QUIET.note("disconnect", f"{type(exc).__name__}: {exc}")
            return False
        if record.getMessage().startswith("Invalid HTTP request received"):
            QUIET.note("invalid", "malformed request line or headers")
            return False
        return True


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Out-of-handles ``accept`` failures and client resets as :data:`QUIET` counts; the rest as asyncio logs them."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in OUT_OF_HANDLES:
        QUIET.note("accept", f"{exc.strerror or exc} (file-handle limit {file_handle_limit()}; asyncio retries "
                   "after 1 s; lower --max-connections or raise ulimit -n)")
    elif _client_side(exc):
        QUIET.note("disconnect", f"{type(exc).__name__}: {exc}")
    else:
        loop.default_exception_handler(context)


class Framing:
    """Follows the requests in one client's byte stream: where their heads and bodies end (no validation).

    ``heads`` counts request heads received in full, ``requests`` requests received in full
    (head and body); ``in_head`` is true while the next head is awaited, ``started`` once a
    byte of it has arrived. A stream it cannot follow stays in its body: that deadline runs.
    """

    def __init__(self) -> None:
        self.state = "head"  # head | length | size | chunk | trailer | lost
        self.buf = bytearray()
        self.need = 0
        self.heads = self.requests = 0
        self.started = False

    @property
    def in_head(self) -> bool:
        return self.state == "head"

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            if self.state == "lost":
                return
            if self.state in ("length", "chunk"):
                take = min(self.need, len(view))
                self.need -= take
                view = view[take:]
                if not self.need and self.state == "length":
                    self._done_body()
                elif not self.need:
                    self._set("size")
                continue
            if self.state == "head" and not self.started:
                rest = bytes(view).lstrip(b"\r\n")  # blank lines between requests
                if not rest:
                    return
                view, self.started = memoryview(rest), True
            start = max(0, len(self.buf) - 3)
            self.buf += view
            view = memoryview(b"")
            if self.state == "head":
                end = [(i, n) for i, n in ((self.buf.find(b"\r\n\r\n", start), 4), (self.buf.find(b"\n\n", start), 2))
                       if i >= 0]
                if not end:
                    if len(self.buf) > MAX_LINE:
                        self._set("lost")
                    continue
                i, n = min(end)
                head, rest = bytes(self.buf[:i]), bytes(self.buf[i + n:])
                self.buf.clear()
                self._done_head(head)
                view = memoryview(rest)
                continue
            line_end = self.buf.find(b"\n")
            if line_end < 0:
                if len(self.buf) > MAX_LINE:
                    self._set("lost")
                continue
            line, rest = bytes(self.buf[:line_end]).strip(), bytes(self.buf[line_end + 1:])
            self.buf.clear()
            view = memoryview(rest)
            if self.state == "trailer":
                if not line:
                    self._done_body()
                continue
            try:  # a chunk size line: hex digits, maybe ";extensions"
                size = int(line.split(b";")[0].strip() or b"x", 16)
            except ValueError:
                self._set("lost")
                continue
            if size:
                self.need = size + 2  # the data and its CRLF
                self._set("chunk")
            else:
                self._set("trailer")

    def _set(self, state: str) -> None:
        self.state = state

    def _done_head(self, head: bytes) -> None:
        self.heads += 1
        length, chunked = 0, False
        for line in head.split(b"\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
        if chunked:
            self._set("size")
        elif length < 0:
            self._set("lost")  # uvicorn answers it 400 and closes; the body deadline stands meanwhile
        elif length:
            self.need = length
            self._set("length")
        else:
            self._done_body()

    def _done_body(self) -> None:
        self.requests += 1
        self.started = False
        self._set("head")


class GuardedMixin:
    """Mixed before a uvicorn HTTP/1.1 protocol class by :func:`guarded_protocol`: the cap and the deadlines."""

    limits: Limits = Limits()
    open_connections: set[Any] = set()
    lingering: set[Any] = set()

    def connection_made(self, transport: Any) -> None:
        self._transport, self._framing, self._answered = transport, Framing(), 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_key: tuple[bool, int] | None = None
        self._refused = len(self.open_connections) >= self.limits.max_connections
        if self._refused:
            self._refuse()
            return
        self.open_connections.add(self)
        super().connection_made(transport)  # type: ignore[misc]
        self._rearm()

    def _refuse(self) -> None:
        cap = self.limits.max_connections
        self._transport.write(_raw_response(503, "Service Unavailable", f"the server has {cap} open connections, "
                                            "its cap: retry in a moment", "retry-after: 1\r\n"))
        QUIET.note("refused", str(cap))
        if len(self.lingering) < MAX_LINGERING and self._transport.can_write_eof():
            # Closing with the client's request unread would reset the connection and could drop the
            # 503 on its way: send it, half-close, read and drop what the client sends, close soon.
            self._transport.write_eof()
            self.lingering.add(self)
            self._timer = asyncio.get_running_loop().call_later(LINGER_S, self._transport.close)
        else:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._framing.feed(data)
        super().data_received(data)  # type: ignore[misc]
        self._rearm()

    def eof_received(self) -> Any:
        if self._refused:
            return None  # the transport closes
        return super().eof_received()  # type: ignore[misc]

    def pause_writing(self) -> None:
        if not self._refused:
            super().pause_writing()  # type: ignore[misc]

    def resume_writing(self) -> None:
        if not self._refused:
            super().resume_writing()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refused:
            self.lingering.discard(self)
            return
        self.open_connections.discard(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()  # type: ignore[misc]
        self._rearm()

    def _rearm(self) -> None:
        """Start the deadline of the part of a request now awaited, once: trickled bytes never restart it.

        No deadline runs while the server owes an answer to an earlier request (a pipelining client
        waits for it, and uvicorn stops reading meanwhile).
        """
        framing = self._framing
        owed_before = (framing.heads if framing.in_head else framing.heads - 1) - self._answered
        key = (framing.in_head, framing.heads) if owed_before <= 0 and not self._transport.is_closing() else None
        if key == self._timer_key:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_key = key
        if key is not None:
            timeout = self.limits.header_timeout if framing.in_head else self.limits.body_timeout
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self._transport.is_closing():
            return
        framing, limits = self._framing, self.limits
        if framing.in_head:
            part, can_answer = "headers", framing.started
        else:
            cycle = getattr(self, "cycle", None)
            part, can_answer = "body", cycle is not None and getattr(cycle, "response_started", True) is False
        seconds = limits.header_timeout if framing.in_head else limits.body_timeout
        if can_answer:
            self._transport.write(_raw_response(408, "Request Timeout", f"the request's {part} did not arrive "
                                                f"within {seconds:g} s"))
        self._transport.close()
        QUIET.note("timeout", f"headers within {limits.header_timeout:g} s, body within {limits.body_timeout:g} s")


def guarded_protocol(limits: Limits, base: type | None = None) -> type:
    """uvicorn's HTTP/1.1 protocol class (``base``; default: the one uvicorn picks) with ``limits`` enforced."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base
    return type(f"Guarded{base.__name__}", (GuardedMixin, base),
                {"limits": limits, "open_connections": set(), "lingering": set()})
