"""Where measurements are kept: MLflow runs, JSONL exports, public data sets.

Owns: the run schema on the wire (params, metrics, tags, artifacts), reading runs back,
and every other way a measurement enters or leaves MLflow.
Modules:
    records   appending records to a shared file under an exclusive lock (the journal's lowest layer)
    runs      the tracking client, experiments, the run lifecycle, logging one measurement or failure
    read      runs back as a typed DataFrame
    jsonl     measurements as JSON lines (for GPU hosts without a tracking server); no MLflow import
    replay    JSONL records into runs, idempotently (``ingest``)
    journal   the local fsync'ed journal written before each run is logged; output path checks
    retry     short bounded retries for the tracking server; the fresh-database schema race
    stale     heartbeats on live runs; ending the RUNNING runs of dead workers
    mlenergy  the ML.ENERGY leaderboard's public measurements as runs
    filters   search filters with any string value (quotes included); the store's name and value sizes
    ui        how the MLflow UI opens our experiments (classic ML kind, the saved energy view)
May import: the shared ground, ``families``, ``flops``, ``measure`` (types only).

Example:
    >>> from mlflow_energy.tracking import DEFAULT_EXPERIMENT
    >>> DEFAULT_EXPERIMENT
    'mlflow-energy'
"""

from mlflow_energy._imports import lazy_exports

__all__ = [
    "DEFAULT_EXPERIMENT",
    "Journal",
    "JsonlSink",
    "TrackingUnavailable",
    "client",
    "end_run",
    "experiment_id",
    "finished_keys",
    "import_mlenergy",
    "ingest",
    "load_runs",
    "log_failure",
    "default_run_name",
    "energy_view_url",
    "log_measurement",
    "one_line",
    "read_jsonl",
    "recover_stale",
    "run",
    "start_run",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_EXPERIMENT": "runs",
        "client": "runs",
        "end_run": "runs",
        "experiment_id": "runs",
        "log_failure": "runs",
        "default_run_name": "runs",
        "energy_view_url": "ui",
        "log_measurement": "runs",
        "one_line": "runs",
        "run": "runs",
        "start_run": "runs",
        "load_runs": "read",
        "finished_keys": "read",
        "ingest": "replay",
        "JsonlSink": "jsonl",
        "read_jsonl": "jsonl",
        "import_mlenergy": "mlenergy",
        "Journal": "journal",
        "TrackingUnavailable": "retry",
        "recover_stale": "stale",
    },
)
