"""What a pipeline call was: its family (when known), its config params, its image count.

A pipeline is recognised as a family of :mod:`mlflow_energy.families` when each of the
family's components is present under the same name, of the same class, with the released
(or tiny) values of the config keys that set its FLOPs (layers, widths, heads, patch size,
channels; not vocabularies, initialisation or defaults that move between library versions,
so recognition survives transformers and diffusers upgrades); the pipeline class itself does not matter, so a custom pipeline over
the same components is still recognised and gets FLOPs. Call params come from the call's own
arguments bound to the pipeline's ``__call__`` signature, its defaults, and what the call
produced (image size, denoiser calls).

Example:
    >>> from mlflow_energy.autologging.identify import image_count
    >>> image_count(type("Out", (), {"images": [1, 2]})())
    2
"""

from __future__ import annotations

import contextlib
import inspect
import json
import weakref
from typing import Any

from mlflow_energy import schema

_FAMILY_CACHE: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
#: Set this attribute on a pipeline to name its family yourself (``pipe._mlflow_energy_family = "sd2"``).
FAMILY_ATTR = "_mlflow_energy_family"
_PRECISIONS = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


# Config keys that do not change what a component computes per call: vocabulary and token ids,
# initialisation, dropout, numerical epsilons, rotary bases, serialisation details, sizes the
# call decides (sample_size), and flags whose defaults moved between library versions.
_IGNORED = ("vocab", "token_id", "tie_word_embeddings", "init", "dropout", "eps", "rope_theta", "rope_scaling",
            "dtype", "use_cache", "architectures", "model_type", "transformers_version", "sample_size",
            "scaling_factor", "shift_factor", "latents_mean", "latents_std", "max_position_embeddings",
            "output_", "return_dict", "is_encoder_decoder", "pad_", "bos_", "eos_", "decoder_start", "name_or_path",
            "force_upcast", "_class_name", "_diffusers_version", "id2label", "label2id", "problem_type")


def _ignored(key: str) -> bool:
    return key.startswith("_") or any(part in key for part in _IGNORED)


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _config_dict(module: Any) -> dict[str, Any] | None:
    config = getattr(module, "config", None)
    if config is None:
        return None
    if hasattr(config, "to_dict"):  # transformers configs
        return config.to_dict()
    return dict(config)  # diffusers FrozenDict


def _agree(expected: Any, actual: Any) -> int | None:
    """How many FLOP-relevant values ``actual`` shares with ``expected``; ``None`` when one differs.

    Nested configs (a Qwen2.5-VL ``text_config``) are compared on the keys the family data names,
    not whole; a key the installed library no longer reports is not held against the match.
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return None
        total = 0
        for key, value in expected.items():
            if _ignored(key) or key not in actual:
                continue
            n = _agree(value, actual[key])
            if n is None:
                return None
            total += n
        return total
    expected, actual = _normal(expected), _normal(actual)
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)) and not isinstance(expected, bool):
        return 1 if abs(float(expected) - float(actual)) <= 1e-9 * max(1.0, abs(float(expected))) else None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return None
        parts = [_agree(e, a) for e, a in zip(expected, actual, strict=True)]
        return None if any(p is None for p in parts) else 1
    return 1 if expected == actual else None


def _match_score(pipe: Any, components: Any) -> int | None:
    """Values the pipeline's components share with a family's (``None``: not that family)."""
    score = 0
    for name, spec in components.items():
        module = getattr(pipe, name, None)
        if module is None or type(module).__name__ != str(spec["class"]).rsplit(".", 1)[-1]:
            return None
        config = _config_dict(module)
        n = None if config is None else _agree(spec.get("config", {}), config)
        if n is None:
            return None
        score += n
    return score


def pipeline_family(pipe: Any) -> str | None:
    """The family whose components ``pipe`` has (name, class and config), else ``None``.

    Example:
        >>> from mlflow_energy.measure.runner import build_pipeline
        >>> from mlflow_energy.config import InferenceConfig
        >>> pipeline_family(build_pipeline(InferenceConfig(model="tiny-sd2")))  # doctest: +SKIP
        'tiny-sd2'
    """
    explicit = getattr(pipe, FAMILY_ATTR, None)
    if explicit:
        return str(explicit)
    try:
        return _FAMILY_CACHE[pipe]
    except (KeyError, TypeError):
        pass
    from mlflow_energy.families import family_names, get_family

    # Every family that agrees; the one whose data names the most values is the most specific
    # (tiny-sd3-medium names no dual-attention layers, so an SD3.5 pipeline agrees with it too).
    found, best = None, -1
    for name in family_names():
        fam = get_family(name)
        score = _match_score(pipe, fam.components) if fam.components else None
        if score is not None and score > best:
            found, best = name, score
    try:
        _FAMILY_CACHE[pipe] = found
    except TypeError:
        pass
    return found


def _items(output: Any) -> Any:
    """What a call produced, per sample: images, video frames (per video) or a prior's image embeddings."""
    for name in ("images", "frames", "image_embeds", "videos"):
        items = getattr(output, name, None)
        if items is not None:
            return items
    if isinstance(output, dict):
        for name in ("images", "frames", "image_embeds"):
            if output.get(name) is not None:
                return output[name]
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return None


