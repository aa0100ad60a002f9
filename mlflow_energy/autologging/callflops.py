"""A call's traced FLOPs as rows of its entry, counted by the background logger, off your thread.

The probe keeps the input shapes of each metered call (:attr:`.probe.CallRecord.traced`); the
FLOPs are counted from them on the meta device (:mod:`.traced`), a first trace of a shape taking
0.2 to 2 s of Python. That work is done here, by the background logger's thread, before the
entry is logged, and only between measured calls (:func:`.probe.between_calls`): never on your
thread, never inside a measured window.

- a pipeline with no family: ``flops/<phase>`` traced, ``flops/total`` when every phase the call
  ran was traced, a combined pipeline's ``flops/stage/<stage>/<phase>``; tag ``flops_source = traced``;
- a recognised family with extra components (a ControlNet): their traced calls added to the
  family's closed form; tag ``flops_source = closed_form+traced``.

Example:
    >>> from mlflow_energy.autologging.callflops import with_extra_components
    >>> with_extra_components([("flops/denoise", 10.0, 0)], {}, images=1)
    ([('flops/denoise', 10.0, 0)], 'closed_form+traced')
"""

from __future__ import annotations

from typing import Any

from mlflow_energy import schema

__all__ = ["add_traced_flops", "with_extra_components"]

Rows = list[tuple[str, float, int]]


def add_traced_flops(record: Any, entry: dict[str, Any], *, family: bool, images: int) -> None:
    """Add the traced FLOPs of ``record``'s calls to ``entry`` (its ``metrics`` rows and ``tags``)."""
    from mlflow_energy.autologging.probe import between_calls
    from mlflow_energy.autologging.traced import phase_flops

    rows: Rows = [tuple(row) for row in entry["metrics"]]  # type: ignore[misc]
    tags = entry["tags"]
    with between_calls():
        if family:  # components the family's closed form does not count (a ControlNet)
            rows, source = with_extra_components(rows, record.traced, images=images)
            if source:
                tags[schema.T_FLOPS_SOURCE] = source
        else:  # no closed form: FLOPs from the calls made
            traced = phase_flops(record.traced, images=images)
            rows += [(schema.flops_key(phase), value, 0) for phase, value in traced.items()]
            if traced:
                tags[schema.T_FLOPS_SOURCE] = schema.FLOPS_TRACED
                if set(record.phases) <= set(traced):  # a total only when no phase is missing
                    rows.append((schema.M_FLOPS_TOTAL, sum(traced.values()), 0))
            rows += _stage_flops(record, images=images)
    entry["metrics"] = rows


def _stage_flops(record: Any, *, images: int) -> Rows:
    """``flops/stage/<stage>/<phase>`` of a combined pipeline, traced from each stage's own calls."""
    from mlflow_energy.autologging.traced import phase_flops

    rows = []
    for stage in record.stages:
        own = {key: value for key, value in record.traced.items() if record.stage_of.get(key[1]) == stage}
        for phase, value in phase_flops(own, images=images).items():
            rows.append((schema.stage_flops_key(stage, phase), value, 0))
    return rows


def with_extra_components(rows: Rows, extra: dict[Any, list[Any]], *, images: int) -> tuple[Rows, str | None]:
    """Add the traced FLOPs of the calls a family's closed form does not count (a ControlNet's) to it.

    ``extra``: the probe's traced calls, which for a recognised family are only those of the
    components outside it. A phase whose extra calls cannot be traced loses its FLOPs (and the
    total): an undercount is never logged. Returns the rows and the ``flops_source`` tag.
    """
    from mlflow_energy.autologging.traced import phase_flops

    added = phase_flops(extra, images=images)
    untraced = {key[0] for key in extra} - set(added)
    drop = {schema.flops_key(phase) for phase in untraced}
    if untraced:
        drop.add(schema.M_FLOPS_TOTAL)
    if schema.PHASE_DENOISE in untraced:
        drop.add(schema.M_FLOPS_DENOISE_PER_STEP)
    denoise = next((v for k, v, _ in rows if k == schema.M_FLOPS_DENOISE), 0.0)
    growth = (denoise + added.get(schema.PHASE_DENOISE, 0.0)) / denoise if denoise > 0 else 1.0
    out = []
    for key, value, step in rows:
        phase = key.removeprefix("flops/")
        if key in drop:
            continue
        if key == schema.M_FLOPS_DENOISE_PER_STEP:
            value *= growth  # the same steps, each with the extra component's calls
        elif key == schema.M_FLOPS_TOTAL:
            value += sum(added.values())
        elif key.startswith("flops/") and phase in added:
            value += added[phase]
        out.append((key, value, step))
    present = {key for key, _, _ in out}
    out += [(schema.flops_key(phase), value, 0) for phase, value in added.items()  # an image's encode
            if schema.flops_key(phase) not in present and schema.flops_key(phase) not in drop]
    return out, schema.FLOPS_CLOSED_FORM_PLUS_TRACED
