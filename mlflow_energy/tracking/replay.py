"""Replaying JSONL export records into MLflow runs, idempotently (:func:`ingest`).

A record is already logged when a FINISHED measurement run of the experiment has the same
config hash and hardware; such records are skipped, so ingesting a file twice is safe.

Example:
    >>> from mlflow_energy.tracking import ingest
    >>> ingest("measurements.jsonl", experiment="gpu-lab")  # doctest: +SKIP
    (['3f2a...', ...], 0)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from mlflow_energy import schema
from mlflow_energy.tracking.read import finished_keys
from mlflow_energy.tracking.runs import _log_fields, client, default_run_name, experiment_id, run


def log_records(
    records: Iterable[dict[str, Any]],
    *,
    experiment: str | None = None,
    on_logged: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[str], int]:
    """Log JSONL export records as FINISHED runs, skipping (config hash, hardware) already there.

    A record carrying ``parent_run_id`` (a journal record) is nested under that run.
    ``on_logged(record)`` is called for each record that is FINISHED in MLflow afterwards.
    """
    from mlflow_energy.tracking.jsonl import record_key

    exp_id = experiment_id(experiment)
    seen = finished_keys(exp_id)
    new_ids: list[str] = []
    skipped = 0
    from mlflow_energy.tracking.stale import worker_id

    for record in records:
        key = record_key(record)
        if key not in seen and _finished_now(exp_id, key):  # another worker logged it meanwhile
            seen.add(key)
        if key in seen:
            skipped += 1
            if on_logged is not None:
                on_logged(record)
            continue
        tags = dict(record["tags"])
        kind = tags.pop(schema.T_KIND, schema.KIND_MEASUREMENT)
        config = record.get("config")
        name = default_run_name(_Cfg(config)) if isinstance(config, dict) else None
        parent = record.get("parent_run_id") or None
        worker = {schema.T_WORKER: worker_id()}  # on the run from its creation: a killed ingest's run is found
        with run(exp_id, kind=kind, run_name=name, parent_run_id=parent, tags=worker) as run_id:
            _log_fields(run_id, record["params"], record["metrics"], tags)
            if isinstance(config, dict):
                client().log_dict(run_id, {**config, "config_hash": key[0]}, schema.A_CONFIG_JSON)
        seen.add(key)
        new_ids.append(run_id)
        if on_logged is not None:
            on_logged(record)
    return new_ids, skipped


def _finished_now(exp_id: str, key: tuple[str, str]) -> bool:
    """Whether a FINISHED measurement run of ``key`` exists right now (rechecked before each log)."""
    from mlflow_energy.tracking.read import _search

    filt = (f"tags.`{schema.T_CONFIG_HASH}` = '{key[0]}' and attributes.status = 'FINISHED' and "
            f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}'")
    return any(r.data.tags.get(schema.T_HARDWARE, "") == key[1] for r in _search([exp_id], filt))


class _Cfg:
    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)

    def __getattr__(self, name: str) -> Any:
        return None


def ingest(
    path: str | os.PathLike[str], *, experiment: str | None = None
) -> tuple[list[str], int]:
    """Log the records of a JSONL export as MLflow runs; skip those already logged.

    A record is already logged when a FINISHED measurement run of the experiment has the
    same config hash and hardware. Returns ``(new run ids, records skipped)``.

    Example:
        >>> ingest("measurements.jsonl", experiment="gpu-lab")  # doctest: +SKIP
        (['3f2a...', ...], 0)
    """
    from mlflow_energy.tracking.jsonl import read_jsonl, record_key

    records = read_jsonl(path, tolerate_torn_tail=True)
    if experiment is None and any("experiment" in r for r in records):
        # a journal: each record goes back to its own experiment, and is marked logged
        from mlflow_energy.tracking.journal import Journal

        journal = Journal(path)
        ids, skipped = journal.replay()
        return ids, skipped + (len({record_key(r) for r in records}) - len(ids) - skipped)
    return log_records(records, experiment=experiment)
