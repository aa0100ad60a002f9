"""Module hooks on a pipeline's own components: energy and time per phase of one unmodified call.

:class:`CallProbe` opens one meter window over the whole ``pipe(...)`` call and, nested in it,
one window per component call, each component given a phase by its role (:mod:`.roles`: its
class first, else its name in ``pipe.components``):

``text_encode``
    every prompt encoder (a transformers model, ``text_encoder*``, ``image_encoder``; forward pre/post hooks);
``denoise``
    every call of a denoiser (a UNet, transformer, prior, ControlNet), one window each, so the
    per-step energy is a history;
``decode``
    every ``decode`` call of the image autoencoder (``vae``, ``vqvae``, ``movq``; the pipeline calls
    ``decode``, not ``forward``: the bound method is wrapped on the instance for the duration of the call);
``image_encode``
    every ``encode`` call of the same autoencoder (an input image: img2img, inpaint, FLUX fill).


Windows never nest: a component called from inside another one's window (rare) is counted
in the outer one. The device is synchronised at each boundary (CUDA, MPS). Hooks are
installed when the call starts and removed when it ends, so the pipeline is left as it was.

Example:
    >>> from mlflow_energy.autologging.probe import component_phase
    >>> component_phase("text_encoder_2"), component_phase("transformer"), component_phase("vae")
    ('text_encode', 'denoise', 'decode')
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from mlflow_energy import schema
from mlflow_energy.autologging.roles import component_phase, component_stage, is_autoencoder
from mlflow_energy.measure.meters import EnergyMeter

__all__ = ["CallProbe", "CallRecord", "between_calls", "component_phase", "component_stage", "synchronize"]


# Measured calls in flight, process-wide: a call that overlaps another is tagged, since a
# process-wide meter (the CPU estimate, RAPL) counts both calls' work in both windows.
_ACTIVE: set[Any] = set()
_ACTIVE_LOCK = threading.Lock()
_IDLE = threading.Condition(_ACTIVE_LOCK)  # notified when a measured call ends
# Methods wrapped on a shared instance (a VAE's decode, a scheduler's step): one dispatcher per
# instance routes each call to the probe of the thread that makes it.
_DISPATCH_LOCK = threading.Lock()
_DISPATCH_ATTR = "_mlflow_energy_probes"


def _dispatch(obj: Any, method: str, probe: Any, handler: Any) -> bool:
    """Route ``obj.<method>`` calls made on ``probe``'s thread through ``handler(call)``."""
    with _DISPATCH_LOCK:
        wrapper = vars(obj).get(method) if hasattr(obj, "__dict__") else None
        if wrapper is None:
            original = getattr(obj, method, None)
            if original is None:
                return False
            handlers: dict[int, Any] = {}

            # The original's signature stays visible: pipelines pass ``generator`` and ``eta`` to
            # ``scheduler.step`` only when its signature takes them (``prepare_extra_step_kwargs``).
            @functools.wraps(original)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                own = handlers.get(threading.get_ident())
                if own is None:
                    return original(*args, **kwargs)
                return own(functools.partial(original, *args, **kwargs))  # .args/.keywords: the inputs

            setattr(wrapper, _DISPATCH_ATTR, handlers)
            try:
                setattr(obj, method, wrapper)
            except (AttributeError, TypeError):
                return False
        handlers = getattr(wrapper, _DISPATCH_ATTR, None)
        if handlers is None:  # a method the user set on the instance: leave it alone
            return False
        handlers[probe._thread] = handler
        return True


def _undispatch(obj: Any, method: str, probe: Any) -> None:
    with _DISPATCH_LOCK:
        wrapper = vars(obj).get(method)
        handlers = getattr(wrapper, _DISPATCH_ATTR, None)
        if handlers is None:
            return
        handlers.pop(probe._thread, None)
        if not handlers:
            vars(obj).pop(method, None)


class _OwnWork:
    """Autolog's own work in ``_ACTIVE`` (a FLOPs trace): a call that starts meanwhile is tagged overlapped."""

    def __init__(self) -> None:
        self.record = CallRecord()


@contextlib.contextmanager
def between_calls(timeout: float = 30.0) -> Iterator[None]:
    """Run autolog's own work (a FLOPs trace) when no measured call is in flight.

    Waits for a moment with none (at most ``timeout`` s: a process that never pauses between
    calls still gets its work done); a call that starts while the work runs is tagged
    ``overlapped_calls``, as for two measured calls.
    """
    work = _OwnWork()
    with _IDLE:
        _IDLE.wait_for(lambda: all(isinstance(a, _OwnWork) for a in _ACTIVE), timeout)
        _ACTIVE.add(work)
    try:
        yield
    finally:
        with _IDLE:
            _ACTIVE.discard(work)


