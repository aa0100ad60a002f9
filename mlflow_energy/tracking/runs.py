"""Measurements as MLflow runs: the client, experiments, the run lifecycle, logging.

One inference config is one run (the run schema in :mod:`mlflow_energy.schema`): params,
per-image metrics, tags, the config as ``config.json``, a small ``image.png`` of the first
image, and on a GPU the power timeline as ``power_timeline.csv``.

The tracking URI is MLflow's: ``MLFLOW_TRACKING_URI``, else MLflow's default
(``sqlite:///mlflow.db`` in the working directory with MLflow 3). The experiment is, in
order: the ``experiment`` argument, ``MLFLOW_EXPERIMENT_ID`` or ``MLFLOW_EXPERIMENT_NAME``
(set by ``mlflow run``), else :data:`DEFAULT_EXPERIMENT`. Launched by ``mlflow run``
(``MLFLOW_RUN_ID`` set), runs are nested under the project's run when they share its
experiment.

Example:
    >>> from mlflow_energy.config import InferenceConfig
    >>> from mlflow_energy.measure import measure
    >>> from mlflow_energy.tracking import load_runs, log_measurement
    >>> run_id = log_measurement(measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1)),
    ...                          experiment="demo")  # doctest: +SKIP
    >>> load_runs("demo")[["run_id", "model", "energy/total_j"]]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from mlflow_energy.measure.runner import Measurement

#: Experiment used when none is named and MLflow's environment names none.
DEFAULT_EXPERIMENT = "mlflow-energy"
#: Longest side of the logged ``image.png``.
IMAGE_MAX_SIDE = 256



def client() -> MlflowClient:
    """An :class:`mlflow.MlflowClient` on the current tracking URI."""
    from mlflow import MlflowClient

    return MlflowClient()


def experiment_id(experiment: str | None = None, *, create: bool = True) -> str:
    """The id of the experiment named ``experiment`` (created if missing), or of the ambient one.

    Example:
        >>> experiment_id("my-energy-runs")  # doctest: +SKIP
        '1'
    """
    c = client()
    if not experiment:
        env_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if env_id:
            return env_id
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    exp = c.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise ConfigError(
                "experiment", experiment, "an active experiment (it is deleted: restore it or choose another name)"
            )
        return exp.experiment_id
    if not create:
        names = sorted(e.name for e in c.search_experiments())
        raise ConfigError("experiment", experiment, "an existing experiment: " + (", ".join(names) or "none yet"))
    from mlflow_energy.tracking.ui import experiment_tags

    try:
        return c.create_experiment(experiment, tags=experiment_tags())
    except Exception as exc:  # another worker created it at the same moment
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
        return c.get_experiment_by_name(experiment).experiment_id


def ambient_parent(exp_id: str) -> str | None:
    """The run ``mlflow run`` launched us in (``MLFLOW_RUN_ID``), when it is in experiment ``exp_id``."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    try:
        ambient = client().get_run(run_id)
    except Exception:
        return None
    if ambient.info.experiment_id != exp_id or ambient.info.status != "RUNNING":
        return None
    return run_id


