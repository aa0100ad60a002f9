"""One measured pipeline call as MLflow data: params, per-image metrics, tags, the step history.

Values are per image, as in every measurement run (:mod:`mlflow_energy.schema`):
``energy/<phase>_j`` and ``time/<phase>_s`` for ``text_encode``, ``denoise``, ``decode``;
``energy/total_j`` and ``time/total_s`` over the whole call (what ``pipe(...)`` cost, the
scheduler and image post-processing included); ``energy/other_j``: the part of the total outside
the three phases. The denoiser's calls are the history ``energy/denoise_step_j`` (one point per
call, ``step`` = its index). FLOPs (``flops/<phase>``) only where the family is known.

Example:
    >>> from mlflow_energy.autologging.log import record_metrics
    >>> from mlflow_energy.autologging.probe import CallRecord
    >>> rec = CallRecord(whole=(10.0, 1.0), phases={"denoise": [8.0, 0.8]}, denoise_steps=[(4.0, .4), (4.0, .4)])
    >>> record_metrics(rec, images=2)["energy/denoise_j"]
    4.0
"""

from __future__ import annotations

import math
import time
from typing import Any

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.autologging.probe import CallRecord


def record_metrics(record: CallRecord, *, images: int) -> dict[str, float]:
    """Per-image energy and time metrics of one call (no step history)."""
    n = max(1, images)
    whole_j, whole_s = record.whole
    metrics = {schema.M_ENERGY_TOTAL: whole_j / n, schema.M_TIME_TOTAL: whole_s / n}
    phase_j = 0.0
    for phase in schema.PHASES:
        energy, seconds = record.phases.get(phase, (0.0, 0.0))
        metrics[schema.energy_key(phase)] = energy / n
        metrics[schema.time_key(phase)] = seconds / n
        phase_j += energy
    metrics[schema.M_ENERGY_OTHER] = max(0.0, whole_j - phase_j) / n
    if whole_s > 0:
        metrics[schema.M_POWER_AVG] = whole_j / whole_s
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def flops_for(family: str | None, params: dict[str, Any]) -> dict[str, float]:
    """``flops/<phase>`` per image for a known family at the call's size and steps; ``{}`` otherwise."""
    if not family:
        return {}
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.flops import flops_metrics

    try:
        cfg = InferenceConfig(
            model=family,
            height=params.get(schema.P_HEIGHT),
            width=params.get(schema.P_WIDTH),
            steps=params.get(schema.P_STEPS),
            guidance_scale=params.get(schema.P_GUIDANCE_SCALE),
            batch_size=int(params.get(schema.P_BATCH_SIZE, 1)),
        )
        return flops_metrics(cfg)
    except Exception:  # a size or step count the family's closed form does not take
        return {}


def log_call(
    run_id: str,
    *,
    record: CallRecord,
    params: dict[str, Any],
    family: str | None,
    meter: Any,
    log_params: bool = True,
    carbon: Any = None,
) -> None:
    """Log one call to ``run_id``: params, metrics, the per-step history and tags, in one batch.

    ``carbon``: ``(GridIntensity, source)`` from :func:`mlflow_energy.carbon.run_intensity`.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    images = int(params.get(schema.P_BATCH_SIZE, 1))
    metrics = record_metrics(record, images=images)
    metrics.update(flops_for(family, params))
    if carbon is not None and schema.M_ENERGY_TOTAL in metrics:
        metrics[schema.M_CARBON_CO2E] = metrics[schema.M_ENERGY_TOTAL] / 3.6e6 * carbon[0].g_per_kwh
    now = int(time.time() * 1000)
    rows = [Metric(k, v, now, 0) for k, v in metrics.items()]
    n = max(1, images)
    for i, (energy, seconds) in enumerate(record.denoise_steps):
        rows.append(Metric(schema.M_ENERGY_DENOISE_STEP, energy / n, now, i))
        rows.append(Metric(schema.M_TIME_DENOISE_STEP, seconds / n, now, i))
    all_params = dict(params)
    if family:
        all_params[schema.P_MODEL] = family
    tags = {
        schema.T_KIND: schema.KIND_AUTOLOG,
        schema.T_ENERGY_SOURCE: meter.source,
        schema.T_HARDWARE: meter.hardware,
        schema.T_VERSION: __version__,
        **meter.tags(),
    }
    if carbon is not None:
        tags[schema.T_CARBON_INTENSITY] = f"{carbon[0].g_per_kwh:g}"
        tags[schema.T_CARBON_SOURCE] = carbon[1]
    client = MlflowClient()
    # log_batch takes at most 1000 metrics per call
    for start in range(0, len(rows), 1000):
        client.log_batch(
            run_id,
            metrics=rows[start:start + 1000],
            params=[Param(k, str(v)) for k, v in all_params.items()] if (log_params and start == 0) else [],
            tags=[RunTag(k, str(v)) for k, v in tags.items()] if start == 0 else [],
        )
