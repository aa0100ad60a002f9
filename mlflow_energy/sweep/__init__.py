"""Many configs at once: sweep specs and runs, and the GPU campaign planner.

Owns: which configs to measure and in what order, resuming, sharding between workers.
Modules:
    spec      the YAML grid, its validation, run order and shards (``_axes``: the grid lists checked value by value)
    run       measuring a spec as child runs of one parent run, resumable
    scheduler the shard from a Kubernetes Indexed Job or a Slurm job array (``--shard auto``)
    claims    the journal, retries, heartbeat, stale recovery and per-config claims of a sweep
              (``_online``: whether the tracking server answers, going offline and back)
    coordination  the claims database: one transaction per claim, leases on its clock, fencing tokens
    campaign  a full-size grid planned into a GPU time budget, written as JSONL (a sub-package)
May import: the shared ground, ``families``, ``flops``, ``measure``, ``tracking``.

Example:
    >>> from mlflow_energy.sweep import SweepSpec
    >>> spec = SweepSpec.from_dict({"grid": {"model": ["tiny-sd2"], "resolution": [32, 64], "steps": [1, 2]}})
    >>> len(spec.configs())
    4
"""

from mlflow_energy._imports import lazy_exports

__all__ = ["Coordinator", "SweepGuard", "SweepResult", "SweepSpec", "expand", "in_shard", "parse_shard", "run_sweep", "scheduler_shard"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SweepSpec": "spec",
        "expand": "spec",
        "in_shard": "spec",
        "parse_shard": "spec",
        "SweepResult": "run",
        "Coordinator": "coordination",
        "SweepGuard": "claims",
        "run_sweep": "run",
        "scheduler_shard": "scheduler",
    },
)
