"""Runs to a fitting frame: one row per measurement, per-image energy and time per phase, sources checked."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlflow_energy import schema
from mlflow_energy.errors import ConfigError

FIT_PHASES: tuple[str, ...] = (*schema.PHASES, schema.PHASE_TOTAL)
#: What ``fit`` does with runs the measurement protocol tagged noisy (see :func:`weigh_noisy`).
NOISY_MODES: tuple[str, ...] = ("downweight", "exclude", "keep")
#: The protocol's default target: the interval a noisy run is weighed against when it did not log its own.
DEFAULT_PROTOCOL_TARGET = 0.05
INPUT_COLUMNS = ("model", "height", "width", "steps", "guidance_scale", "precision", "batch_size")


def distinct_rows(*columns: object) -> tuple[np.ndarray, np.ndarray]:
    """``(code of each row, index of the first row of each code)`` of the distinct rows of ``columns``.

    One integer per row, combined from each column's own codes (kept below the row count, so no
    overflow), never a tuple per row: what lets a per-config computation run once per distinct config.
    Codes count up in the order each distinct row first appears.

    Example:
        >>> codes, first = distinct_rows(["a", "b", "a"], [1, 1, 1])
        >>> codes.tolist(), first.tolist()
        ([0, 1, 0], [0, 1])
    """
    n = len(columns[0])  # type: ignore[arg-type]
    combined = np.zeros(n, dtype=np.int64)
    for col in columns:
        # an array is factorized as it is (a Series of strings would be copied into Arrow first, in
        # pandas 3); missing values get their own code after the others (asking pandas to keep them
        # instead runs a separate missing-value pass over an object column, the slowest part here)
        c, u = pd.factorize(col if isinstance(col, (pd.Series, np.ndarray)) else np.asarray(col, dtype=object))
        c = np.where(c < 0, len(u), c)
        combined = pd.factorize(combined * (len(u) + 1) + c)[0]
    # the codes are in the order each distinct row first appears (factorize's order): no sort
    first = np.empty(int(combined.max()) + 1 if n else 0, dtype=np.int64)
    first[combined[::-1]] = np.arange(n - 1, -1, -1)
    return combined, first


# ============================================================================ reading runs
def _col(df: pd.DataFrame, name: str, prefix: str) -> pd.Series | None:
    keys = [name, f"{prefix}.{name}"]
    if name.startswith(schema.TAG_PREFIX):  # tracking.load_runs drops the tag prefix
        keys.append(name[len(schema.TAG_PREFIX):])
    for key in keys:
        if key in df.columns:
            return df[key]
    return None


def source_category(source: str) -> str:
    """What may be fitted together: every Zeus counter is one category; each estimate method is its
    own; each external dataset is its own, its releases together (``external:mlenergy-v2`` and
    ``-v3`` are one publisher's Zeus board energy: the fit groups them as data sources instead).

    Example:
        >>> source_category("external:mlenergy-v3"), source_category("zeus:rapl")
        ('external:mlenergy', 'zeus')
    """
    source = str(source or "unknown")
    if source.startswith("zeus:"):
        return "zeus"
    if source.startswith(schema.SOURCE_EXTERNAL_PREFIX):
        return re.sub(r"-v\d+(\.\d+)*$", "", source)
    return source


def normalise_runs(raw: pd.DataFrame, *, target: str = schema.SCOPE_TOTAL) -> pd.DataFrame:
    """One row per run with the columns the fit uses, from ``mlflow.search_runs`` output
    (``params.*``/``metrics.*``/``tags.*``) or from a frame already keyed by schema names.

    Output columns: ``run_id``, the predictor inputs (``model`` ... ``batch_size``), ``hardware``
    (canonical name), ``hardware_raw``, ``energy_source``, ``data_source``, ``runtime``,
    ``energy_scope`` (defaults: the energy source, ``diffusers``, ``total``), ``config_hash``,
    ``energy_<phase>`` (J per image, NaN where the run does not carry the phase), ``noisy``
    (the measurement protocol's tag), ``ci95_frac`` (the 95% half-width of the total over the
    total, NaN where not logged), ``protocol_target`` (the protocol's target for it),
    ``time_total`` (seconds per image) and ``idle_w`` (the measured idle power), NaN where not logged.

    ``target`` is the energy fitted: ``total`` (what each run's ``energy/<phase>_j`` holds:
    the device total for Zeus runs, as ML.ENERGY reports) or ``dynamic`` (idle power x time
    subtracted: ``energy/<phase>_dynamic_j``, or ``energy/<phase>_j`` of runs whose scope is
    already dynamic, such as the CPU estimate; other runs are dropped).
    """
    if target not in schema.ENERGY_SCOPES:
        raise ConfigError("target", target, "one of " + ", ".join(schema.ENERGY_SCOPES))
    from mlflow_energy.measure.hardware import canonical_hardware

    out = pd.DataFrame(index=raw.index)
    out["run_id"] = raw["run_id"] if "run_id" in raw.columns else [f"row{i}" for i in range(len(raw))]
    for name in (schema.P_MODEL, schema.P_PRECISION):
        col = _col(raw, name, "params")
        if col is None:
            raise ConfigError(name, None, f"runs that carry the param '{name}' (see the run schema)")
        out[name] = col.astype(str)
    for name in (schema.P_HEIGHT, schema.P_WIDTH, schema.P_STEPS, schema.P_BATCH_SIZE):
        col = _col(raw, name, "params")
        if col is None:
            raise ConfigError(name, None, f"runs that carry the param '{name}' (see the run schema)")
        out[name] = pd.to_numeric(col, errors="coerce")
    g = _col(raw, schema.P_GUIDANCE_SCALE, "params")
    out["guidance_scale"] = pd.to_numeric(g, errors="coerce") if g is not None else np.nan
    hw = _col(raw, schema.T_HARDWARE, "tags")
    out["hardware_raw"] = hw.astype(str) if hw is not None else "unknown"
    codes, names = pd.factorize(out["hardware_raw"], use_na_sentinel=False)
    out["hardware"] = np.asarray([canonical_hardware(h) for h in names], dtype=object)[codes] if len(names) else []
    src = _col(raw, schema.T_ENERGY_SOURCE, "tags")
    out["energy_source"] = src.astype(str) if src is not None else "unknown"
    for name, tag in (("data_source", schema.T_DATA_SOURCE), ("runtime", schema.T_RUNTIME),
                      ("energy_scope", schema.T_ENERGY_SCOPE)):
        col = _col(raw, tag, "tags")
        out[name] = col.astype(str).where(col.notna(), None) if col is not None else None
    out["data_source"] = out["data_source"].fillna(out["energy_source"])
    out["runtime"] = out["runtime"].fillna("diffusers")
    out["energy_scope"] = out["energy_scope"].fillna(schema.SCOPE_TOTAL)
    ch = _col(raw, schema.T_CONFIG_HASH, "tags")
    out["config_hash"] = ch.astype(str) if ch is not None else out["run_id"]
    noisy = _col(raw, schema.T_NOISY, "tags")
    out["noisy"] = (noisy.astype(str).str.lower() == "true") if noisy is not None else False
    for name, key, default in (("ci95_frac", schema.M_ENERGY_CI95_FRAC, np.nan),
                               ("protocol_target", schema.M_PROTOCOL_TARGET, DEFAULT_PROTOCOL_TARGET)):
        col = _col(raw, key, "metrics")
        values = pd.to_numeric(col, errors="coerce") if col is not None else pd.Series(np.nan, index=raw.index)
        out[name] = values.fillna(default)
    for phase in FIT_PHASES:
        col = _col(raw, schema.energy_key(phase), "metrics")
        values = pd.to_numeric(col, errors="coerce") if col is not None else pd.Series(np.nan, index=raw.index)
        if target == schema.SCOPE_DYNAMIC:
            dyn = _col(raw, schema.dynamic_energy_key(phase), "metrics")
            dyn = pd.to_numeric(dyn, errors="coerce") if dyn is not None else pd.Series(np.nan, index=raw.index)
            values = dyn.where(dyn.notna(), values.where(out["energy_scope"] == schema.SCOPE_DYNAMIC))
        out[f"energy_{phase}"] = values
    if target == schema.SCOPE_DYNAMIC:
        out["energy_scope"] = schema.SCOPE_DYNAMIC  # what the fitted joules now count
    phase_sum = out[[f"energy_{p}" for p in schema.PHASES]].sum(axis=1, min_count=len(schema.PHASES))
    out["energy_total"] = out["energy_total"].fillna(phase_sum)
    for name, key in (("time_total", schema.M_TIME_TOTAL), ("idle_w", schema.M_IDLE_POWER)):
        col = _col(raw, key, "metrics")  # for the time law and the idle power (fit/scope.py)
        out[name] = pd.to_numeric(col, errors="coerce") if col is not None else np.nan
    for phase in schema.FLOPS_PHASES:
        col = _col(raw, schema.flops_key(phase), "metrics")
        out[f"logged_flops_{phase}"] = pd.to_numeric(col, errors="coerce") if col is not None else np.nan
    bad = out[["height", "width", "steps", "batch_size"]].isna().any(axis=1) | ~(out["energy_total"] > 0)
    out = out.loc[~bad].copy()
    for name in ("height", "width", "steps", "batch_size"):
        out[name] = out[name].astype(int)
    return out.reset_index(drop=True)


def runs_frame(experiment: str, *, kinds: Sequence[str] = (schema.KIND_MEASUREMENT,),
               target: str = schema.SCOPE_TOTAL) -> pd.DataFrame:
    """Read FINISHED measurement runs of ``experiment`` back as the fit's frame.

    Uses ``mlflow_energy.tracking.load_runs`` when that module is installed, else
    ``mlflow.search_runs``; see :func:`normalise_runs` for the columns.

    Raises:
        ConfigError: when the experiment does not exist or holds no measurement runs.
    """
    import mlflow

    raw: pd.DataFrame | None = None
    try:
        from mlflow_energy.tracking import load_runs  # type: ignore[attr-defined]
    except ImportError:
        load_runs = None
    if load_runs is not None:
        raw = load_runs(experiment, kinds=tuple(kinds), status="FINISHED")
    else:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            raise ConfigError("experiment", experiment, "the name of an existing MLflow experiment")
        kinds_sql = ", ".join(f"'{k}'" for k in kinds)
        raw = mlflow.search_runs(
            experiment_ids=[exp.experiment_id],
            filter_string=f"tags.`{schema.T_KIND}` IN ({kinds_sql}) AND attributes.status = 'FINISHED'",
            max_results=100_000,
        )
        raw = raw.rename(columns={"run_id": "run_id"})
    if raw is None or len(raw) == 0:
        raise ConfigError("experiment", experiment, "an experiment with FINISHED measurement runs")
    superseded = raw.attrs.get("superseded", 0)  # a config measured twice under claims counts once
    if superseded:
        print(f"left out {superseded} superseded measurement run(s): their claim was taken over, "
              "another run of the same config counts")
    out = normalise_runs(raw, target=target)
    out.attrs["superseded"] = superseded
    return out


def weigh_noisy(frame: pd.DataFrame, mode: str = "downweight") -> tuple[pd.DataFrame, int]:
    """Give every run a ``weight`` for the fit; returns ``(frame, noisy runs down-weighted or left out)``.

    ``downweight`` (the default): a run the measurement protocol tagged noisy weighs
    ``(target / its 95% half-width)^2``, below 1: its inverse variance relative to a run that
    just met the target, so a run at twice the target counts a quarter (a noisy run without a
    logged interval counts a quarter too), and at least 0.01. Clean runs weigh 1. A marginally noisy run, often the
    largest config of a family (the one with the fewest repeats), keeps the law's FLOPs span.
    ``exclude`` leaves noisy runs out (:func:`drop_noisy`); ``keep`` weighs every run 1.

    Example:
        >>> df = pd.DataFrame({"model": ["a"] * 3, "hardware": ["h"] * 3, "noisy": [False, True, True],
        ...                    "ci95_frac": [0.02, 0.10, float("nan")], "protocol_target": [0.05] * 3})
        >>> weighed, n = weigh_noisy(df)
        >>> weighed["weight"].round(3).tolist(), n
        ([1.0, 0.25, 0.25], 2)
    """
    if mode not in NOISY_MODES:
        raise ConfigError("noisy", mode, "one of " + ", ".join(NOISY_MODES))
    if mode == "exclude":
        frame, dropped = drop_noisy(frame)
        return frame.assign(weight=1.0), dropped
    noisy = frame["noisy"].astype(bool) if "noisy" in frame.columns else pd.Series(False, index=frame.index)
    if mode == "keep" or not noisy.any():
        return frame.assign(weight=1.0), 0
    target = frame["protocol_target"] if "protocol_target" in frame.columns else DEFAULT_PROTOCOL_TARGET
    ci = frame["ci95_frac"] if "ci95_frac" in frame.columns else pd.Series(np.nan, index=frame.index)
    ratio = (target / ci).where(ci > 0, 0.5)  # no interval logged: as if twice the target
    # at least 0.01 (ten times the target): no run weighs nothing, so no family's weights sum to 0
    weight = np.where(noisy, np.clip(ratio.astype(float), 0.1, 1.0) ** 2, 1.0)
    return frame.assign(weight=weight), int(noisy.sum())


def drop_noisy(frame: pd.DataFrame, *, min_left: int = 3) -> tuple[pd.DataFrame, int]:
    """Leave out the runs tagged noisy by the measurement protocol; returns ``(frame, how many)``.

    A (family, hardware) group that would keep fewer than ``min_left`` runs keeps its noisy
    runs (a noisy point beats no law); they count as kept.

    Example:
        >>> df = pd.DataFrame({"model": ["a"] * 5, "hardware": ["h"] * 5, "noisy": [False] * 4 + [True]})
        >>> kept, dropped = drop_noisy(df)
        >>> len(kept), dropped
        (4, 1)
    """
    if "noisy" not in frame.columns or not frame["noisy"].any():
        return frame, 0
    clean = (~frame["noisy"]).groupby([frame["model"], frame["hardware"]]).transform("sum")
    drop = frame["noisy"] & (clean >= min_left)
    return frame.loc[~drop].reset_index(drop=True), int(drop.sum())


def check_sources(frame: pd.DataFrame, *, allow_mixed: bool = False) -> list[str]:
    """The energy sources in ``frame``; refuse to mix categories unless ``allow_mixed``.

    Raises:
        ConfigError: when runs of a Zeus measurement, an estimate or an external dataset are mixed.
    """
    sources = sorted(set(frame["energy_source"]))
    cats = sorted({source_category(s) for s in sources})
    if len(cats) > 1 and not allow_mixed:
        raise ConfigError(
            "energy_source", ", ".join(sources),
            "runs of one energy source (filter the runs, or pass --allow-mixed-sources to fit them together)",
        )
    return sources
