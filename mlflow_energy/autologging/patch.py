"""``autolog()``: every diffusers pipeline call logs its energy to MLflow, unmodified.

Patching: the ``__call__`` of every :class:`diffusers.DiffusionPipeline` subclass already
imported, and (through ``DiffusionPipeline.__init_subclass__``) of every subclass defined
later, including diffusers' lazily imported pipelines and your own subclasses. A call made
inside another patched call (a pipeline that runs another one) is measured once, by the
outermost call. ``autolog(disable=True)`` restores every original ``__call__``.

Runs, in the manner of MLflow's autologging:

- no active run: a new run per call in the active experiment, ended when the call returns
  (FAILED with the reason as the ``mlflow_energy.failure`` tag if the pipeline raises);
- an active run (``with mlflow.start_run():``) not yet holding a call: the call logs into it;
- an active run that already holds a call, or ``exclusive=True``: a nested child run per call.

The caller's thread only reads the meter and queues the call; the run is created and logged by
a background thread, journal first (:mod:`.background`): the end of your run waits for its
calls (:mod:`.runend`, bounded); call :func:`mlflow_energy.flush` before reading a run made
outside yours. A tracking server that is away never holds your call.

Measurement errors never break the user's call: they are warned about (unless ``silent``) and
the pipeline runs unmeasured.

Example:
    >>> import mlflow_energy
    >>> mlflow_energy.autolog()  # doctest: +SKIP
    >>> image = pipe("an astronaut riding a horse").images[0]  # doctest: +SKIP
    >>> mlflow_energy.autolog(disable=True)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from mlflow_energy import schema
from mlflow_energy.autologging.probe import CallProbe

_logger = logging.getLogger(__name__)
_PATCHED_FLAG = "_mlflow_energy_autolog"


@dataclass
class _Config:
    enabled: bool = False
    log_images: bool = True
    exclusive: bool = False
    silent: bool = False
    meter: Any | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    carbon: Any = None  # (GridIntensity, source label) from carbon.run_intensity
    context_tags: dict[str, str] = field(default_factory=dict)  # MLflow's run context: source, user, git


_CONFIG = _Config()
_LOCAL = threading.local()
_ORIGINALS: dict[type, Any] = {}
_METERS: dict[str, Any] = {}
_HOOKED: list[Any] = []  # the DiffusionPipeline class whose __init_subclass__ we set
_RUNS_WITH_CALL: set[str] = set()
_RUNS_WITH_FAILURE: set[str] = set()  # runs of yours we tagged with a failure: a later success clears it
_RUNS_LOCK = threading.Lock()
# Opening a meter imports Zeus, whose AMD backend swaps sys.stdout for None while it imports
# amdsmi: two threads doing it at once lose each other's stdout (and one import fails).
_METER_LOCK = threading.Lock()


def autolog(
    *,
    log_images: bool = True,
    disable: bool = False,
    exclusive: bool = False,
    silent: bool = False,
    meter: Any | None = None,
    extra_tags: dict[str, str] | None = None,
    carbon_intensity: float | str | None = None,
    region: str | None = None,
    run_end_timeout: float = 10.0,
) -> None:
    """Log the energy of every diffusers pipeline call to MLflow (see the module doc).

    Args:
        log_images: log the call's first image as ``image.png`` (longest side 256 px).
        disable: restore the pipelines' own ``__call__`` and stop logging.
        exclusive: never log into a run you started; each call gets its own run (nested under yours).
        silent: no warnings or log messages from autologging.
        meter: an :class:`~mlflow_energy.measure.meters.EnergyMeter`; default
            :func:`~mlflow_energy.measure.meters.auto_meter` for the pipeline's device.
        extra_tags: more tags for every autologged run.
        carbon_intensity: grid gCO2e/kWh (or a code) for ``carbon/co2e_g``; default
            ``$MLFLOW_ENERGY_CARBON_INTENSITY``, else the world average.
        region: WORLD, a country code (FRA) or a cloud region (gcp:us-central1), instead of a number.
        run_end_timeout: how long the end of your run (``mlflow.end_run``, a ``with`` block's exit)
            waits for its calls to be logged (seconds; then a warning: the rest is in the journal).

    Example:
        >>> import mlflow_energy
        >>> mlflow_energy.autolog(log_images=False, silent=True)  # doctest: +SKIP
        >>> mlflow_energy.autolog(disable=True)
    """
    from mlflow_energy.autologging import runend

    if disable:
        _unpatch()
        runend.uninstall()
        _CONFIG.enabled = False
        return
    from diffusers import DiffusionPipeline

    _CONFIG.log_images = log_images
    _CONFIG.exclusive = exclusive
    _CONFIG.silent = silent
    _CONFIG.meter = meter
    _CONFIG.extra_tags = dict(extra_tags or {})
    from mlflow.tracking.context.registry import resolve_tags

    _CONFIG.context_tags = resolve_tags()  # this process's: the logger process would name itself
    from mlflow_energy.carbon import run_intensity

    _CONFIG.carbon = run_intensity(region if region is not None else carbon_intensity)
    _CONFIG.enabled = True
    runend.install(run_end_timeout, warn=None if silent else runend.warn)
    _quiet_library_notices()
    _prewarm()
    for cls in [DiffusionPipeline, *_subclasses(DiffusionPipeline)]:
        _patch(cls)
    if not _HOOKED:
        had_own = "__init_subclass__" in vars(DiffusionPipeline)

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            super(DiffusionPipeline, cls).__init_subclass__(**kwargs)
            if _CONFIG.enabled:
                _patch(cls)

        if not had_own:
            DiffusionPipeline.__init_subclass__ = classmethod(__init_subclass__)  # type: ignore[assignment]
            _HOOKED.append(DiffusionPipeline)


class _NoticeFilter(logging.Filter):
    """Drops transformers' notice that an image processor falls back to PIL without torchvision."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def _quiet_library_notices() -> None:
    """No library notice on your console from the imports autolog's pipelines trigger (transformers' torchvision one)."""
    target = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _NoticeFilter) for f in target.filters):
        target.addFilter(_NoticeFilter())


