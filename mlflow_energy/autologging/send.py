"""One journal entry to MLflow: the run created (or the caller's run used), logged, marked done.

This is the MLflow side of the background logger (:mod:`.background`). It runs in the logger
process (:mod:`.logger_process`), or on the logger thread where that process cannot run. Each
tracking call goes through the project's short, bounded retries
(:mod:`mlflow_energy.tracking.retry`); a server that is away leaves the entry pending in the
journal (:mod:`.journal`), to be logged later, once: an entry that may have reached MLflow before
the journal could say so is looked up by its ``call_id`` tag first.

Example:
    >>> from mlflow_energy.autologging.send import picture_png
    >>> picture_png(None) is None
    True
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from mlflow_energy import schema
from mlflow_energy.autologging.journal import fsync, journal_path, mark_done, pending_entries

#: Longest side of the logged image.
IMAGE_MAX_SIDE = 256

_STATE = {"warned": False, "replayed": False}
_SAY: list[Callable[[str], None]] = []


def picture_png(output: Any) -> bytes | None:
    """The call's first image as PNG bytes, its longest side at most :data:`IMAGE_MAX_SIDE` (or ``None``)."""
    if output is None:
        return None
    from mlflow_energy.autologging.identify import first_image

    picture = first_image(output)
    if picture is None:
        return None
    picture = picture.copy()
    picture.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def handle(entry: dict[str, Any], *, png: bytes | None = None, skip: Iterable[str] = (),
           look_first: bool = False) -> None:
    """Log ``entry`` (pending entries of its URI first, but not the ids in ``skip``); never raises.

    ``look_first``: the entry may already have a run (a logger that ended mid-entry): look it up by
    its call id instead of creating a second one.
    """
    fsync(journal_path())  # on disk before anything is sent
    try:
        if not _STATE["replayed"]:
            _STATE["replayed"] = True
            skipped = set(skip)
            replay(entry["uri"], skip=skipped.__contains__, before=entry["id"])
        send(entry, png=png, replay=look_first)
    except Exception as exc:
        from mlflow_energy.tracking.retry import TrackingUnavailable, is_unavailable

        if isinstance(exc, TrackingUnavailable) or is_unavailable(exc):
            if not _STATE["warned"]:
                _STATE["warned"] = True
                say(f"the tracking server is away: calls are kept in {journal_path()} and logged when it is back "
                    "(the next call, mlflow_energy.flush(), or the next process)")
            _STATE["replayed"] = False
        else:
            say(f"could not log this call ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            mark_done(entry["id"])  # a bad entry would fail again: do not replay it forever


def replay(uri: str, *, skip: Callable[[str], bool] = lambda _id: False, before: str | None = None) -> bool:
    """Log the journal's pending entries for ``uri``; ``True`` when none is left but those skipped.

    ``skip``: ids another sender handles (still queued in the calling process: checked at each
    entry, not once). ``before``: only entries journaled before this call id (those after it are
    newer calls, queued in their own process).
    """
    entries = pending_entries(uri)
    if before is not None:
        ids = [e["id"] for e in entries]
        entries = entries[:ids.index(before)] if before in ids else entries
    for entry in entries:
        if entry["id"] != before and not skip(entry["id"]):
            send(entry, replay=True)
    return not [e for e in pending_entries(uri) if e["id"] != before and not skip(e["id"])]


def _existing_run(client: Any, entry: dict[str, Any]) -> Any:
    runs = client.search_runs([entry["experiment_id"]], filter_string=f"tags.`{schema.T_CALL_ID}` = '{entry['id']}'",
                              max_results=1)
    return runs[0] if runs else None


def _experiment_id(client: Any, entry: dict[str, Any]) -> str:
    if entry.get("experiment_id"):
        return str(entry["experiment_id"])
    name = entry.get("experiment_name")
    if name:
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else client.create_experiment(name)
    from mlflow.tracking.fluent import _get_experiment_id

    return str(_get_experiment_id() or "0")


def _run_tags(entry: dict[str, Any]) -> dict[str, str]:
    tags = dict(entry["run_tags"])
    if not entry.get("context_resolved"):  # an entry of an earlier version: this process's context
        from mlflow.tracking.context.registry import resolve_tags

        tags = resolve_tags(tags)
    tags[schema.T_CALL_ID] = entry["id"]
    if entry.get("parent_run_id"):
        tags[schema.T_PARENT_RUN_ID] = entry["parent_run_id"]
    return tags


def send(entry: dict[str, Any], *, png: bytes | None = None, replay: bool = False) -> None:
    """Log one entry: into the caller's run, or a run created for it; then mark it done."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from mlflow_energy.tracking.retry import configure_client_retries, retrying

    configure_client_retries()
    client = MlflowClient(entry["uri"])
    run_id = entry.get("run_id")
    ours = run_id is None
    if ours:
        entry["experiment_id"] = retrying(lambda: _experiment_id(client, entry), what="finding the experiment")
        existing = retrying(lambda: _existing_run(client, entry), what="looking for the call's run") if replay else None
        if existing is not None and existing.info.status != "RUNNING":  # logged before the journal could say so
            mark_done(entry["id"])
            return
        if existing is None:
            tags = _run_tags(entry)
            existing = retrying(lambda: client.create_run(entry["experiment_id"], run_name=entry["run_name"],
                                                          tags=tags, start_time=entry["start_ms"]),
                                what="creating the call's run")
        # else: created by a logger that stopped mid-entry: finished here, its metrics logged once
        run_id = existing.info.run_id
    already = ours and bool(existing.data.metrics)
    metrics = [] if already else [Metric(k, float(v), entry["time_ms"], int(step)) for k, v, step in entry["metrics"]]
    params = [Param(k, str(v)) for k, v in entry["params"].items()]
    tags = [RunTag(k, str(v)) for k, v in entry["tags"].items()]
    try:
        for start in range(0, max(1, len(metrics)), 1000):  # log_batch takes at most 1000 metrics
            chunk = metrics[start:start + 1000]
            first = start == 0
            retrying(lambda chunk=chunk, first=first: client.log_batch(
                run_id, metrics=chunk, params=params if first else [], tags=tags if first else []),
                what="logging the call")
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        from mlflow_energy.tracking.retry import is_unavailable

        if ours or not isinstance(exc, MlflowException) or is_unavailable(exc):
            raise
        # your run already has one of these params with another value: log the rest
        say(f"params not logged ({str(exc).splitlines()[0][:200]})")
        for start in range(0, max(1, len(metrics)), 1000):
            retrying(lambda start=start: client.log_batch(run_id, metrics=metrics[start:start + 1000], tags=tags),
                     what="logging the call")
    for key in entry.get("delete_tags", []):
        try:
            client.delete_tag(run_id, key)
        except Exception:
            pass
    if png is not None:
        try:
            from PIL import Image

            client.log_image(run_id, Image.open(io.BytesIO(png)), artifact_file=schema.A_IMAGE_PNG)
        except Exception as exc:  # the artifact store is not the tracking server: say so, keep the run
            say(f"image not logged ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    if ours:
        retrying(lambda: client.set_terminated(run_id, entry["status"], end_time=entry["end_ms"]),
                 what="ending the call's run")
    mark_done(entry["id"])


def set_say(say: Callable[[str], None], *, replace: bool = True) -> None:
    """Where the background logger's warnings go (the autolog warning, or the logger process's pipe to it).

    ``replace=False`` keeps one already set.
    """
    if replace or not _SAY:
        _SAY[:] = [say]


def say(message: str) -> None:
    """Warn through what :func:`set_say` set (nothing before that); a failing warning is dropped."""
    for warn in _SAY:
        try:
            warn(message)
        except Exception:
            pass
