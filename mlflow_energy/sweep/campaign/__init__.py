"""Plan and run a timed GPU measurement campaign: a grid of configs fitted to a time budget.

A campaign measures every full-size family with random weights on one GPU, phase by phase,
within a fixed wall-clock budget (8 minutes on one H100 by default). Planning is pure and
runs anywhere, without a GPU:

1. :func:`expand_grid` turns a :class:`CampaignSpec` (``projects/gpu-campaign.yaml``) into
   validated :class:`~mlflow_energy.config.InferenceConfig` objects: each family at each
   resolution, at 10 steps and at its default step count, plus extra step counts for the
   transformer (DiT) families at the largest resolution; CFG as the family runs by default.
2. :func:`predict_seconds` predicts a config's time from the FLOPs it executes (one short
   warm-up run plus ``repeats`` measured runs) at a fraction (35 %) of the GPU's dense BF16
   peak, plus a fixed per-config overhead.
3. :func:`fit_budget` keeps the cheapest configs that fit the budget (start-up and one build
   per family included) and drops the largest first; :func:`plan_campaign` does 1-3 and
   orders the run: cheapest family first, each family's configs cheapest first, so a run cut
   short has measured as much as it could.

:func:`run_campaign` then measures the plan with the runner, one family at a time (built
once, freed before the next), printing one table row per config as it goes and appending
one JSON record per config (:mod:`mlflow_energy.tracking.jsonl`) to a JSONL file, with a small
``.meta.json`` beside it (GPU, driver, power limit, software versions, command line). No
MLflow is imported: ``mlflow-energy ingest FILE.jsonl`` logs the records as runs later.

Example:
    >>> from mlflow_energy.sweep.campaign import ConfigPlan, fit_budget, predict_seconds
    >>> predict_seconds(3.5e14, peak_flops=1e15, efficiency=0.35, overhead_s=2.0)
    3.0
    >>> items = [ConfigPlan(key=f"c{i}", family="f", predicted_s=float(s)) for i, s in enumerate([5, 1, 9, 3])]
    >>> kept, dropped = fit_budget(items, budget_s=10.0)
    >>> [p.predicted_s for p in kept], [p.predicted_s for p in dropped]
    ([1.0, 3.0, 5.0], [9.0])

Modules: ``spec`` (the YAML spec and its grid), ``plan`` (time per config, the budget, the
order), ``dependencies`` (what the host must have), ``run`` (measuring the plan).
"""

from mlflow_energy._imports import lazy_exports

_EXPORTS = {
    "MissingModule": "dependencies",
    "WHEELS_HINT": "dependencies",
    "check_dependencies": "dependencies",
    "missing_message": "dependencies",
    "ConfigPlan": "plan",
    "Plan": "plan",
    "config_key": "plan",
    "executed_flops": "plan",
    "fit_budget": "plan",
    "peak_flops_of": "plan",
    "plan_campaign": "plan",
    "plan_configs": "plan",
    "predict_seconds": "plan",
    "run_order": "plan",
    "CampaignResult": "run",
    "TABLE_HEADER": "run",
    "device_name": "run",
    "free_memory": "run",
    "hardware_slug": "run",
    "output_paths": "run",
    "run_campaign": "run",
    "software_versions": "run",
    "table_row": "run",
    "CampaignSpec": "spec",
    "DEFAULT_STEPS": "spec",
    "MEASURED_FAMILIES": "spec",
    "expand_grid": "spec",
    "load_spec": "spec",
    "required_points": "spec",
    "spec_from_dict": "spec",
    "tiny_name": "spec",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