def start_run(
    exp_id: str,
    *,
    kind: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """Create a RUNNING run (nested under ``parent_run_id``, else under the ambient project run)."""
    return _create_run(client(), exp_id, kind=kind, run_name=run_name, parent_run_id=parent_run_id,
                       tags=tags).info.run_id


def _create_run(c: MlflowClient, exp_id: str, *, kind: str, run_name: str | None, parent_run_id: str | None,
                tags: dict[str, str] | None) -> Any:
    """:func:`start_run`, returning MLflow's ``Run`` (its artifact URI too). The tags are checked (and a
    long value cut) as ``log_batch`` checks them: the store's ``create_run`` takes them as they are."""
    from mlflow.utils.validation import _validate_tag

    all_tags = {schema.T_KIND: kind}
    all_tags.update(tags or {})
    parent = parent_run_id or ambient_parent(exp_id)
    if parent:
        all_tags[schema.T_PARENT_RUN_ID] = parent
    checked = (_validate_tag(k, str(v), path=f"tags[{i}]") for i, (k, v) in enumerate(all_tags.items()))
    created = c.create_run(exp_id, run_name=run_name, tags={t.key: t.value for t in checked})
    if not parent:
        _link_project_run(exp_id, created.info.run_id, kind, run_name)
    return created


def _link_project_run(exp_id: str, run_id: str, kind: str, run_name: str | None) -> None:
    """Under ``mlflow run`` whose run is in another experiment: link the two both ways.

    ``mlflow run .`` without ``--experiment-name`` puts its own run in the Default experiment while
    the entry point logs into the spec's; the project run's description then says where the
    results are (one line per top-level run, a link the UI opens), and each of those runs carries
    ``mlflow_energy.project_run_id``. Best effort: a failure never stops the caller.
    """
    project = os.environ.get("MLFLOW_RUN_ID")
    if not project or project == run_id:
        return
    try:
        c = client()
        ambient = c.get_run(project)
        if ambient.info.experiment_id == exp_id or ambient.info.status != "RUNNING":
            return
        c.set_tag(run_id, schema.T_PROJECT_RUN_ID, project)
        note = ambient.data.tags.get(schema.T_NOTE, "")
        head = "This `mlflow run` logged its results in another experiment:"
        from mlflow_energy.tracking.ui import energy_view_path

        exp_name = c.get_experiment(exp_id).name
        line = f"- {kind} run [{run_name or run_id}](#/experiments/{exp_id}/runs/{run_id}) " \
               f"in experiment [{exp_name}]({energy_view_path(exp_id).lstrip('/')})"  # the runs table, any browser
        c.set_tag(project, schema.T_NOTE, (note or head) + "\n" + line)
    except Exception:
        pass


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Terminate a run with ``status`` (FINISHED, FAILED or KILLED)."""
    client().set_terminated(run_id, status=status)


@contextlib.contextmanager
def run(
    exp_id: str,
    *,
    kind: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[str]:
    """A run for the block: FINISHED when it completes, KILLED on Ctrl-C, FAILED on an error.

    No run is left RUNNING, whatever the block raises.
    """
    run_id = start_run(exp_id, kind=kind, run_name=run_name, parent_run_id=parent_run_id, tags=tags)
    with _ending(client(), run_id):
        yield run_id


@contextlib.contextmanager
def _ending(c: MlflowClient, run_id: str) -> Iterator[None]:
    """End ``run_id`` after the block: FINISHED, KILLED on Ctrl-C, FAILED (with the reason) on an error."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):  # the reason on the FAILED run (a full artifact store, ...)
            c.set_tag(run_id, schema.T_FAILURE, one_line(exc))
        raise
    finally:
        c.set_terminated(run_id, status=status)


def one_line(exc: BaseException) -> str:
    """An exception as one line (for the failure tag)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    line = f"{type(exc).__name__}: {text}"
    return line[:480]


def _log_fields(run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str],
                c: MlflowClient | None = None) -> None:
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    (c or client()).log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )


def _image_of(images: Any) -> Any:
    from PIL import Image

    first = images[0].detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(first)
    if max(img.size) > IMAGE_MAX_SIDE:
        img.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
    return img


def log_artifacts(run_id: str, m: Measurement, *, artifact_uri: str | None = None, c: MlflowClient | None = None
                  ) -> None:
    """Log ``config.json``, ``image.png`` and (when measured) ``power_timeline.csv`` to a run.

    With ``artifact_uri`` (the run's, from its creation) no ``get_run`` is needed to find the run's
    artifact repository; the bytes are those ``log_dict``, ``log_image`` and ``log_text`` write.
    """
    import io
    import json

    c = c or client()
    config = m.config.to_dict()
    config["config_hash"] = m.config.config_hash()
    files = {schema.A_CONFIG_JSON: json.dumps(config, indent=2, default=str).encode()}
    if m.images is not None and len(m.images):
        buf = io.BytesIO()
        _image_of(m.images).save(buf, format="PNG")
        files[schema.A_IMAGE_PNG] = buf.getvalue()
    if m.timeline is not None and len(m.timeline):
        files[schema.A_POWER_TIMELINE_CSV] = m.timeline.to_csv(index=False).encode("utf-8")
    _write_artifacts(c, artifact_uri or c.get_run(run_id).info.artifact_uri, files)


def _write_artifacts(c: MlflowClient, artifact_uri: str, files: dict[str, bytes]) -> None:
    """Files at the root of a run's artifacts: streamed where the repository takes a stream (a local
    artifact root: no temporary file, no copy), else from a temporary directory as the client does."""
    import io
    import tempfile

    from mlflow.store.artifact.artifact_repo import StreamUploadMixin
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

    uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, c.tracking_uri)
    repo = get_artifact_repository(uri, tracking_uri=c.tracking_uri)
    if isinstance(repo, StreamUploadMixin):
        for name, data in files.items():
            repo.log_artifact_from_stream(io.BytesIO(data), name)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
            repo.log_artifact(os.path.join(tmp, name))


def log_measurement(
    m: Measurement,
    *,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    carbon_intensity: str | float | None = None,
    exp_id: str | None = None,
) -> str:
    """Log a :class:`~mlflow_energy.measure.runner.Measurement` as one FINISHED run; return its id.

    The run carries ``carbon/co2e_g`` per image at ``carbon_intensity`` (see
    :func:`mlflow_energy.carbon.run_intensity`: else ``$MLFLOW_ENERGY_CARBON_INTENSITY``, else the
    world average), with the intensity and its source as tags.

    Args:
        m: the measurement.
        experiment: experiment name (created if missing); default: see the module doc.
        parent_run_id: nest the run under this run (a sweep).
        run_name: default ``<model>-<height>x<width>-<steps>st-<precision>-b<batch>``.
        carbon_intensity: gCO2e/kWh, WORLD, a country code (DEU) or a cloud region (gcp:us-central1).
        exp_id: the experiment's id, where the caller has looked it up already (a sweep, once for
            all its configs): no lookup by name per run.

    Example:
        >>> from mlflow_energy.config import InferenceConfig
        >>> from mlflow_energy.measure.runner import measure
        >>> log_measurement(measure(InferenceConfig(model="tiny-sd2", steps=1)), experiment="demo")  # doctest: +SKIP
        'a1b2c3...'
    """
    from mlflow_energy.carbon import J_PER_KWH, run_intensity
    from mlflow_energy.tracking.jsonl import run_metrics, run_params, run_tags

    grid, carbon_source = run_intensity(carbon_intensity)
    metrics = run_metrics(m)
    metrics[schema.M_CARBON_CO2E] = m.energy_j[schema.PHASE_TOTAL] / J_PER_KWH * grid.g_per_kwh
    metrics.update(display_metrics(m))  # with the run's own metrics: a sweep's summary need not write them later
    tags = {**run_tags(m), schema.T_CARBON_INTENSITY: f"{grid.g_per_kwh:g}", schema.T_CARBON_SOURCE: carbon_source,
            schema.T_NOTE: run_description(m)}
    c = client()  # the run's tags with its creation, then one log_batch, its artifacts, its end: four calls
    created = _create_run(c, exp_id or experiment_id(experiment), kind=schema.KIND_MEASUREMENT,
                          run_name=run_name or default_run_name(m.config), parent_run_id=parent_run_id, tags=tags)
    run_id = created.info.run_id
    with _ending(c, run_id):
        _log_fields(run_id, run_params(m), metrics, {}, c)
        log_artifacts(run_id, m, artifact_uri=created.info.artifact_uri, c=c)
    return run_id


def display_metrics(m: Measurement) -> dict[str, float]:
    """The energy view's short columns of a measurement: ``J/img`` and ``s/img``, three significant digits."""
    return display_of({schema.M_ENERGY_TOTAL: m.energy_j[schema.PHASE_TOTAL],
                       schema.M_TIME_TOTAL: m.time_s[schema.PHASE_TOTAL]})


