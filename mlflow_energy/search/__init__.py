"""Search: Optuna finds the lowest-energy config under step, quality and latency constraints.

Two modes:

- ``predict`` (:class:`PredictEvaluator`): the registered energy model (or any object with the
  predictor contract's ``.predict(df)``) scores a config in milliseconds; quality comes from a
  :class:`~mlflow_energy.search.quality.QualityModel` fitted on runs that logged quality metrics.
- ``measure`` (:class:`MeasureEvaluator`): each config is measured live with the runner, and its
  images are compared with the reference (same config and seed at ``reference_steps``).

Constraints go through Optuna's constraint support (``Trial.set_constraint`` in Optuna >= 5,
the sampler's ``constraints_func`` before), as relative violations, so the sampler steers away
from infeasible regions. With ``multi_objective=True`` the study minimises energy and
maximises quality, and the result carries the feasible Pareto front.

Owns: the space, the objective, quality, the study and its MLflow runs.
Modules:
    space       dimensions, the search space, constraints, YAML specs
    baseline    the user's baseline config, the default quality floor, the saving's 90% interval
    quality     PSNR/SSIM against a high-step reference, CLIP score, the quality model
    fidelity    predict mode's stored quality proxy (``fidelity_table``: tiny pipelines, steps x scheduler)
    evaluators  scoring a config: by the energy model, or measured live
    study       the Optuna study and :func:`search`
    result      the best config, the Pareto front, the summary
    trial_runs  every trial as an MLflow child run of one search run
    options     :func:`search_from_options`, the entry point of the CLI and the MLproject
May import: every lower layer (shared ground, ``families``, ``flops``, ``measure``, ``tracking``,
``predict``); nothing imports ``search`` but the CLI.

Example:
    >>> from mlflow_energy.search import Constraints, PredictEvaluator, SearchSpace, search
    >>> space = SearchSpace.from_options({"model": ["sd2", "sdxl"], "steps": ["10:50"], "resolution": ["512"]})
    >>> evaluator = PredictEvaluator.from_uri("models:/energy@champion", hardware="H100")  # doctest: +SKIP
    >>> result = search(space, evaluator, Constraints(min_steps=20), trials=100)  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
"""

from mlflow_energy._imports import lazy_exports

_EXPORTS = {
    "Constraints": "space",
    "SearchSpace": "space",
    "load_spec": "space",
    "merge_space": "space",
    "parse_dim": "space",
    "QualityModel": "quality",
    "Saving": "baseline",
    "baseline_config": "baseline",
    "stored_quality_model": "fidelity",
    "psnr": "quality",
    "ssim": "quality",
    "Evaluation": "evaluators",
    "Evaluator": "evaluators",
    "MeasureEvaluator": "evaluators",
    "PredictEvaluator": "evaluators",
    "default_config": "study",
    "search": "study",
    "NoFeasibleConfigError": "result",
    "SearchResult": "result",
    "DIM_OPTIONS": "options",
    "MODES": "options",
    "search_from_options": "options",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
