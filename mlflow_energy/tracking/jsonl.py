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

import functools
import json
import math
import os
import posixpath
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow_energy.measure.runner import Measurement

RECORD_FORMAT = "mlflow-energy/measurement"
RECORD_VERSION = 1
#: One record is a few kilobytes; a longer line is refused before it is parsed.
MAX_RECORD_BYTES = 1_000_000
#: Energy per image: 1e9 J is 278 kWh, 16 days of a 700 W GPU for one image.
MAX_ENERGY_J = 1e9
#: Time per image (116 days), average power of one meter (100 kW), FLOPs per image.
MAX_TIME_S = 1e7
MAX_POWER_W = 1e5
MAX_FLOPS = 1e30
_KEY_RE = re.compile(r"[\w\-. /]+")  # MLflow's param, metric and tag key alphabet
_RUN_ID_RE = re.compile(r"[\w\-]{1,64}")


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
        from mlflow_energy.tracking.records import check_writable

        self.path = check_writable(path, "output")  # before anything is measured

    def write(self, m: Measurement) -> dict[str, Any]:
        record = to_record(m)
        self.write_record(record)
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        from mlflow_energy.tracking.records import append_lines

        append_lines(self.path, [json.dumps(record, sort_keys=True, allow_nan=False)])

    def keys(self) -> set[tuple[str, str]]:
        """``(config_hash, hardware)`` of the records already in the file (for resuming)."""
        if not os.path.exists(self.path):
            return set()
        return {record_key(r) for r in read_jsonl(self.path)}


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = False) -> list[dict[str, Any]]:
    """The records of a JSONL export; the first bad line raises :class:`ConfigError` naming it.

    The whole file is refused (nothing is logged) when one line is not a valid record: UTF-8
    JSON of at most :data:`MAX_RECORD_BYTES`, the run schema's keys, sizes MLflow stores,
    finite numbers in range, no ``mlflow.*`` tags (see :func:`check_record`). The line number,
    the field and a short form of the value are in the message.

    ``tolerate_torn_tail``: a last line without its newline that does not parse (a writer killed
    mid-write) is ignored instead.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError("file", path, "an existing JSONL file written by --output")
    records = []
    with open(path, "rb") as fh:
        lineno = 0
        while raw := fh.readline(MAX_RECORD_BYTES + 1):
            lineno += 1
            torn = not raw.endswith(b"\n")
            try:
                record = parse_line(raw, f"{path} line {lineno}", first=lineno == 1)
            except ConfigError:
                if tolerate_torn_tail and torn and len(raw) <= MAX_RECORD_BYTES and not parses(raw):
                    break
                raise
            if record is not None:
                records.append(record)
    return records


def parses(raw: bytes) -> bool:
    """Whether a raw line is UTF-8 JSON at all (a line that is not was torn by a crash, or is garbage)."""
    try:
        json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):
        return False
    return True


def parse_line(raw: bytes, where: str, *, first: bool = False) -> dict[str, Any] | None:
    """The checked record of one raw line (None for a blank line); :class:`ConfigError` naming ``where``.

    ``first``: the file's first line (it may start with a UTF-8 byte order mark).
    """
    if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
        raise ConfigError(where, f"more than {MAX_RECORD_BYTES} bytes", f"a record of at most {MAX_RECORD_BYTES} bytes")
    try:
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, f"byte 0x{raw[exc.start:exc.start + 1].hex()} at column {exc.start + 1}",
                          "UTF-8 text (UTF-16 and other encodings are not read)") from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except RecursionError:
        raise ConfigError(where, _brief(line), "a JSON object nested less deeply") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(where, _brief(line.strip(), 40), f"a JSON object ({exc.msg})") from None
    check_record(record, where)
    return record


def _brief(value: Any, limit: int = 60) -> Any:
    """``value``, or the start of its repr and its length when that is long (error lines stay short)."""
    text = repr(value)
    return value if len(text) <= limit else _Brief(f"{text[:limit]}... ({len(text)} characters)")


class _Brief(str):
    def __repr__(self) -> str:
        return str(self)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not one (booleans, 10**400, NaN included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


@functools.lru_cache(maxsize=4096)  # a pure function of the key: a journal's records repeat the same keys
def _metric_range(key: str) -> tuple[float, float, str]:
    """The values a metric may take: ``(low, high, in words)``."""
    if key.startswith("energy/"):
        if "_dynamic_" in key or key == schema.M_PHASE_SUM_GAP:
            return -MAX_ENERGY_J, MAX_ENERGY_J, f"a finite number within +-{MAX_ENERGY_J:g}"
        return 0.0, MAX_ENERGY_J, f"a number of joules per image from 0 to {MAX_ENERGY_J:g}"
    for prefix, high in (("time/", MAX_TIME_S), ("power/", MAX_POWER_W), ("flops/", MAX_FLOPS), ("protocol/", 1e9)):
        if key.startswith(prefix):
            return 0.0, high, f"a number from 0 to {high:g}"
    return -math.inf, math.inf, "a finite number"


@functools.lru_cache(maxsize=4096)
def _key_ok(key: str) -> bool:
    from mlflow_energy.tracking.filters import MAX_KEY

    return 0 < len(key) <= MAX_KEY and bool(_KEY_RE.fullmatch(key)) and posixpath.normpath(key) == key


def _check_key(where: str, key: Any) -> None:
    if not isinstance(key, str) or not _key_ok(key):
        from mlflow_energy.tracking.filters import MAX_KEY

        raise ConfigError(where, _brief(key), f"a key of at most {MAX_KEY} characters: letters, digits, _ - . / "
                          "and spaces, no empty or '..' path parts")


def check_record(record: Any, where: str = "record") -> None:
    """Refuse a record MLflow would refuse or that would forge a run (one line naming the field).

    Checked: the format and version; ``params``/``metrics``/``tags`` objects holding the run
    schema's keys, each key at most :data:`~mlflow_energy.tracking.filters.MAX_KEY` characters
    of MLflow's key alphabet, params and tags strings of the sizes MLflow stores, at most 1000
    metrics and 100 params and tags (one ``log_batch``); metrics finite and in range (energies
    from 0 to :data:`MAX_ENERGY_J` J per image, dynamic energies within +-it, times, powers and
    FLOPs from 0); tags only ``mlflow_energy.*`` (``mlflow.*`` tags are MLflow's: parent run,
    user, source) and the kind ``measurement``; the journal's ``experiment`` a name the store
    keeps, ``parent_run_id`` a run id.
    """
    from mlflow_energy.tracking.filters import MAX_EXPERIMENT_NAME, MAX_PARAM_VALUE, MAX_TAG_VALUE, check_name

    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ConfigError(where, _brief(str(record), 40), f"a record with \"format\": \"{RECORD_FORMAT}\"")
    if record.get("version", RECORD_VERSION) != RECORD_VERSION:
        raise ConfigError(f"{where} version", _brief(record.get("version")), f"{RECORD_VERSION}")
    for key in ("params", "metrics", "tags"):
        if not isinstance(record.get(key), dict):
            raise ConfigError(f"{where} {key}", _brief(record.get(key)), "an object")
    # cfg_passes came with records format 1's later files: earlier records (one pass less of
    # information, the family default) stay valid.
    missing = [k for k in schema.RUN_PARAMS if k not in record["params"] and k != schema.P_CFG_PASSES]
    missing += [k for k in schema.RUN_METRICS if k not in record["metrics"]]
    missing += [k for k in schema.RUN_TAGS if k not in record["tags"]]
    if missing:
        raise ConfigError(f"{where} {missing[0]}", None, "every key of the run schema")
    if len(record["metrics"]) > 1000 or len(record["params"]) + len(record["tags"]) > 100:
        raise ConfigError(where, f"{len(record['metrics'])} metrics, {len(record['params']) + len(record['tags'])} "
                          "params and tags", "at most 1000 metrics and 100 params and tags (one MLflow log_batch)")
    for k, v in record["metrics"].items():
        _check_key(f"{where} metrics key", k)
        low, high, allowed = _metric_range(k)
        number = _number(v)
        if number is None or not low <= number <= high:
            raise ConfigError(f"{where} metrics.{k}", _brief(v), allowed)
    for group, limit in (("params", MAX_PARAM_VALUE), ("tags", MAX_TAG_VALUE)):
        for k, v in record[group].items():
            _check_key(f"{where} {group} key", k)
            if not isinstance(v, str) or len(v) > limit:
                raise ConfigError(f"{where} {group}.{k}", _brief(v), f"a string of at most {limit} characters")
    for k in record["tags"]:
        if not k.startswith(schema.TAG_PREFIX):
            raise ConfigError(f"{where} tags key", _brief(k), f"a tag named {schema.TAG_PREFIX}* (mlflow.* tags are "
                              "MLflow's own: parent run, user, source, run name)")
    if record["tags"][schema.T_KIND] != schema.KIND_MEASUREMENT:
        raise ConfigError(f"{where} tags.{schema.T_KIND}", _brief(record["tags"][schema.T_KIND]),
                          f"{schema.KIND_MEASUREMENT!r}")
    if record.get("experiment") is not None:
        check_name(f"{where} experiment", record["experiment"], MAX_EXPERIMENT_NAME)
    parent = record.get("parent_run_id")
    if parent is not None and not (isinstance(parent, str) and _RUN_ID_RE.fullmatch(parent)):
        raise ConfigError(f"{where} parent_run_id", _brief(parent), "a run id (letters, digits, - and _)")
    config = record.get("config")
    if config is not None and (not isinstance(config, dict) or any(
            not isinstance(k, str) or len(k) > 64 or not (v is None or isinstance(v, (bool, str)) or _number(v) is not None)
            or (isinstance(v, str) and len(v) > MAX_PARAM_VALUE) for k, v in config.items())):
        raise ConfigError(f"{where} config", _brief(config), "an object of config fields (strings, finite numbers, "
                          "booleans or null)")


_check_record = check_record  # the former private name


def iter_records(measurements: Iterable[Measurement]) -> Iterable[dict[str, Any]]:
    """Records of several measurements."""
    for m in measurements:
        yield to_record(m)
