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
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

from mlflow_energy import schema
from mlflow_energy.autologging.probe import CallProbe

_logger = logging.getLogger(__name__)
_PATCHED_FLAG = "_mlflow_energy_autolog"
#: Longest side of the logged image.
IMAGE_MAX_SIDE = 256


@dataclass
class _Config:
    enabled: bool = False
    log_images: bool = True
    exclusive: bool = False
    silent: bool = False
    meter: Any | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    carbon: Any = None  # (GridIntensity, source label) from carbon.run_intensity


_CONFIG = _Config()
_LOCAL = threading.local()
_ORIGINALS: dict[type, Any] = {}
_METERS: dict[str, Any] = {}
_HOOKED: list[Any] = []  # the DiffusionPipeline class whose __init_subclass__ we set
_RUNS_WITH_CALL: set[str] = set()


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

    Example:
        >>> import mlflow_energy
        >>> mlflow_energy.autolog(log_images=False, silent=True)  # doctest: +SKIP
        >>> mlflow_energy.autolog(disable=True)
    """
    if disable:
        _unpatch()
        _CONFIG.enabled = False
        return
    from diffusers import DiffusionPipeline

    _CONFIG.log_images = log_images
    _CONFIG.exclusive = exclusive
    _CONFIG.silent = silent
    _CONFIG.meter = meter
    _CONFIG.extra_tags = dict(extra_tags or {})
    from mlflow_energy.carbon import run_intensity

    _CONFIG.carbon = run_intensity(region if region is not None else carbon_intensity)
    _CONFIG.enabled = True
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
    device = getattr(pipe, "_execution_device", None) or getattr(pipe, "device", "cpu")
    return str(device)


def _meter_for(device: str) -> Any:
    if _CONFIG.meter is not None:
        return _CONFIG.meter
    if device not in _METERS:
        from mlflow_energy.measure.meters import auto_meter

        _METERS[device] = auto_meter(device)
    return _METERS[device]


def _measured_call(original: Any, pipe: Any, args: tuple, kwargs: dict) -> Any:
    try:
        device = _device(pipe)
        meter = _meter_for(device)
        probe = CallProbe(pipe, meter, device=device)
        probe.__enter__()
    except Exception as exc:
        _warn(f"cannot measure this call, running it unmeasured ({type(exc).__name__}: {exc})")
        return original(pipe, *args, **kwargs)
    try:
        output = original(pipe, *args, **kwargs)
    except BaseException as exc:
        try:
            probe.__exit__(None, None, None)
            _log_failure(pipe, exc)
        except Exception as log_exc:
            _warn(f"could not log the failed call ({type(log_exc).__name__}: {log_exc})")
        raise
    try:
        probe.__exit__(None, None, None)
        _log_success(pipe, args, kwargs, output, probe, meter)
    except Exception as exc:
        _warn(f"could not log this call ({type(exc).__name__}: {exc})")
    return output


def _run_name(family: str | None, pipe: Any, params: dict[str, Any]) -> str:
    name = family or type(pipe).__name__
    if schema.P_HEIGHT in params and schema.P_WIDTH in params:
        name += f"-{params[schema.P_HEIGHT]}x{params[schema.P_WIDTH]}"
    return f"{name}-{params.get(schema.P_STEPS, '?')}st"


def _open_run(run_name: str) -> tuple[str, bool]:
    """``(run_id, ours)``: the run this call logs to, and whether we started it (and end it)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and not _CONFIG.exclusive and active.info.run_id not in _RUNS_WITH_CALL:
        return active.info.run_id, False
    run = mlflow.start_run(run_name=run_name, nested=active is not None, tags=dict(_CONFIG.extra_tags))
    return run.info.run_id, True


def _close_run(ours: bool, status: str) -> None:
    if ours:
        import mlflow

        mlflow.end_run(status)


def _log_success(pipe: Any, args: tuple, kwargs: dict, output: Any, probe: CallProbe, meter: Any) -> None:
    from mlflow.exceptions import MlflowException

    from mlflow_energy.autologging.identify import call_params, first_image, pipeline_family
    from mlflow_energy.autologging.log import log_call

    family = pipeline_family(pipe)
    params = call_params(pipe, args, kwargs, output, len(probe.record.denoise_steps))
    run_id, ours = _open_run(_run_name(family, pipe, params))
    status = "FAILED"
    try:
        try:
            log_call(run_id, record=probe.record, params=params, family=family, meter=meter, carbon=_CONFIG.carbon)
        except MlflowException as exc:  # your run already has one of these params with another value
            _warn(f"params not logged ({exc.message.splitlines()[0][:200]})")
            log_call(run_id, record=probe.record, params=params, family=family, meter=meter, log_params=False,
                     carbon=_CONFIG.carbon)
        _RUNS_WITH_CALL.add(run_id)
        if _CONFIG.log_images:
            image = first_image(output)
            if image is not None:
                from mlflow import MlflowClient

                image = image.copy()
                image.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
                MlflowClient().log_image(run_id, image, artifact_file=schema.A_IMAGE_PNG)
        status = "FINISHED"
    finally:
        _close_run(ours, status)


def _log_failure(pipe: Any, exc: BaseException) -> None:
    from mlflow import MlflowClient

    from mlflow_energy.tracking import one_line

    run_id, ours = _open_run(f"{type(pipe).__name__}-failed")
    try:
        MlflowClient().set_tag(run_id, schema.T_FAILURE, one_line(exc))
        MlflowClient().set_tag(run_id, schema.T_KIND, schema.KIND_AUTOLOG)
    finally:
        _close_run(ours, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