def _prewarm() -> None:
    """Pay once, here, what the first call would: the meter (Zeus's imports), the logging modules, the logger process."""
    import importlib

    for module in ("mlflow_energy.autologging.background", "mlflow_energy.autologging.identify",
                   "mlflow_energy.autologging.log", "mlflow_energy.flops"):
        importlib.import_module(module)
    from mlflow_energy.autologging import background

    background.start_logger()
    try:
        import torch

        _meter_for("cuda:0" if torch.cuda.is_available() else "cpu")
    except Exception:  # measured (and warned about) at the first call instead
        pass


def is_enabled() -> bool:
    """Whether :func:`autolog` is on."""
    return _CONFIG.enabled


def _subclasses(cls: type) -> list[type]:
    found, todo = [], list(cls.__subclasses__())
    while todo:
        sub = todo.pop()
        if sub not in found:
            found.append(sub)
            todo.extend(sub.__subclasses__())
    return found


def _patch(cls: type) -> None:
    original = vars(cls).get("__call__")
    if original is None or getattr(original, _PATCHED_FLAG, False) or cls in _ORIGINALS:
        return
    _ORIGINALS[cls] = original
    cls.__call__ = _wrap(original)  # type: ignore[method-assign]


def _unpatch() -> None:
    for cls, original in _ORIGINALS.items():
        cls.__call__ = original  # type: ignore[method-assign]
    _ORIGINALS.clear()
    for cls in _HOOKED:
        del cls.__init_subclass__
    _HOOKED.clear()
    for meter in _METERS.values():
        meter.close()
    _METERS.clear()


def _wrap(original: Any) -> Any:
    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _CONFIG.enabled or getattr(_LOCAL, "busy", False):
            return original(self, *args, **kwargs)
        _LOCAL.busy = True
        try:
            return _measured_call(original, self, args, kwargs)
        finally:
            _LOCAL.busy = False

    setattr(__call__, _PATCHED_FLAG, True)
    return __call__


def _warn(message: str) -> None:
    if not _CONFIG.silent:
        warnings.warn(f"mlflow-energy autolog: {message}", stacklevel=4)


def _device(pipe: Any) -> str:
    from mlflow_energy.autologging.identify import execution_device

    return execution_device(pipe)


def _meter_for(device: str) -> Any:
    if _CONFIG.meter is not None:
        return _CONFIG.meter
    meter = _METERS.get(device)
    if meter is not None:
        return meter
    import sys

    with _METER_LOCK:
        if device not in _METERS:
            from mlflow_energy.measure.meters import auto_meter

            stdout, stderr = sys.stdout, sys.stderr
            try:
                _METERS[device] = auto_meter(device)
            finally:
                if sys.stdout is not stdout:  # never leave the user's stdout swapped
                    sys.stdout = stdout
                if sys.stderr is not stderr:
                    sys.stderr = stderr
        return _METERS[device]


def _closed_form_components(pipe: Any) -> frozenset[str]:
    """The components of ``pipe`` its recognised family's closed form counts (none: no family)."""
    from mlflow_energy.autologging.identify import pipeline_family
    from mlflow_energy.families import get_family

    family = pipeline_family(pipe)
    return frozenset(get_family(family).components) if family else frozenset()


def _measured_call(original: Any, pipe: Any, args: tuple, kwargs: dict) -> Any:
    start_ms = int(time.time() * 1000)
    try:
        device = _device(pipe)
        meter = _meter_for(device)
        probe = CallProbe(pipe, meter, device=device, counted=_closed_form_components(pipe))
        probe.__enter__()
    except Exception as exc:
        _warn(f"cannot measure this call, running it unmeasured ({type(exc).__name__}: {exc})")
        return original(pipe, *args, **kwargs)
    try:
        output = original(pipe, *args, **kwargs)
    except BaseException as exc:
        try:
            probe.__exit__(None, None, None)
            _submit_failure(pipe, exc, start_ms)
        except Exception as log_exc:
            _warn(f"could not log the failed call ({type(log_exc).__name__}: {log_exc})")
        raise
    try:
        probe.__exit__(None, None, None)
        _submit_success(pipe, args, kwargs, output, probe, meter, start_ms)
    except Exception as exc:
        _warn(f"could not log this call ({type(exc).__name__}: {exc})")
    return output


