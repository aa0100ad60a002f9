"""The vectorised FLOP counter: :func:`flops_frame` adds ``flops_<phase>`` columns to a DataFrame.

Rows are grouped by model; each group's closed forms are evaluated once per distinct latent
size with numpy, so 100k configurations cost milliseconds. Values equal :func:`config_flops`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mlflow_energy.config import TRUE_CFG_PIPELINES
from mlflow_energy.errors import ConfigError
from mlflow_energy.flops.count import _LINE_PROBES, FRAME_INPUTS, FRAME_OUTPUTS, _calls_line, _denoiser_calls, _plan

if TYPE_CHECKING:
    import pandas as pd


def _column(df: pd.DataFrame | Mapping[str, Any], name: str, n: int) -> np.ndarray:
    """A column as float64 (NaN where missing; all NaN when the column is absent)."""
    if name not in df:
        return np.full(n, np.nan)
    values = df[name]
    try:
        if hasattr(values, "to_numpy"):
            return np.asarray(values.to_numpy(dtype=float, na_value=np.nan), dtype=float)
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(name, list(values)[0], "a numeric column") from None


def _bad(rows: np.ndarray, values: np.ndarray, field: str, allowed: str) -> None:
    if rows.any():
        value = values[np.argmax(rows)]
        value = int(value) if float(value).is_integer() else float(value)
        raise ConfigError(field, value, allowed)


def flops_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Vectorised :func:`config_flops`: adds ``flops_<phase>`` columns (FLOP per image).

    Input columns: ``model``, ``height``, ``width``, ``steps``, ``guidance_scale``,
    ``batch_size``, ``cfg_passes`` (1 or 2). Missing columns or missing values take the family
    defaults (batch size 1; passes: what ``pipe(prompt)`` does, see
    :func:`~mlflow_energy.config.default_cfg_passes`).
    Rows are grouped by model; each group is evaluated with numpy over its distinct image sizes.

    Raises:
        ConfigError: an unknown model, or a size, step count, guidance scale or batch size
            that :meth:`InferenceConfig.validate` would refuse (the first bad value is named).

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"model": ["sd2", "flux.1-dev"], "height": [768, 1024], "width": [768, 1024],
        ...                    "steps": [50, 28], "guidance_scale": [7.5, 3.5], "batch_size": [1, 1]})
        >>> out = flops_frame(df)
        >>> [round(x / 1e12) for x in out["flops_total"]]
        [221, 2098]
    """
    return df.assign(**flops_columns(df))  # a new frame: the caller's is left as it is


