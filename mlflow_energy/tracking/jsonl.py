"""Measurements as flat records: the MLflow run fields, and a JSONL file for offline hosts.

A GPU host with no route to the tracking server measures with ``--output FILE.jsonl``
(this module does not need MLflow); ``mlflow-energy ingest FILE.jsonl`` logs the records
as runs later through :func:`mlflow_energy.tracking.runs.ingest`, skipping those already logged
(same config hash and hardware).

One line of the file is one measured config::

    {"format": "mlflow-energy/measurement", "version": 1,
     "params": {"model": "tiny-sd2", ...}, "metrics": {"energy/total_j": 0.12, ...},
     "tags": {"mlflow_energy.energy_source": "zeus:nvml", ...},
     "config": {...InferenceConfig fields...},
     "gpu_name": "NVIDIA H100 80GB HBM3", "driver_version": "550.54.15", "power_limit_w": 700.0}

Example:
    >>> import json, tempfile, os
    >>> from mlflow_energy.tracking.jsonl import read_jsonl
    >>> path = os.path.join(tempfile.mkdtemp(), "m.jsonl")
    >>> _ = open(path, "w").write("")
    >>> read_jsonl(path)
    []
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_energy.measure.runner import Measurement

RECORD_FORMAT = "mlflow-energy/measurement"
RECORD_VERSION = 1



def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_params(m: Measurement) -> dict[str, str]:
    """The run params of a measurement (schema ``RUN_PARAMS``), as strings."""
    cfg = m.config
    values = {
        schema.P_MODEL: cfg.model,
        schema.P_WEIGHTS: cfg.weights,
        schema.P_HEIGHT: cfg.height,
        schema.P_WIDTH: cfg.width,
        schema.P_STEPS: cfg.steps,
        schema.P_GUIDANCE_SCALE: cfg.guidance_scale,
        schema.P_CFG: cfg.cfg,
        schema.P_PRECISION: cfg.precision,
        schema.P_BATCH_SIZE: cfg.batch_size,
        schema.P_DEVICE: cfg.device,
        schema.P_SCHEDULER: cfg.scheduler,
        schema.P_SEED: cfg.seed,
        schema.P_REPEATS: cfg.repeats,
        schema.P_WARMUP: cfg.warmup,
        schema.P_CFG_PASSES: cfg.passes,
    }
    params = {k: _param_value(values[k]) for k in schema.RUN_PARAMS}
    if cfg.power_limit_w is not None:
        params[schema.P_POWER_LIMIT] = _param_value(cfg.power_limit_w)
    return params


def run_metrics(m: Measurement) -> dict[str, float]:
    """The run metrics of a measurement (schema ``RUN_METRICS`` plus the phase-sum check)."""
    metrics: dict[str, float] = {}
    for phase in (*schema.PHASES, schema.PHASE_TOTAL):
        metrics[schema.energy_key(phase)] = m.energy_j[phase]
        metrics[schema.time_key(phase)] = m.time_s[phase]
    metrics[schema.M_ENERGY_TOTAL_STD] = m.energy_total_std_j
    metrics[schema.M_POWER_AVG] = m.power_avg_w
    for phase in schema.FLOPS_PHASES:
        metrics[schema.flops_key(phase)] = m.flops[phase]
    metrics[schema.M_ENERGY_WHOLE] = m.whole_window_j
    metrics[schema.M_PHASE_SUM_GAP] = m.phase_sum_gap
    # The measurement protocol: interval, repeats, outliers; idle power and dynamic energy.
    if m.repeats:
        metrics[schema.M_REPEATS] = m.repeats
        metrics[schema.M_WARMUPS] = m.warmups
        metrics[schema.M_OUTLIERS] = m.outliers
        if m.protocol_target > 0:
            metrics[schema.M_PROTOCOL_TARGET] = m.protocol_target
        if math.isfinite(m.energy_total_ci95_j):
            metrics[schema.M_ENERGY_TOTAL_CI95] = m.energy_total_ci95_j
            if m.energy_j[schema.PHASE_TOTAL] > 0:
                metrics[schema.M_ENERGY_CI95_FRAC] = m.energy_total_ci95_j / m.energy_j[schema.PHASE_TOTAL]
        for phase, value in m.energy_median_j.items():
            metrics[schema.median_energy_key(phase)] = value
        for phase, value in m.energy_spread_j.items():
            metrics[schema.spread_energy_key(phase)] = value
    if m.dynamic_energy_j:
        metrics[schema.M_IDLE_POWER] = m.idle_power_w
        for phase, value in m.dynamic_energy_j.items():
            metrics[schema.dynamic_energy_key(phase)] = value
    return {k: float(v) for k, v in metrics.items()}


def run_tags(m: Measurement, *, kind: str = schema.KIND_MEASUREMENT) -> dict[str, str]:
    """The run tags of a measurement (schema ``RUN_TAGS`` plus the meter's extra tags)."""
    tags = {
        schema.T_ENERGY_SOURCE: m.energy_source,
        schema.T_HARDWARE: m.hardware,
        schema.T_CONFIG_HASH: m.config.config_hash(),
        schema.T_VERSION: __version__,
        schema.T_KIND: kind,
    }
    if m.repeats:
        tags[schema.T_NOISY] = "true" if m.noisy else "false"
        tags[schema.T_ENERGY_SCOPE] = m.energy_scope
    tags.update({k: str(v) for k, v in m.extra_tags.items()})
    return tags


def to_record(m: Measurement) -> dict[str, Any]:
    """One JSON-serialisable record of a measurement (a line of the JSONL export).

    Example:
        >>> from mlflow_energy.config import InferenceConfig
        >>> from mlflow_energy.measure.runner import measure
        >>> rec = to_record(measure(InferenceConfig(model="tiny-sd2", height=32, width=32, steps=1, warmup=0)))
        >>> rec["params"]["model"], "energy/total_j" in rec["metrics"]
        ('tiny-sd2', True)
    """
    tags = run_tags(m)
    power_limit = tags.get(schema.T_POWER_LIMIT)
    is_gpu = m.energy_source == schema.SOURCE_ZEUS_NVML
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "params": run_params(m),
        "metrics": run_metrics(m),
        "tags": tags,
        "config": m.config.to_dict(),
        "gpu_name": m.hardware if is_gpu else None,
        "driver_version": tags.get(schema.T_DRIVER),
        "power_limit_w": float(power_limit) if power_limit else None,
    }