def synchronize(device: Any) -> None:
    """Wait for the device's queued work (CUDA, MPS); nothing on the CPU."""
    kind = str(device).split(":", 1)[0]
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


@dataclass
class CallRecord:
    """Energy (J) and time (s) of one pipeline call, whole and per phase (not per image).

    Attributes:
        whole: ``(energy_j, time_s)`` over the whole call.
        phases: ``{phase: [energy_j, time_s]}`` summed over the phase's component calls.
        denoise_steps: ``(energy_j, time_s)`` of each denoiser call, in order (a ControlNet's
            calls included).
        calls: component calls seen per component name.
        components: ``{component: [energy_j, time_s]}`` summed over its calls.
        step_ends: for each ``scheduler.step`` of the call, how many denoiser calls had ended by
            then: the calls of one scheduler step (both passes of true CFG, a ControlNet and its
            UNet) are ``denoise_steps[step_ends[i - 1]:step_ends[i]]``. Empty when the pipeline
            never called its scheduler's ``step``.
        overlapped: other measured calls (other threads) that ran while this one did.
        traced: ``{(phase, component, method, signature): [calls, module, meta_args, meta_kwargs]}``:
            each distinct input shape signature of the metered calls, for traced FLOPs (:mod:`.traced`).
        stages: for a combined pipeline (:func:`component_stage`), ``{stage: {phase: [energy_j, time_s]}}``.
        stage_steps: ``{stage: scheduler steps}`` of a combined pipeline.
        stage_of: ``{component: stage}`` of a combined pipeline's metered components.
    """

    whole: tuple[float, float] = (0.0, 0.0)
    phases: dict[str, list[float]] = field(default_factory=dict)
    denoise_steps: list[tuple[float, float]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    components: dict[str, list[float]] = field(default_factory=dict)
    step_ends: list[int] = field(default_factory=list)
    overlapped: int = 0
    traced: dict[Any, list[Any]] = field(default_factory=dict)
    stages: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    stage_steps: dict[str, int] = field(default_factory=dict)
    stage_of: dict[str, str] = field(default_factory=dict)

    def per_step(self) -> list[tuple[float, float]]:
        """``(energy_j, time_s)`` per scheduler step (per denoiser call without step marks).

        Example:
            >>> CallRecord(denoise_steps=[(1.0, .1), (2.0, .2), (4.0, .4)], step_ends=[2, 3]).per_step()
            [(3.0, 0.30000000000000004), (4.0, 0.4)]
        """
        if not self.step_ends:
            return list(self.denoise_steps)
        out, start = [], 0
        for end in self.step_ends:
            calls = self.denoise_steps[start:end]
            if calls:
                out.append((sum(e for e, _ in calls), sum(t for _, t in calls)))
            start = end
        return out


class CallProbe:
    """Hooks a pipeline's components for one call; use as a context manager around the call.

    Example:
        >>> from mlflow_energy.measure.meters import EstimateMeter
        >>> probe = CallProbe(pipe, EstimateMeter(), device="cpu")  # doctest: +SKIP
        >>> with probe:  # doctest: +SKIP
        ...     out = pipe("a red bicycle", num_inference_steps=4)
        >>> len(probe.record.denoise_steps)  # doctest: +SKIP
        4
    """

    def __init__(self, pipe: Any, meter: EnergyMeter, *, device: Any = "cpu",
                 counted: frozenset[str] = frozenset()) -> None:
        self.pipe = pipe
        self.meter = meter
        self.device = device
        self.counted = counted  # components a closed form counts already: their input shapes are not kept
        self.record = CallRecord()
        self._handles: list[Any] = []
        self._wrapped: list[Any] = []
        self._wrapped_steps: list[Any] = []
        self._open: tuple[str, str, str] | None = None  # (window, phase, component) of the open window
        self._count = 0
        self._prefix = f"autolog-{id(self):x}"  # unique per probe: threads may share one meter
        self._thread = threading.get_ident()  # the calls this probe measures are made on this thread
        self._whole = f"{self._prefix}-whole"

    # ------------------------------------------------------------------ windows
    def _begin(self, phase: str, component: str) -> bool:
        if self._open is not None:
            return False
        self._count += 1
        window = f"{self._prefix}-{self._count}"
        synchronize(self.device)
        self.meter.begin_window(window)
        self._open = (window, phase, component)
        return True

    def _end(self) -> None:
        if self._open is None:
            return
        window, phase, component = self._open
        self._open = None
        synchronize(self.device)
        energy, seconds = self.meter.end_window(window)
        totals = self.record.phases.setdefault(phase, [0.0, 0.0])
        totals[0] += energy
        totals[1] += seconds
        self.record.calls[component] = self.record.calls.get(component, 0) + 1
        own = self.record.components.setdefault(component, [0.0, 0.0])
        own[0] += energy
        own[1] += seconds
        if phase == schema.PHASE_DENOISE:
            self.record.denoise_steps.append((energy, seconds))
        stage = self.record.stage_of.get(component)
        if stage is not None:
            group = self.record.stages.setdefault(stage, {}).setdefault(phase, [0.0, 0.0])
            group[0] += energy
            group[1] += seconds

    def _trace(self, phase: str, component: str, module: Any, method: str, args: tuple, kwargs: dict) -> None:
        """Count this call under its input signature; keep meta copies of the inputs of a new one."""
        if self._open is not None or (component in self.counted and method != "encode"):
            return  # nested in another window: counted there; or counted in closed form (not an image's encode)
        try:
            from mlflow_energy.autologging.traced import meta_inputs, signature

            key = (phase, component, method, signature(args, kwargs))
            seen = self.record.traced.get(key)
            if seen is None:
                self.record.traced[key] = [1, module, *meta_inputs(args, kwargs)]
            else:
                seen[0] += 1
        except Exception:  # tracing is best effort: never the call's problem
            pass

    # ------------------------------------------------------------------ hooks
    def _install(self) -> None:
        components = getattr(self.pipe, "components", None) or {}
        for name, module in components.items():
            if not isinstance(module, torch.nn.Module):
                continue
            phase = component_phase(name, module)
            if phase is None:
                continue
            stage = component_stage(name, components)
            if stage is not None:
                self.record.stage_of[name] = stage
            if phase == schema.PHASE_DECODE:
                self._wrap_coder(module, name, "decode", schema.PHASE_DECODE)
                if is_autoencoder(module):
                    self._wrap_coder(module, name, "encode", schema.PHASE_IMAGE_ENCODE)
                continue
            owned: list[bool] = []

            def pre(_mod: Any, _args: Any, _kwargs: Any, *, _phase: str = phase, _name: str = name,
                    _owned: list = owned) -> None:
                if threading.get_ident() == self._thread:  # a pipeline sharing this module on another thread
                    self._trace(_phase, _name, _mod, "forward", _args, _kwargs)
                    _owned.append(self._begin(_phase, _name))

            def post(_mod: Any, _args: Any, _out: Any, *, _owned: list = owned) -> None:
                if threading.get_ident() == self._thread and _owned and _owned.pop():
                    self._end()

            self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(post, always_call=True))
        schedulers = [("scheduler", getattr(self.pipe, "scheduler", None))]  # and a prior's (``prior_scheduler``)
        schedulers += [(n, m) for n, m in components.items()
                       if n.endswith("scheduler") and all(m is not s for _, s in schedulers)]
        for name, scheduler in schedulers:
            self._wrap_scheduler(scheduler, component_stage(name, components))

    def _wrap_scheduler(self, scheduler: Any, stage: str | None = None) -> None:
        """Mark the end of each scheduler step, so the denoiser calls of one step can be summed."""
        handler = functools.partial(self._on_step, stage)
        if scheduler is not None and _dispatch(scheduler, "step", self, handler):
            self._wrapped_steps.append(scheduler)

    def _on_step(self, stage: str | None, call: Any) -> Any:
        self.record.step_ends.append(len(self.record.denoise_steps))
        if stage is not None:
            self.record.stage_steps[stage] = self.record.stage_steps.get(stage, 0) + 1
        return call()

    def _wrap_coder(self, vae: Any, name: str, method: str, phase: str) -> None:
        """Meter ``vae.<method>`` calls (``decode``, ``encode``) as ``phase``."""
        def on_call(call: Any) -> Any:
            self._trace(phase, name, vae, method, call.args, call.keywords)
            owned = self._begin(phase, name)
            try:
                return call()
            finally:
                if owned:
                    self._end()

        if _dispatch(vae, method, self, on_call):
            self._wrapped.append((vae, method))

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for vae, method in self._wrapped:
            _undispatch(vae, method, self)
        self._wrapped.clear()
        for scheduler in self._wrapped_steps:
            _undispatch(scheduler, "step", self)
        self._wrapped_steps.clear()

    # ------------------------------------------------------------------ context
    def __enter__(self) -> CallProbe:
        self._install()
        synchronize(self.device)
        self._t0 = time.perf_counter()
        try:
            self.meter.begin_window(self._whole)
        except BaseException:
            self._remove()
            raise
        with _ACTIVE_LOCK:
            for other in _ACTIVE:
                other.record.overlapped += 1
            self.record.overlapped += len(_ACTIVE)
            _ACTIVE.add(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._open is not None:  # a component raised before its post hook ran
                self._end()
            synchronize(self.device)
            self.record.whole = self.meter.end_window(self._whole)
        finally:
            self._remove()
            with _IDLE:
                _ACTIVE.discard(self)
                _IDLE.notify_all()