def display_of(metrics: dict[str, float]) -> dict[str, float]:
    """``J/img`` and ``s/img`` from a run's full-precision metrics (those it has)."""
    import math

    from mlflow_energy.tracking.ui import rounded

    pairs = ((schema.M_ENERGY_TOTAL, schema.M_VIEW_ENERGY), (schema.M_TIME_TOTAL, schema.M_VIEW_TIME))
    return {short: rounded(float(metrics[full])) for full, short in pairs
            if isinstance(metrics.get(full), (int, float)) and math.isfinite(metrics[full])}


def sig3(value: float) -> str:
    """A number as the run description prints it: three significant digits (``1.23e+12``, ``0.0457``)."""
    return f"{value:.3g}"


def run_description(m: Measurement) -> str:
    """The run note: per phase energy, time, FLOPs and share, the energy source and its 95% interval.

    Example:
        >>> sig3(1234.5678), sig3(0.000123456)
        ('1.23e+03', '0.000123')
    """
    total = m.energy_j[schema.PHASE_TOTAL] or 1.0
    estimate = m.energy_source.startswith(schema.SOURCE_ESTIMATE_PREFIX)
    rows = ["| phase | energy J/img | time s/img | FLOPs/img | share |", "| --- | ---: | ---: | ---: | ---: |"]
    for phase in (*schema.PHASES, schema.PHASE_TOTAL):
        rows.append(f"| {phase} | {sig3(m.energy_j[phase])} | {sig3(m.time_s[phase])} | "
                    f"{sig3(m.flops.get(phase, float('nan')))} | {100.0 * m.energy_j[phase] / total:.0f}% |")
    ci = m.energy_total_ci95_j
    conf = f"total ±{100.0 * ci / total:.1f}% (95% interval, {m.repeats} runs)" if m.repeats and ci == ci else "n/a"
    kind = "an estimate, not a measurement" if estimate else "measured"
    return "\n".join([*rows, "", f"Energy source: `{m.energy_source}` ({kind}) on {m.hardware}; confidence: {conf}."])