def record_key(record: dict[str, Any]) -> tuple[str, str]:
    """``(config_hash, hardware)``: what makes two records the same measurement."""
    tags = record.get("tags", {})
    return tags.get(schema.T_CONFIG_HASH, ""), tags.get(schema.T_HARDWARE, "")


class JsonlSink:
    """Appends one record per measurement to a JSONL file (created with its directory).

    Example:
        >>> import tempfile, os
        >>> sink = JsonlSink(os.path.join(tempfile.mkdtemp(), "out", "m.jsonl"))
        >>> sink.keys()
        set()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from mlflow_energy.tracking.journal import check_writable

        self.path = check_writable(path, "output")  # before anything is measured

    def write(self, m: Measurement) -> dict[str, Any]:
        record = to_record(m)
        self.write_record(record)
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        from mlflow_energy.tracking.journal import _append_synced

        _append_synced(self.path, [json.dumps(record, sort_keys=True, allow_nan=False)])

    def keys(self) -> set[tuple[str, str]]:
        """``(config_hash, hardware)`` of the records already in the file (for resuming)."""
        if not os.path.exists(self.path):
            return set()
        return {record_key(r) for r in read_jsonl(self.path)}


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = False) -> list[dict[str, Any]]:
    """The records of a JSONL export; a malformed line raises :class:`ConfigError` naming it.

    ``tolerate_torn_tail``: a last line without its newline that does not parse (a writer killed
    mid-write) is ignored instead.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError("file", path, "an existing JSONL file written by --output")
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if tolerate_torn_tail and not line.endswith("\n"):
                    break
                raise ConfigError(f"{path} line {lineno}", line.strip()[:40], f"a JSON object ({exc.msg})") from None
            _check_record(record, f"{path} line {lineno}")
            records.append(record)
    return records


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ConfigError(where, str(record)[:40], f"a record with \"format\": \"{RECORD_FORMAT}\"")
    for key in ("params", "metrics", "tags"):
        if not isinstance(record.get(key), dict):
            raise ConfigError(f"{where} {key}", record.get(key), "an object")
    # cfg_passes came with records format 1's later files: earlier records (one pass less of
    # information, the family default) stay valid.
    missing = [k for k in schema.RUN_PARAMS if k not in record["params"] and k != schema.P_CFG_PASSES]
    missing += [k for k in schema.RUN_METRICS if k not in record["metrics"]]
    missing += [k for k in schema.RUN_TAGS if k not in record["tags"]]
    if missing:
        raise ConfigError(f"{where} {missing[0]}", None, "every key of the run schema")
    for k, v in record["metrics"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where} metrics.{k}", v, "a finite number")


def iter_records(measurements: Iterable[Measurement]) -> Iterable[dict[str, Any]]:
    """Records of several measurements."""
    for m in measurements:
        yield to_record(m)