def _run_name(family: str | None, pipe: Any, params: dict[str, Any]) -> str:
    name = family or type(pipe).__name__
    if schema.P_HEIGHT in params and schema.P_WIDTH in params:
        name += f"-{params[schema.P_HEIGHT]}x{params[schema.P_WIDTH]}"
    return f"{name}-{params.get(schema.P_STEPS, '?')}st"


def _target() -> dict[str, Any]:
    """Where this call logs, decided on the caller's thread (MLflow's active run is per thread).

    No server round trip: the run itself is created by the background logger.
    """
    import mlflow
    from mlflow.tracking import fluent

    active = mlflow.active_run()
    target: dict[str, Any] = {
        "uri": mlflow.get_tracking_uri(),
        "experiment_id": fluent._active_experiment_id or os.environ.get("MLFLOW_EXPERIMENT_ID"),
        "experiment_name": os.environ.get("MLFLOW_EXPERIMENT_NAME"),
        "run_id": None, "parent_run_id": None,
    }
    if active is None:
        return target
    with _RUNS_LOCK:
        if not _CONFIG.exclusive and active.info.run_id not in _RUNS_WITH_CALL:
            _RUNS_WITH_CALL.add(active.info.run_id)
            return {**target, "run_id": active.info.run_id}
    return {**target, "parent_run_id": active.info.run_id, "experiment_id": active.info.experiment_id}


def _entry(target: dict[str, Any], *, run_name: str, params: dict[str, Any], metrics: list[tuple[str, float, int]],
           tags: dict[str, str], status: str, start_ms: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {**target, "id": uuid.uuid4().hex, "run_name": run_name, "params": {k: str(v) for k, v in params.items()},
            "metrics": metrics, "tags": tags, "run_tags": {**_CONFIG.context_tags, **_CONFIG.extra_tags},
            "context_resolved": True, "status": status, "start_ms": start_ms, "end_ms": now, "time_ms": now}


def _submit_success(pipe: Any, args: tuple, kwargs: dict, output: Any, probe: CallProbe, meter: Any,
                    start_ms: int) -> None:
    from mlflow_energy.autologging import background
    from mlflow_energy.autologging.identify import call_params, pipeline_family
    from mlflow_energy.autologging.log import call_rows, call_tags

    family = pipeline_family(pipe)
    params = call_params(pipe, args, kwargs, output, len(probe.record.denoise_steps), device=probe.device)
    if probe.record.step_ends:
        params[schema.P_SCHEDULER_STEPS] = len(probe.record.per_step())
    if probe.record.stages:
        params[schema.P_STAGES] = ",".join(s for s in (schema.STAGE_PRIOR, schema.STAGE_DECODER)
                                           if s in probe.record.stages)
    all_params = {**params, **({schema.P_MODEL: family} if family else {})}
    target = _target()
    rows = call_rows(probe.record, params, family, _CONFIG.carbon)
    tags = call_tags(probe.record, meter, _CONFIG.carbon)
    entry = _entry(target, run_name=_run_name(family, pipe, params), params=all_params,
                   metrics=rows, tags=tags, status="FINISHED", start_ms=start_ms)
    if target["run_id"] is not None:
        with _RUNS_LOCK:
            if target["run_id"] in _RUNS_WITH_FAILURE:  # an earlier call in your run failed; this one did not
                _RUNS_WITH_FAILURE.discard(target["run_id"])
                entry["delete_tags"] = [schema.T_FAILURE]
    if _CONFIG.log_images:
        entry["_image"] = output  # the first image is made and logged by the background logger
    if probe.record.traced:  # traced FLOPs: counted by the background logger, off your thread
        from mlflow_energy.autologging.callflops import add_traced_flops

        entry["_finish"] = functools.partial(add_traced_flops, probe.record, family=bool(family),
                                             images=int(params.get(schema.P_BATCH_SIZE, 1)))
    background.submit(entry, warn=_warn)


def _submit_failure(pipe: Any, exc: BaseException, start_ms: int) -> None:
    from mlflow_energy.autologging import background
    from mlflow_energy.tracking import one_line

    target = _target()
    if target["run_id"] is not None:
        with _RUNS_LOCK:
            _RUNS_WITH_CALL.discard(target["run_id"])  # a failed call leaves your run free for the next one
            _RUNS_WITH_FAILURE.add(target["run_id"])
    entry = _entry(target, run_name=f"{type(pipe).__name__}-failed", params={}, metrics=[],
                   tags={schema.T_FAILURE: one_line(exc), schema.T_KIND: schema.KIND_AUTOLOG},
                   status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", start_ms=start_ms)
    background.submit(entry, warn=_warn)