def default_run_name(cfg: Any) -> str:
    """``<model>-<height>x<width>-<steps>st-g<guidance>-<precision>-b<batch>``."""
    guidance = "" if cfg.guidance_scale is None else f"-g{cfg.guidance_scale:g}"
    return f"{cfg.model}-{cfg.height}x{cfg.width}-{cfg.steps}st{guidance}-{cfg.precision}-b{cfg.batch_size}"


def log_failure(
    cfg: Any,
    exc: BaseException,
    *,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    hardware: str | None = None,
    energy_source: str | None = None,
) -> str:
    """Log a config that could not be measured as a FAILED run with the reason (one line)."""
    exp_id = experiment_id(experiment)
    tags = {
        schema.T_FAILURE: one_line(exc),
        schema.T_CONFIG_HASH: cfg.config_hash(),
        schema.T_VERSION: __version__,
    }
    if hardware:
        tags[schema.T_HARDWARE] = hardware
    if energy_source:
        tags[schema.T_ENERGY_SOURCE] = energy_source
    run_id = start_run(
        exp_id, kind=schema.KIND_MEASUREMENT, run_name=default_run_name(cfg), parent_run_id=parent_run_id, tags=tags
    )
    try:
        params = {k: str(v) for k, v in cfg.to_dict().items() if k in (*schema.RUN_PARAMS, *schema.OPTIONAL_PARAMS) and v is not None}
        client().log_batch(run_id, params=[_param(k, v) for k, v in params.items()])
    finally:
        end_run(run_id, "FAILED")
    return run_id


def _param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    return Param(key, value)


