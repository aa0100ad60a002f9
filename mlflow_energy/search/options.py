"""The search from command-line options: one function the CLI and the MLproject call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow_energy.errors import ConfigError
from mlflow_energy.search.baseline import parse_baseline
from mlflow_energy.search.evaluators import DEFAULT_DEVICE, Evaluator, MeasureEvaluator, PredictEvaluator
from mlflow_energy.search.result import SearchResult
from mlflow_energy.search.space import Constraints, SearchSpace, load_spec, merge_space
from mlflow_energy.search.study import search

MODES: tuple[str, ...] = ("predict", "measure")


# ---------------------------------------------------------------------- options (CLI, YAML)
DIM_OPTIONS: tuple[str, ...] = (
    "model", "resolution", "height", "width", "steps", "guidance_scale", "precision", "batch_size", "scheduler",
    "power_limit_w", "cfg_passes",
)


SEARCH_DEFAULTS: dict[str, Any] = {
    "mode": "predict", "model_uri": None, "hardware": None, "avg_power_w": None, "quality_model_uri": None,
    "quality_experiment": (), "trials": 50, "seed": 0, "storage": None, "study_name": None, "experiment": None,
    "multi_objective": False, "quality_metric": "psnr", "device": DEFAULT_DEVICE, "weights": "random", "repeats": 3,
    "warmup": 1, "reference_steps": 50, "clip_model": None, "prompt": None, "plots": True, "log_trials": True,
    "baseline": (), "quality_floor": True,
}


def search_from_options(
    dims: dict[str, Sequence[str]], constraints: dict[str, Any], options: dict[str, Any], spec: str | None = None
) -> SearchResult:
    """The ``mlflow-energy search`` command: merge a YAML spec with command-line values and search.

    Command-line values (not ``None``, not empty) override the spec's ``space``,
    ``constraints`` and ``search`` sections, which override :data:`SEARCH_DEFAULTS`.

    Example:
        >>> search_from_options({"model": ["sd2"], "steps": ["10:50"]}, {"min_steps": 20},
        ...                     {"model_uri": "models:/energy@champion", "hardware": "H100"})  # doctest: +SKIP
    """
    loaded = load_spec(spec) if spec else {"space": {}, "constraints": {}, "search": {}}
    unknown = set(loaded["search"]) - set(SEARCH_DEFAULTS)
    if unknown:
        raise ConfigError("spec.search", sorted(unknown)[0], "options " + ", ".join(sorted(SEARCH_DEFAULTS)))
    opts = {**SEARCH_DEFAULTS, **loaded["search"], **{k: v for k, v in options.items() if v not in (None, (), [])}}
    cons = {**loaded["constraints"], **{k: v for k, v in constraints.items() if v is not None}}
    space = SearchSpace.from_options(merge_space(loaded["space"], dims))
    if opts["mode"] not in MODES:
        raise ConfigError("mode", opts["mode"], "one of " + ", ".join(MODES))
    if opts["mode"] == "predict":
        if not opts["model_uri"]:
            raise ConfigError("model_uri", None, "the registered energy model (--model-uri models:/NAME@champion)")
        evaluator: Evaluator = PredictEvaluator.from_uri(
            opts["model_uri"], opts["hardware"],
            quality_model_uri=opts["quality_model_uri"], avg_power_w=opts["avg_power_w"],
        )
        experiments = opts["quality_experiment"]
        if isinstance(experiments, str):
            experiments = [experiments]
        if experiments and evaluator.quality_model is None:
            from mlflow_energy.search.quality import fit_quality_model

            evaluator.quality_model = fit_quality_model(list(experiments))
            evaluator.quality_model_uri = "fitted from experiments " + ",".join(experiments)
    else:
        evaluator = MeasureEvaluator(
            device=opts["device"], weights=opts["weights"], repeats=opts["repeats"], warmup=opts["warmup"],
            reference_steps=opts["reference_steps"], clip_model=opts["clip_model"], prompt=opts["prompt"],
        )
    return search(
        space, evaluator, Constraints(**cons), trials=opts["trials"], seed=opts["seed"], storage=opts["storage"],
        study_name=opts["study_name"], experiment=opts["experiment"], multi_objective=bool(opts["multi_objective"]),
        quality_metric=opts["quality_metric"], plots=bool(opts["plots"]), log_trials=bool(opts["log_trials"]),
        baseline=parse_baseline(opts["baseline"]), quality_floor=bool(opts["quality_floor"]),
    )
