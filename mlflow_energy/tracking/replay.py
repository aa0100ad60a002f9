"""Replaying JSONL export records into MLflow runs, idempotently (:func:`ingest`).

The top of the journal's line (``records`` -> ``jsonl`` -> ``journal`` -> ``replay``): a
journal file is replayed through :class:`~mlflow_energy.tracking.journal.Journal` (its locks, its
``.logged`` ledger), any other export through :func:`log_records`.

A record is already logged when a FINISHED measurement run of the experiment has the same
config hash and hardware; such records are skipped, so ingesting a file twice is safe.

Example:
    >>> from mlflow_energy.tracking import ingest
    >>> ingest("measurements.jsonl", experiment="gpu-lab")  # doctest: +SKIP
    (['3f2a...', ...], 0)
"""

from __future__ import annotations

import os

from mlflow_energy.tracking.journal import Journal, log_records

__all__ = ["ingest", "log_records"]


def _is_journal(path: str) -> bool:
    """Whether a JSONL file is a journal: a line that parses holds an ``experiment`` field."""
    import json

    with open(path, "rb") as fh:
        for raw in fh:
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and "experiment" in record:
                return True
    return False


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

    path = os.fspath(path)
    if experiment is None and os.path.isfile(path) and _is_journal(path):
        # a journal: each record goes back to its own experiment, and is marked logged; a bad line
        # is moved aside; another process replaying it is waited for
        journal = Journal(path)
        ids, skipped = journal.replay(wait=None)
        return ids, skipped + (len({record_key(r) for r in journal.records()}) - len(ids) - skipped)
    return log_records(read_jsonl(path, tolerate_torn_tail=True), experiment=experiment)
