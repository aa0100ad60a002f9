"""MLflow plugins, registered through entry points when mlflow-energy is installed.

Owns: what MLflow loads from ``pyproject.toml``'s entry points:
Modules:
    context    ``mlflow.run_context_provider``: every ``mlflow.start_run()`` is tagged with the
               hardware, driver and energy source (opt out: ``MLFLOW_ENERGY_RUN_CONTEXT=false``)
    evaluator  ``mlflow.model_evaluator`` named ``energy``: ``mlflow.models.evaluate(...,
               evaluators=["default", "energy"])`` adds the energy of the model's predictions
May import: the shared ground and ``measure``. Loaded by MLflow at import time, so nothing
heavy (torch, Zeus) is imported before it is needed.

Example:
    >>> from mlflow.tracking.context.registry import resolve_tags
    >>> "mlflow_energy.energy_source" in resolve_tags()  # doctest: +SKIP
    True
"""

from mlflow_energy._imports import lazy_exports

__all__ = ["ENV_RUN_CONTEXT", "EnergyEvaluator", "EnergyRunContext", "machine_tags"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ENV_RUN_CONTEXT": "context",
        "EnergyRunContext": "context",
        "machine_tags": "context",
        "EnergyEvaluator": "evaluator",
    },
)
