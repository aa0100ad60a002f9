"""FLOPs of the component calls a pipeline actually made, traced on the meta device.

For a pipeline with no recognised family, autolog counts FLOPs from the calls it metered: each
hooked call's inputs are kept as meta tensors (shapes and dtypes only, once per distinct shape
signature), and after the call (by the background logger, :mod:`.callflops`) each signature is
run once through a meta-device copy of the component under
:class:`torch.utils.flop_counter.FlopCounterMode`. Nothing is computed on the real device and no
weights are copied: the copy is built on ``meta`` from the component's config (diffusers
``from_config``, transformers ``Model(config)``) and takes the component's settings that are not
in its config (``vae.enable_tiling()``); ``torch.autocast("meta")`` is a no-op in a trace. Results are cached per component and
signature, so a later call with the same shapes costs a dictionary lookup.

Some models read the *values* of small integer inputs to shape their computation: Lumina2's
transformer trims each prompt to its mask's length, Wan's UMT5 encoder reads its mask with
``.item()``. So the values of small integer and boolean inputs (masks, token ids; at most
:data:`MAX_VALUE_NUMEL` elements) are kept on the CPU with the shapes; a call that cannot be traced
on pure meta inputs is traced again with them, under a mode that runs the ops on those values
for real (they are small) and moves them to ``meta`` where they meet the model's activations.
Such a model is counted with the values of the first call of each input shape.

A call that cannot run even so (an op without a meta kernel, a value read from a float
activation) leaves its phase without traced FLOPs rather than undercounted.

Example:
    >>> import torch
    >>> from mlflow_energy.autologging.traced import meta_inputs, traced_flops
    >>> lin = torch.nn.Linear(8, 4)
    >>> args, kwargs = meta_inputs((torch.ones(2, 8),), {})
    >>> traced_flops(lin, "forward", args, kwargs)
    128
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from typing import Any

import torch
import torch.utils._python_dispatch

__all__ = ["meta_inputs", "phase_flops", "signature", "traced_flops"]

# Per component (weakly: a freed module's id may be reused by a new one): its meta copy, and the
# FLOPs of each (method, signature) traced.
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, Any], int | None]] = weakref.WeakKeyDictionary()
_META: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
#: Largest module copied (weights included) to the meta device when it has no config to rebuild from.
_MAX_COPY_BYTES = 256 * 2**20
#: Integer and boolean inputs up to this many elements keep their values (masks, token ids).
MAX_VALUE_NUMEL = 1 << 16


def _map(value: Any, fn: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value) if not hasattr(value, "_fields") else value
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return value


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _keeps_values(t: torch.Tensor) -> bool:
    return (not t.is_floating_point() and not t.is_complex() and t.numel() <= MAX_VALUE_NUMEL
            and t.device.type != "meta")


def meta_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with every tensor replaced by an empty meta tensor of its shape and dtype.

    Small integer and boolean tensors (masks, ids) are kept as CPU copies with their values
    instead (see the module doc); :func:`traced_flops` moves them to ``meta`` for its first try.
    """
    def to_meta(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu", copy=True) if _keeps_values(t) else _meta_like(t)

    return _map(tuple(args), to_meta), _map(dict(kwargs), to_meta)


def _all_meta(value: Any) -> Any:
    return _map(value, lambda t: t if t.is_meta else _meta_like(t))


class _ValuesMeetMeta(torch.utils._python_dispatch.TorchDispatchMode):
    """Ops on small CPU inputs run for real; where they meet a meta tensor they become meta too."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        from torch.utils._pytree import tree_leaves, tree_map

        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and str(kwargs.get("device")) == "meta" \
                and isinstance(args[0], torch.Tensor) and not args[0].is_meta:
            kwargs = {k: v for k, v in kwargs.items() if k != "device"}  # ``mask.to(model.device)``: keep the values
        leaves = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if func is torch.ops.aten.index.Tensor and args[0].is_meta:
            # ``x[mask]``: a meta mask would lose how many are selected; its indices keep it
            indices: list[Any] = []
            for index in args[1]:
                if isinstance(index, torch.Tensor) and not index.is_meta and index.dtype == torch.bool:
                    indices.extend(index.nonzero(as_tuple=True))
                else:
                    indices.append(index)
            args = (args[0], indices, *args[2:])
        if any(t.is_meta for t in leaves) and any(not t.is_meta for t in leaves):
            args, kwargs = tree_map(
                lambda t: t.to("meta") if isinstance(t, torch.Tensor) and not t.is_meta else t, (args, kwargs))
        return func(*args, **kwargs)


def signature(args: tuple, kwargs: dict) -> Any:
    """A hashable key of the inputs' tensor shapes and dtypes and the other arguments' types."""
    out: list[Any] = []

    def walk(value: Any, key: Any = None) -> None:
        if isinstance(value, torch.Tensor):
            out.append((key, tuple(value.shape), str(value.dtype)))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, (key, i))
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                walk(value[k], (key, k))
        elif isinstance(value, (bool, int, float, str, type(None))):
            out.append((key, value))
        else:
            out.append((key, type(value).__name__))

    walk(args, "args")
    walk(kwargs, "kwargs")
    return tuple(out)


def _meta_copy(module: Any) -> Any:
    """``module`` rebuilt on the meta device from its config (no weights copied), in its dtype."""
    if module in _META:
        return _META[module]
    params = next(iter(module.parameters()), None)
    dtype = params.dtype if params is not None else torch.float32
    meta = None
    config = getattr(module, "config", None)
    try:
        with torch.device("meta"):
            if hasattr(type(module), "from_config") and not hasattr(config, "to_dict"):
                meta = type(module).from_config(config)  # diffusers
            elif config is not None:
                meta = type(module)(config)  # transformers
    except Exception:
        meta = None
    if meta is None:  # no config to build from: copy it, if a copy is cheap (weights are copied first)
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        if size > _MAX_COPY_BYTES:
            raise ValueError(f"{type(module).__name__} has no config and is too large to copy ({size} bytes)")
        meta = copy.deepcopy(module).to("meta")
    meta_param = next(iter(meta.parameters()), None)
    if meta_param is not None and meta_param.dtype != dtype:
        meta = meta.to(dtype)  # only when it differs: diffusers warns on every .to(dtype) of some models
    meta = meta.eval()
    _META[module] = meta
    return meta


def _copy_state(module: Any, meta: Any) -> None:
    """The module's settings that are not in its config (``vae.enable_tiling()``: Allegro decodes tiled only)."""
    for src, dst in zip(module.modules(), meta.modules(), strict=False):
        own = vars(dst)
        for key, value in vars(src).items():
            if (not key.startswith("_") and key != "training" and key in own
                    and isinstance(value, (bool, int, float, str, tuple, type(None)))):
                own[key] = value


@contextlib.contextmanager
def _autocast_on_meta() -> Any:
    """``torch.autocast("meta")`` (Mochi's rotary embedding autocasts on its input's device) as a no-op."""
    cls = torch.amp.autocast_mode.autocast
    original = cls.__init__

    def __init__(self: Any, device_type: str, *args: Any, **kwargs: Any) -> None:
        if device_type == "meta":
            original(self, "cpu", enabled=False)
        else:
            original(self, device_type, *args, **kwargs)

    cls.__init__ = __init__
    try:
        yield
    finally:
        cls.__init__ = original


def traced_flops(module: Any, method: str, args: tuple, kwargs: dict) -> int | None:
    """FLOPs of ``module.<method>(*args, **kwargs)`` (meta inputs), counted on a meta copy; cached.

    ``None`` when the call cannot run on the meta device.
    """
    from torch.utils.flop_counter import FlopCounterMode

    key = (method, signature(args, kwargs))
    with _LOCK:
        cache = _CACHE.setdefault(module, {})
        if key in cache:
            return cache[key]
        flops: int | None = None
        # Masks decide branches by their values (``mask.all()``), which meta tensors lack; the
        # counted ops (matmuls, convolutions, attention) cost the same with or without one.
        # A model that reads its small integer inputs' values (Lumina2, Wan's UMT5) is traced
        # last with those values (:class:`_ValuesMeetMeta`).
        margs, mkwargs = _all_meta(args), _all_meta(kwargs)
        unmasked = {k: v for k, v in mkwargs.items() if "mask" not in k}
        tries: list[tuple[tuple, dict, bool]] = [(margs, mkwargs, False)]
        if len(unmasked) < len(mkwargs):
            tries.append((margs, unmasked, False))
        tries.append((args, kwargs, True))
        for a, kw, values in tries:
            try:
                meta = _meta_copy(module)
                _copy_state(module, meta)
                with torch.no_grad(), FlopCounterMode(display=False) as counter, _autocast_on_meta(), \
                        (_ValuesMeetMeta() if values else contextlib.nullcontext()):
                    getattr(meta, method)(*a, **kw)
                flops = int(counter.get_total_flops())
                break
            except Exception:
                continue
        cache[key] = flops
        return flops


def phase_flops(traced: dict[Any, list[Any]], *, images: int = 1) -> dict[str, float]:
    """``{phase: FLOPs per image}`` of one call's traced calls (``CallRecord.traced``).

    A phase with a call that could not be traced is left out (never undercounted).
    """
    totals: dict[str, float] = {}
    failed: set[str] = set()
    for (phase, _component, method, _sig), (calls, module, args, kwargs) in traced.items():
        flops = traced_flops(module, method, args, kwargs)
        if flops is None:
            failed.add(phase)
            continue
        totals[phase] = totals.get(phase, 0.0) + calls * flops
    n = max(1, images)
    return {phase: value / n for phase, value in totals.items() if phase not in failed}