def flops_columns(df: pd.DataFrame | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The ``flops_<phase>`` columns of :func:`flops_frame` as arrays, for a DataFrame or a dict of
    equal-length columns (the predictor builds its frame once, from a dict)."""
    n = len(df["model"]) if "model" in df else len(df)
    results = {col: np.zeros(n, dtype=float) for col in FRAME_OUTPUTS}
    if n:
        if "model" not in df:
            raise ConfigError("model", None, "a 'model' column of family names")
        columns = {c: _column(df, c, n) for c in FRAME_INPUTS[1:]}
        codes, names = _factorize(df["model"])
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        for code, name in enumerate(names):
            idx = order[bounds[code]:bounds[code + 1]]
            _frame_group(str(name), {c: v[idx] for c, v in columns.items()}, idx, results)
    return results


def _factorize(models: pd.Series | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    import pandas as pd

    codes, uniques = pd.factorize(models, use_na_sentinel=False)
    return np.asarray(codes), list(uniques)


#: Denoiser-call and decode FLOPs per (family, latent height, latent width): a request asks a few
#: sizes, served from here after the first; bounded, least recently used dropped first.
_SIZE_CACHE: OrderedDict[tuple[str, int, int], tuple[float, float]] = OrderedDict()
SIZE_CACHE_MAX = 4096
_SIZE_LOCK = threading.Lock()


def size_flops(name: str, lh: np.ndarray, lw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(FLOPs of one denoiser call on one sample, FLOPs of one decode)`` of ``name`` at each
    latent size (``lh``, ``lw``): the closed forms evaluated once per size not yet cached, as one
    vectorised call, the rest read from a bounded cache (:data:`SIZE_CACHE_MAX` sizes)."""
    keys = [(name, h, w) for h, w in zip(lh.tolist(), lw.tolist(), strict=True)]
    with _SIZE_LOCK:
        got = [_SIZE_CACHE.get(k) for k in keys]
        for k, g in zip(keys, got, strict=True):
            if g is not None:
                _SIZE_CACHE.move_to_end(k)
    miss = [i for i, g in enumerate(got) if g is None]
    if miss:
        plan = _plan(name)
        mh, mw = lh[miss], lw[miss]
        per_call = np.broadcast_to(plan.denoise_fn(plan.denoise_cfg, mh, mw, plan.denoise_text, 1), mh.shape)
        decode = np.broadcast_to(plan.decode_fn(plan.decode_cfg, mh, mw, 1), mh.shape)
        with _SIZE_LOCK:
            for j, i in enumerate(miss):
                got[i] = _SIZE_CACHE[keys[i]] = (float(per_call[j]), float(decode[j]))
            while len(_SIZE_CACHE) > SIZE_CACHE_MAX:
                _SIZE_CACHE.popitem(last=False)
    values = np.array(got, dtype=float).reshape(len(keys), 2)
    return values[:, 0], values[:, 1]


def _frame_group(name: str, cols: dict[str, np.ndarray], idx: np.ndarray, results: dict[str, np.ndarray]) -> None:
    plan = _plan(name)
    fam = plan.family

    def filled(column: str, default: float) -> np.ndarray:
        values = cols[column]
        return np.where(np.isnan(values), default, values)

    height = filled("height", fam.default_resolution)
    width = filled("width", fam.default_resolution)
    steps = filled("steps", fam.default_steps)
    scale = filled("guidance_scale", fam.default_guidance_scale)
    batch = filled("batch_size", 1)
    multiple = fam.pixel_multiple
    for field, values in (("height", height), ("width", width)):
        _bad((values < multiple) | (values % multiple != 0), values, field,
             f"a positive multiple of {multiple} for {name}")
    _bad((steps < 1) | (steps % 1 != 0), steps, "steps", "an integer >= 1")
    _bad(scale < 0, scale, "guidance_scale", "a number >= 0")
    _bad((batch < 1) | (batch % 1 != 0), batch, "batch_size", "an integer >= 1")

    # Evaluate the closed forms once per distinct latent size (sweeps repeat a few sizes).
    ld = fam.latent_downsample
    lh_all, lw_all = height.astype(np.int64) // ld, width.astype(np.int64) // ld
    key = lh_all * (int(lw_all.max()) + 1) + lw_all
    uniq, inverse = np.unique(key, return_inverse=True)
    lh, lw = uniq // (int(lw_all.max()) + 1), uniq % (int(lw_all.max()) + 1)
    per_call_u, decode_u = size_flops(name, lh, lw)
    per_call, decode = per_call_u[inverse], decode_u[inverse]
    given = cols["cfg_passes"]
    if fam.pipeline_class in TRUE_CFG_PIPELINES:  # pipe(prompt): one pass; 2 with a negative prompt
        two_ok = (scale > 1.0) & (fam.cfg in ("true", "distilled"))
        default = np.ones(len(scale))
    else:  # the guidance scale decides
        two_ok = (scale > 1.0) & (fam.cfg == "true")
        default = np.where(two_ok, 2.0, 1.0)
    passes = np.where(np.isnan(given), default, given)
    _bad(~np.isin(passes, (1.0, 2.0)) | ((passes == 2) & ~two_ok) | ((passes == 1) & (default == 2)),
         passes, "cfg_passes", f"what {name} runs at its guidance scale (see allowed_cfg_passes): 1 or 2")
    per_step = passes * per_call
    calls = np.empty_like(steps)
    line = _calls_line(name)
    exact = np.ones(len(steps), dtype=bool) if line is None else steps < _LINE_PROBES[0]
    if line is not None:
        calls[~exact] = line[0] * steps[~exact] + line[1]
    for n in np.unique(steps[exact]):
        calls[steps == n] = _denoiser_calls(name, int(n), None)
    denoise = calls * per_step
    text = passes * plan.text_per_prompt
    results["flops_text_encode"][idx] = text
    results["flops_denoise"][idx] = denoise
    results["flops_decode"][idx] = decode
    results["flops_total"][idx] = text + denoise + decode
    results["flops_denoise_per_step"][idx] = per_step
