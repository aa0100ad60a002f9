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
from collections.abc import Iterable
from typing import Any

from mlflow_energy import schema
from mlflow_energy.tracking.read import finished_keys
from mlflow_energy.tracking.runs import _log_fields, client, default_run_name, experiment_id, run


def log_records(records: Iterable[dict[str, Any]], *, experiment: str | None = None) -> tuple[list[str], int]:
    """Log JSONL export records as FINISHED runs, skipping (config hash, hardware) already there."""
    from mlflow_energy.tracking.jsonl import record_key

    exp_id = experiment_id(experiment)
    seen = finished_keys(exp_id)
    new_ids: list[str] = []
    skipped = 0
    for record in records:
        key = record_key(record)
        if key in seen:
            skipped += 1
            continue
        tags = dict(record["tags"])
        kind = tags.pop(schema.T_KIND, schema.KIND_MEASUREMENT)
        config = record.get("config")
        name = default_run_name(_Cfg(config)) if isinstance(config, dict) else None
        with run(exp_id, kind=kind, run_name=name) as run_id:
            _log_fields(run_id, record["params"], record["metrics"], tags)
            if isinstance(config, dict):
                client().log_dict(run_id, {**config, "config_hash": key[0]}, schema.A_CONFIG_JSON)
        seen.add(key)
        new_ids.append(run_id)
    return new_ids, skipped


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
    from mlflow_energy.tracking.jsonl import read_jsonl

    return log_records(read_jsonl(path), experiment=experiment)
