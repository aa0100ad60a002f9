"""One measured pipeline call as MLflow data: params, per-image metrics, tags, the step history.

Values are per image, as in every measurement run (:mod:`mlflow_energy.schema`):
``energy/<phase>_j`` and ``time/<phase>_s`` for ``text_encode``, ``denoise``, ``decode``, and
``image_encode`` when the call encoded an input image (img2img, inpaint);
``energy/total_j`` and ``time/total_s`` over the whole call (what ``pipe(...)`` cost, the
scheduler and image post-processing included); ``energy/other_j``: the part of the total outside
the phases. The denoiser's calls are the history ``energy/denoise_step_j`` (one point per
scheduler step, ``step`` = its index: both passes of true CFG, a ControlNet and its UNet summed);
with several denoiser calls per step, each call is also in ``energy/denoise_call_j``. Pipelines
with more than one component in a phase (a ControlNet, a prior) log each component's energy as
``energy/component/<name>_j``. A combined pipeline (Kandinsky 2.2, Stable Cascade) also logs
each stage's phases as their own group: ``energy/stage/<stage>/<phase>_j``,
``time/stage/<stage>/<phase>_s``, ``flops/stage/<stage>/<phase>`` and ``steps/stage/<stage>``
for ``prior`` and ``decoder``. FLOPs (``flops/<phase>``) in closed form where the family is known
(:mod:`.traced` counts them from the calls made for the other pipelines).

Example:
    >>> from mlflow_energy.autologging.log import record_metrics
    >>> from mlflow_energy.autologging.probe import CallRecord
    >>> rec = CallRecord(whole=(10.0, 1.0), phases={"denoise": [8.0, 0.8]}, denoise_steps=[(4.0, .4), (4.0, .4)])
    >>> record_metrics(rec, images=2)["energy/denoise_j"]
    4.0
"""

from __future__ import annotations

import math
from typing import Any

from mlflow_energy import schema
from mlflow_energy._version import __version__
from mlflow_energy.autologging.probe import CallRecord


def record_metrics(record: CallRecord, *, images: int) -> dict[str, float]:
    """Per-image energy and time metrics of one call (no step history)."""
    n = max(1, images)
    whole_j, whole_s = record.whole
    phase_j = 0.0
    metrics = {}
    ran_image_encode = schema.PHASE_IMAGE_ENCODE in record.phases  # logged only by calls that encode an image
    for phase in (*schema.PHASES, *([schema.PHASE_IMAGE_ENCODE] if ran_image_encode else [])):
        energy, seconds = record.phases.get(phase, (0.0, 0.0))
        metrics[schema.energy_key(phase)] = energy / n
        metrics[schema.time_key(phase)] = seconds / n
        phase_j += energy
    # Each window is metered on its own; an estimate is not additive (a short window reads the
    # nanosecond clock, a long one the kernel's tick-sampled split), so the whole call can read a
    # little less than its phases: the total is never less than the sum of its parts.
    whole_j = max(whole_j, phase_j)
    metrics.update({schema.M_ENERGY_TOTAL: whole_j / n, schema.M_TIME_TOTAL: whole_s / n})
    metrics[schema.M_ENERGY_OTHER] = max(0.0, whole_j - phase_j) / n
    if len(record.components) > len(schema.PHASES) or any(
        name.startswith(("controlnet", "prior", "decoder")) for name in record.components
    ):  # more than one component per phase (a ControlNet, a prior): each one's share
        for name, (energy, _seconds) in record.components.items():
            metrics[schema.component_energy_key(name)] = energy / n
    for stage, phases in record.stages.items():  # a combined pipeline: each stage's phases
        for phase, (energy, seconds) in phases.items():
            metrics[schema.stage_energy_key(stage, phase)] = energy / n
            metrics[schema.stage_time_key(stage, phase)] = seconds / n
    for stage, steps in record.stage_steps.items():
        metrics[schema.stage_steps_key(stage)] = steps
    if whole_s > 0:
        metrics[schema.M_POWER_AVG] = whole_j / whole_s
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def flops_for(family: str | None, params: dict[str, Any]) -> dict[str, float]:
    """``flops/<phase>`` per image for a known family at the call's size and steps; ``{}`` otherwise.

    The steps are the scheduler steps the call actually ran (``scheduler_steps``: img2img at
    strength 0.5 runs half of ``num_inference_steps``, Heun and PNDM run more) when known.
    """
    if not family:
        return {}
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.flops import flops_metrics

    try:
        cfg = InferenceConfig(
            model=family,
            height=params.get(schema.P_HEIGHT),
            width=params.get(schema.P_WIDTH),
            steps=params.get(schema.P_SCHEDULER_STEPS) or params.get(schema.P_STEPS),
            guidance_scale=params.get(schema.P_GUIDANCE_SCALE),
            batch_size=int(params.get(schema.P_BATCH_SIZE, 1)),
        )
        return flops_metrics(cfg)
    except Exception:  # a size or step count the family's closed form does not take
        return {}


def call_rows(record: CallRecord, params: dict[str, Any], family: str | None,
              carbon: Any = None) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of one call: per-image metrics and FLOPs (step 0) and the step histories.

    ``carbon``: ``(GridIntensity, source)`` from :func:`mlflow_energy.carbon.run_intensity`.
    """
    images = int(params.get(schema.P_BATCH_SIZE, 1))
    metrics = record_metrics(record, images=images)
    metrics.update(flops_for(family, params))
    if carbon is not None and schema.M_ENERGY_TOTAL in metrics:
        metrics[schema.M_CARBON_CO2E] = metrics[schema.M_ENERGY_TOTAL] / 3.6e6 * carbon[0].g_per_kwh
    rows = [(k, float(v), 0) for k, v in metrics.items()]
    n = max(1, images)
    steps = record.per_step()
    for i, (energy, seconds) in enumerate(steps):
        rows.append((schema.M_ENERGY_DENOISE_STEP, energy / n, i))
        rows.append((schema.M_TIME_DENOISE_STEP, seconds / n, i))
    if len(record.denoise_steps) != len(steps):  # several calls per step: each call too
        for i, (energy, seconds) in enumerate(record.denoise_steps):
            rows.append((schema.M_ENERGY_DENOISE_CALL, energy / n, i))
            rows.append((schema.M_TIME_DENOISE_CALL, seconds / n, i))
    return rows


#: The ``unsupported`` tag of a call in which no denoiser call was metered.
UNSUPPORTED_NO_DENOISER = (
    "no denoiser call metered: no component of this pipeline is a UNet, transformer, prior or ControlNet by "
    "class or name; its energy is all in energy/other_j (name the denoiser unet or transformer)"
)


def call_tags(record: CallRecord, meter: Any, carbon: Any = None) -> dict[str, str]:
    """The tags of one call's run: kind, energy source, hardware, version, the meter's own, overlaps."""
    tags = {
        schema.T_KIND: schema.KIND_AUTOLOG,
        schema.T_ENERGY_SOURCE: meter.source,
        schema.T_HARDWARE: meter.hardware,
        schema.T_VERSION: __version__,
        **meter.tags(),
    }
    if record.overlapped:
        tags[schema.T_OVERLAPPED] = str(record.overlapped)
    if carbon is not None:
        tags[schema.T_CARBON_INTENSITY] = f"{carbon[0].g_per_kwh:g}"
        tags[schema.T_CARBON_SOURCE] = carbon[1]
    if not record.denoise_steps:
        tags[schema.T_UNSUPPORTED] = UNSUPPORTED_NO_DENOISER
    return {k: str(v) for k, v in tags.items()}
