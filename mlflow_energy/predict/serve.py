"""A strict HTTP front for the registered predictor: MLflow's scoring protocol, 4xx for any bad payload.

``mlflow models serve`` parses the JSON with the model signature before the model sees it, so
``"steps": 30.9`` or ``true`` arrive as numbers, a POST without ``Content-Type`` or a deeply
nested body is a 500, and some 400 bodies carry a Python stack trace. ``mlflow-energy serve``
answers the same routes (``/ping``, ``/health``, ``/version``, ``POST /invocations`` with
``dataframe_records``, ``dataframe_split``, ``inputs`` or ``instances``) as MLflow's own
``invocations`` function does, after checking the raw payload:

- ``Content-Type`` must be ``application/json`` or ``text/csv`` (else 415); bodies over
  :data:`MAX_BODY_BYTES` get 413 (a ``Content-Length`` over it before anything is read, a
  chunked body as soon as its running count passes it), rows over :data:`MAX_ROWS` 413;
- the body must parse as JSON (depth included) into an object with one input key (else 400);
- ``height``, ``width``, ``steps``, ``batch_size`` must be integers (an integral float such as
  ``30.0`` is an integer), never booleans; ``guidance_scale`` a number or null (else 400);
- every error body is ``{"error_code": ..., "message": one line naming the row and field}``.

A JSON body is decoded once: the checked payload is scored as MLflow's ``invocations`` scores it
(:func:`score`: the same parse with the signature, the same ``model.predict``, the same answer text,
written with the C JSON encoder); any other content type goes through ``invocations`` itself.

Its connections (:mod:`mlflow_energy.predict.connections`): a request's headers and its body
each have a deadline (408, then closed), open connections a cap (503), client disconnects and
refused connections at most one log line a minute, and a busy port is one line before anything
is loaded or printed.

Example:
    >>> from mlflow_energy.predict.serve import check_payload
    >>> check_payload({"dataframe_records": [{"steps": 30.9}]})
    Traceback (most recent call last):
    ...
    mlflow_energy.errors.ConfigError: row 0: steps=30.9 is not allowed: expected an integer (not a boolean, not a fraction)
"""

# No `from __future__ import annotations`: FastAPI reads the route's `Request` annotation at runtime.
import errno
import json
import math
import socket
from typing import Any

from mlflow_energy.errors import ConfigError

MAX_BODY_BYTES = 1_000_000
MAX_ROWS = 10_000
INT_COLUMNS = ("height", "width", "steps", "batch_size")
NUMBER_COLUMNS = ("guidance_scale", "carbon_intensity_g_per_kwh", "hardware_tdp_w", "hardware_tflops",
                  "hardware_mem_bw_gb_s")
INPUT_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")


def _row_error(row: int, field: str, value: Any, allowed: str) -> ConfigError:
    exc = ConfigError(field, value, allowed)
    exc.args = (f"row {row}: {exc}",)
    return exc


