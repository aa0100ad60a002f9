"""Runs back from MLflow: the measurement runs of an experiment as a typed DataFrame.

Example:
    >>> from mlflow_energy.tracking import load_runs
    >>> df = load_runs("mlflow-energy")  # doctest: +SKIP
    >>> df.groupby("model")["energy/total_j"].median()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlflow_energy import schema
from mlflow_energy.tracking.runs import client, experiment_id

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

_INT_PARAMS = (
    schema.P_HEIGHT, schema.P_WIDTH, schema.P_STEPS, schema.P_BATCH_SIZE, schema.P_SEED,
    schema.P_REPEATS, schema.P_WARMUP,
)
_FLOAT_PARAMS = (schema.P_GUIDANCE_SCALE,)
_BOOL_PARAMS = (schema.P_CFG,)


def _search(exp_ids: Sequence[str], filter_string: str) -> list[Any]:
    c = client()
    runs: list[Any] = []
    token = None
    while True:
        page = c.search_runs(list(exp_ids), filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_keys(exp_id: str) -> set[tuple[str, str]]:
    """``(config_hash, hardware)`` of the FINISHED measurement runs of an experiment."""
    runs = _search([exp_id], f"tags.`{schema.T_KIND}` = '{schema.KIND_MEASUREMENT}' and attributes.status = 'FINISHED'")
    return {(r.data.tags.get(schema.T_CONFIG_HASH, ""), r.data.tags.get(schema.T_HARDWARE, "")) for r in runs}


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    for col in _INT_PARAMS:
        if col in df:
            values = pd.to_numeric(df[col], errors="coerce")
            df[col] = values.astype("int64") if values.notna().all() else values.astype("Int64")
    for col in _FLOAT_PARAMS:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in _BOOL_PARAMS:
        if col in df:
            df[col] = df[col].map({"true": True, "false": False, "True": True, "False": False})
    return df


def load_runs(
    experiment: str,
    *,
    kinds: Sequence[str] = (schema.KIND_MEASUREMENT,),
    status: str | None = "FINISHED",
) -> pd.DataFrame:
    """The runs of ``experiment`` as a DataFrame: one row per run.

    Columns: ``run_id``, ``status``, ``parent_run_id``; the params under their schema names,
    typed (``height`` int, ``guidance_scale`` float, ``cfg`` bool, ...); the metrics under
    their schema names (``energy/total_j``, ...); the ``mlflow_energy.*`` tags without the
    prefix (``energy_source``, ``hardware``, ``config_hash``, ``kind``, ...).

    Args:
        experiment: experiment name (must exist).
        kinds: run kinds to keep (``measurement``, ``sweep``, ...).
        status: keep runs with this status (``None``: every status).

    Raises:
        ConfigError: for an unknown experiment, listing the known ones.

    Example:
        >>> df = load_runs("mlflow-energy")  # doctest: +SKIP
        >>> df.groupby("model")["energy/total_j"].mean()  # doctest: +SKIP
    """
    import pandas as pd

    exp_id = experiment_id(experiment, create=False)
    rows = []
    for kind in kinds:
        filt = f"tags.`{schema.T_KIND}` = '{kind}'"
        if status:
            filt += f" and attributes.status = '{status}'"
        for run in _search([exp_id], filt):
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "status": run.info.status,
                "start_time": run.info.start_time,
                "parent_run_id": run.data.tags.get(schema.T_PARENT_RUN_ID),
            }
            row.update(run.data.params)
            row.update(run.data.metrics)
            for key, value in run.data.tags.items():
                if key.startswith(schema.TAG_PREFIX):
                    row[key[len(schema.TAG_PREFIX):]] = value
            rows.append(row)
    rows, superseded = _current_claims(rows)
    base = ["run_id", "status", "start_time", "parent_run_id", *schema.RUN_PARAMS, *schema.RUN_METRICS,
            *(t[len(schema.TAG_PREFIX):] for t in schema.RUN_TAGS)]
    df = pd.DataFrame(rows)
    for col in base:
        if col not in df:
            df[col] = pd.Series(dtype="object")
    rest = [c for c in df.columns if c not in base]
    df = df[base + rest]
    if len(df):
        df = _typed(df)
    df = df.reset_index(drop=True)
    df.attrs["superseded"] = superseded
    return df


def _current_claims(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """One run per claimed config: runs tagged superseded, and runs of an older claim token of the same
    config and hardware (a worker stopped before tagging it), are left out; returns ``(rows, left out)``."""
    sup, tok = (key[len(schema.TAG_PREFIX):] for key in (schema.T_SUPERSEDED, schema.T_CLAIM_TOKEN))

    def token(r: dict[str, Any]) -> int:
        return int(r[tok]) if str(r.get(tok, "")).isdigit() else -1

    best: dict[tuple[Any, Any], int] = {}
    for r in rows:
        if r.get(sup) != "true":
            key = (r.get("config_hash"), r.get("hardware"))
            best[key] = max(best.get(key, -1), token(r))
    kept = [r for r in rows if r.get(sup) != "true"
            and (token(r) < 0 or token(r) >= best[(r.get("config_hash"), r.get("hardware"))])]
    return kept, len(rows) - len(kept)