def image_count(output: Any) -> int:
    """Samples a call returned: images, videos (``frames``: one per video), or a prior's image embeddings.

    Example:
        >>> image_count(type("Out", (), {"frames": [[1, 2, 3], [4, 5, 6]]})())  # two videos of 3 frames
        2
    """
    items = _items(output)
    try:
        return max(1, len(items))
    except TypeError:
        return 1


def first_image(output: Any) -> Any | None:
    """The first image (a video's first frame) of a call's output as a PIL image, or ``None``."""
    images = getattr(output, "images", None)
    if images is None:
        frames = getattr(output, "frames", None)
        if frames is not None and len(frames):
            images = frames[0]  # the first video's frames
    if images is None and isinstance(output, (tuple, list)) and output:
        images = output[0]
    if images is None or not hasattr(images, "__len__") or not len(images):
        return None
    first = images[0]
    try:
        from PIL import Image

        if isinstance(first, Image.Image):
            return first
        import numpy as np

        arr = first.detach().float().cpu().numpy() if hasattr(first, "detach") else np.asarray(first)
        if arr.ndim == 4 and arr.shape[0] >= 1:  # (frames, H, W, C) or (frames, C, H, W): the first frame
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
            return None
        if arr.dtype != np.uint8:  # NaN pixels (a diverged sampler) become black, without a numpy warning
            arr = (np.clip(np.nan_to_num(arr.astype("float32"), nan=0.0), 0.0, 1.0) * 255).round().astype("uint8")
        return Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
    except Exception:
        return None


def _size(image: Any) -> tuple[int, int] | None:
    if image is None:
        return None
    width, height = image.size
    return int(height), int(width)


_DEVICES: weakref.WeakKeyDictionary[Any, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def _placement(pipe: Any) -> tuple:
    """What moves the execution device: each module component, its first parameter's device, its
    offload hooks (a few microseconds a component)."""
    import torch

    key = []
    for name, module in (getattr(pipe, "components", None) or {}).items():
        if isinstance(module, torch.nn.Module):
            first = next(module.parameters(), None)
            key.append((name, id(module), None if first is None else str(first.device),
                        hasattr(module, "_hf_hook"), hasattr(module, "_diffusers_hook")))
    return tuple(key)


def execution_device(pipe: Any) -> str:
    """The device ``pipe`` computes on, as diffusers says (``pipe._execution_device``).

    diffusers finds it by walking every submodule for offload hooks (milliseconds a call on a
    tiny pipeline, more on a large one), so the answer is kept per pipeline until a component,
    its parameters' device or its offload hooks change (``pipe.to(...)``, ``enable_*_offload``).
    """
    key = _placement(pipe)
    try:
        cached = _DEVICES.get(pipe)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None and cached[0] == key:
        return cached[1]
    device = str(getattr(pipe, "_execution_device", None) or getattr(pipe, "device", "cpu"))
    with contextlib.suppress(TypeError):
        _DEVICES[pipe] = (key, device)
    return device


def call_params(pipe: Any, args: tuple, kwargs: dict, output: Any, denoiser_calls: int,
                device: str | None = None) -> dict[str, Any]:
    """Run params of one call: height, width, steps, guidance, batch, precision, device, scheduler."""
    try:
        bound = inspect.signature(type(pipe).__call__).bind(pipe, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.update(values.pop("kwargs", {}) or {})
    except (TypeError, ValueError):
        values = dict(kwargs)
    params: dict[str, Any] = {}
    size = _size(first_image(output))
    height, width = values.get("height"), values.get("width")
    if (height is None or width is None) and size is not None:
        height, width = size
    if height is not None:
        params[schema.P_HEIGHT] = int(height)
    if width is not None:
        params[schema.P_WIDTH] = int(width)
    steps = values.get("num_inference_steps")
    params[schema.P_STEPS] = int(steps) if isinstance(steps, int) else denoiser_calls
    guidance = values.get("guidance_scale")
    if isinstance(guidance, (int, float)):
        params[schema.P_GUIDANCE_SCALE] = float(guidance)
    params[schema.P_BATCH_SIZE] = image_count(output)
    frames = getattr(output, "frames", None)
    try:
        if frames is not None and len(frames):
            params[schema.P_NUM_FRAMES] = len(frames[0])  # a video's frames; values stay per video
    except TypeError:
        pass
    dtype = str(getattr(pipe, "dtype", ""))
    params[schema.P_PRECISION] = _PRECISIONS.get(dtype, dtype.replace("torch.", "") or "unknown")
    params[schema.P_DEVICE] = device if device is not None else execution_device(pipe)
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is not None:
        params[schema.P_SCHEDULER] = type(scheduler).__name__
    params[schema.P_PIPELINE_CLASS] = type(pipe).__name__
    params[schema.P_DENOISER_CALLS] = denoiser_calls
    return params