def _rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    keys = [k for k in INPUT_KEYS if k in payload]
    if len(keys) != 1:
        raise ConfigError("payload", sorted(payload)[:5], "an object with one of the keys " + ", ".join(INPUT_KEYS))
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or not isinstance(
                data.get("data"), list):
            raise ConfigError("dataframe_split", str(data)[:60], "an object with 'columns' and 'data' lists")
        rows = []
        for i, values in enumerate(data["data"]):
            if not isinstance(values, list) or len(values) != len(data["columns"]):
                raise _row_error(i, "data", str(values)[:60], f"a list of {len(data['columns'])} values")
            rows.append(dict(zip(data["columns"], values, strict=True)))
        return rows
    if isinstance(data, dict):  # column-oriented "inputs": {"steps": [..], ...}
        cols = {k: v if isinstance(v, list) else [v] for k, v in data.items()}
        n = max((len(v) for v in cols.values()), default=0)
        return [{k: v[i] if i < len(v) else None for k, v in cols.items()} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(keys[0], str(data)[:60], "a list of row objects")
    return data


def check_payload(payload: Any) -> int:
    """Check a decoded request body; return its row count. Raises :class:`ConfigError` naming the field."""
    if not isinstance(payload, dict):
        raise ConfigError("payload", type(payload).__name__, "a JSON object such as {\"dataframe_records\": [...]}")
    rows = _rows(payload)
    if len(rows) > MAX_ROWS:
        raise ConfigError("rows", len(rows), f"at most {MAX_ROWS} rows per request")
    for i, row in enumerate(rows):
        for col in INT_COLUMNS:
            v = row.get(col)
            if col in row and (isinstance(v, bool) or not isinstance(v, (int, float))
                               or (isinstance(v, float) and not (math.isfinite(v) and v.is_integer()))):
                raise _row_error(i, col, v, "an integer (not a boolean, not a fraction)")
        for col in NUMBER_COLUMNS:
            v = row.get(col)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise _row_error(i, col, v, "a finite number or null")
        for col in ("model", "precision", "hardware"):
            v = row.get(col)
            if col in row and not isinstance(v, str):
                raise _row_error(i, col, v, "a string")
    return len(rows)


def _csv_payload(body: bytes) -> dict[str, Any]:
    """A CSV body (header row, then rows) as a ``dataframe_split`` payload of plain Python values."""
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ConfigError("body", "CSV", f"a CSV table with a header row ({' '.join(str(exc).split())[:200]})") from None
    data = frame.astype(object).where(frame.notna(), None).to_numpy().tolist()
    return {"dataframe_split": {"columns": [str(c) for c in frame.columns], "data": data}}


def _error(status: int, code: str, message: str) -> Any:
    from fastapi.responses import Response

    line = " ".join(str(message).split())[:1000]
    return Response(content=json.dumps({"error_code": code, "message": line}), status_code=status,
                    media_type="application/json")


def _clean(message: str) -> str:
    # MLflow prefixes "Failed to predict data '<the whole frame>'. Error: ..." and "Failed to
    # enforce schema of data '<the whole frame>' with schema ...: the reason comes last, and first here.
    while message.lstrip().startswith("Failed to"):  # nested: "Failed to predict ... Error: Failed to enforce ..."
        marker = next((m for m in ("\nError: ", "'. Error: ", ". Error: ", "Error: ") if m in message), None)
        if marker is None:
            break
        message = message.split(marker, 1)[-1] if marker == "\nError: " else message.rsplit(marker, 1)[-1]
    return message


def _plain_json(content_type: str) -> bool:
    """``application/json`` with no parameter but ``charset=utf-8`` (MLflow answers any other 415)."""
    params = [p.strip().lower().replace(" ", "") for p in content_type.split(";")[1:]]
    return all(p in ("charset=utf-8", "") for p in params)


def score(model: Any, input_schema: Any, payload: dict[str, Any]) -> str:
    """The answer of MLflow's ``scoring_server.invocations`` to a decoded JSON ``payload``: the same
    parse of the input with the signature, the same ``model.predict`` (signature enforcement
    included) and the same JSON text, without decoding the body a second time and with the C JSON
    encoder (MLflow's ``json.dump`` to a stream runs the pure-Python one: most of a 100-row answer's cost).

    Raises:
        MlflowException: as MLflow's parse or the model raise it.
    """
    from mlflow.pyfunc import scoring_server
    from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj

    data = {k: v for k, v in payload.items() if k in INPUT_KEYS}
    frame = scoring_server.infer_and_parse_data(data, input_schema)
    raw = model.predict(frame, params=payload.get("params"))
    return json.dumps({"predictions": _get_jsonable_obj(raw, pandas_orient="records")}, cls=NumpyEncoder)


def create_app(model_uri: str) -> Any:
    """The FastAPI app serving ``model_uri`` (see the module doc)."""
    import asyncio

    import mlflow
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server
    from starlette.requests import ClientDisconnect

    from mlflow_energy.predict.connections import QUIET

    model = mlflow.pyfunc.load_model(model_uri)
    input_schema = model.metadata.get_input_schema()
    app = FastAPI()

    async def ping() -> Any:
        return Response(content="\n", status_code=200, media_type="application/json")

    app.get("/ping")(ping)
    app.get("/health")(ping)

    @app.get("/version")
    async def version() -> Any:
        return Response(content=mlflow.__version__, status_code=200, media_type="application/json")

    @app.post("/invocations")
    async def invocations(request: Request) -> Any:
        content_type = (request.headers.get("content-type") or "").strip()
        mime = content_type.split(";")[0].strip().lower()
        if mime not in ("application/json", "text/csv"):
            return _error(415, "BAD_REQUEST", f"Content-Type={content_type!r} is not allowed: expected "
                          "application/json or text/csv")
        too_big = _error(413, "BAD_REQUEST", f"body is not allowed: expected at most {MAX_BODY_BYTES} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > MAX_BODY_BYTES):
            return too_big  # refused before a byte of it is read
        chunks, size = [], 0
        try:
            async for chunk in request.stream():  # a chunked body is counted as it arrives, never held whole
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return too_big
                chunks.append(chunk)
        except ClientDisconnect:  # gone (or closed at its body deadline): nobody to answer, nothing to trace
            QUIET.note("disconnect", "while sending its body")
            return _error(400, "BAD_REQUEST", "the client disconnected while sending its body")
        body = b"".join(chunks)
        if mime == "text/csv":
            # MLflow's CSV parser needs a pandas dtype for every signature column and the predictor's
            # numbers are AnyType (any int or float where it fits): read the CSV here, then score
            # the rows as dataframe_split JSON, through the same checks as a JSON body.
            try:
                payload = _csv_payload(body)
            except ConfigError as exc:
                return _error(400, "BAD_REQUEST", str(exc))
            body, content_type, mime = json.dumps(payload).encode(), "application/json", "application/json"
        if mime == "application/json":
            try:
                payload = json.loads(body)
            except RecursionError:
                return _error(400, "BAD_REQUEST", "body is not allowed: expected JSON nested less deeply")
            except (ValueError, UnicodeDecodeError) as exc:
                return _error(400, "BAD_REQUEST", f"body is not allowed: expected valid UTF-8 JSON ({exc})")
            try:
                check_payload(payload)
            except ConfigError as exc:
                status = 413 if exc.field == "rows" else 400
                return _error(status, "INVALID_PARAMETER_VALUE", str(exc))
        try:
            if mime == "application/json" and _plain_json(content_type):
                answer = await asyncio.to_thread(score, model, input_schema, payload)
                return Response(content=answer, status_code=200, media_type="application/json")
            result = await asyncio.to_thread(scoring_server.invocations, body, content_type, model, input_schema)
        except MlflowException as exc:
            status = exc.get_http_status_code()
            return _error(status if 400 <= status < 500 else 400, exc.error_code, _clean(exc.message))
        except Exception as exc:  # noqa: BLE001 - a payload the model cannot use: the client's error
            return _error(400, "BAD_REQUEST", f"input could not be used: {type(exc).__name__}: {exc}")
        if result.status >= 400:
            try:
                answer = json.loads(result.response)
                code, message = answer.get("error_code", "BAD_REQUEST"), _clean(str(answer.get("message", "")))
            except (ValueError, AttributeError):
                code, message = "BAD_REQUEST", _clean(str(result.response))
            return _error(result.status, code, message)
        return Response(content=result.response, status_code=result.status, media_type=result.mimetype)

    return app


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (connections wait until :func:`run`); a bind error is one ConfigError naming them."""
    from mlflow_energy.predict.connections import BACKLOG

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError("host", host, f"an address of this machine to listen on ({where}: {exc.strerror or exc})"
                          ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        field, value = ("port", port) if exc.errno in (errno.EADDRINUSE, errno.EACCES) else ("host", host)
        raise ConfigError(field, value, f"an address free to listen on ({where}: {exc.strerror or exc})") from None
    return sock


def run(app: Any, sock: socket.socket, limits: Any, *, log_level: str = "warning") -> None:
    """Serve ``app`` on the bound ``sock`` with uvicorn (one process, asyncio) under ``limits`` until stopped."""
    import asyncio
    import logging

    import uvicorn

    from mlflow_energy.predict.connections import BACKLOG, QuietFilter, guarded_protocol, loop_exception_handler

    config = uvicorn.Config(app, http=guarded_protocol(limits), loop="asyncio", workers=1, log_level=log_level,
                            timeout_keep_alive=5, backlog=BACKLOG)
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietFilter) for f in logger.filters):
        logger.addFilter(QuietFilter())
    server = uvicorn.Server(config)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
        await server.serve(sockets=[sock])

    asyncio.run(main())


def serve(model_uri: str, *, host: str = "127.0.0.1", port: int = 5001, limits: Any = None) -> None:
    """Serve ``model_uri`` with uvicorn (one process) until interrupted, under ``limits``
    (:class:`~mlflow_energy.predict.connections.Limits`; default: 10 s deadlines, the default cap).

    The port is taken first: a busy one raises :class:`ConfigError` before the model is loaded.
    """
    from mlflow_energy.predict.connections import Limits, default_max_connections

    sock = bind(host, port)
    try:
        app = create_app(model_uri)
    except BaseException:
        sock.close()
        raise
    run(app, sock, limits or Limits(max_connections=default_max_connections()))
