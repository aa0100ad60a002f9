"""Running a planned campaign: one family at a time, a table row and a JSONL record per config, a meta file."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_energy.sweep.campaign.dependencies import _one_line
from mlflow_energy.sweep.campaign.plan import ConfigPlan, Plan


def device_name(device: str) -> str:
    """The device's name as its driver reports it (``NVIDIA H100 80GB HBM3``, the CPU model)."""
    if device.split(":", 1)[0] == "cuda":
        import torch

        return str(torch.cuda.get_device_name(torch.device(device)))
    from mlflow_energy.measure.meters import cpu_model_name

    return cpu_model_name()


def hardware_slug(name: str) -> str:
    """A file-name-safe short name: ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``.

    Example:
        >>> hardware_slug("NVIDIA H100 80GB HBM3")
        'h100-80gb-hbm3'
        >>> hardware_slug("Intel(R) Xeon(R) CPU @ 2.20GHz")
        'intel-r-xeon-r-cpu-2-20ghz'
    """
    text = re.sub(r"\bnvidia\b", " ", name.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug or "device"


def output_paths(out_dir: str | os.PathLike[str], hardware: str, when: _dt.date | None = None) -> tuple[Path, Path]:
    """``(<out_dir>/<gpu>-<yyyymmdd>.jsonl, <out_dir>/<gpu>-<yyyymmdd>.meta.json)``.

    Example:
        >>> import datetime
        >>> [p.name for p in output_paths("data", "NVIDIA H100 80GB HBM3", datetime.date(2025, 1, 31))]
        ['h100-80gb-hbm3-20250131.jsonl', 'h100-80gb-hbm3-20250131.meta.json']
    """
    stem = f"{hardware_slug(hardware)}-{(when or _dt.date.today()).strftime('%Y%m%d')}"
    base = Path(out_dir)
    return base / f"{stem}.jsonl", base / f"{stem}.meta.json"


def software_versions() -> dict[str, str]:
    """Versions of Python, the measuring stack and the CUDA runtime torch was built with."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("mlflow-energy", "torch", "diffusers", "transformers", "accelerate", "zeus", "nvidia-ml-py"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    torch = sys.modules.get("torch")
    if torch is not None:
        out["cuda"] = str(torch.version.cuda)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        out["cudnn"] = str(cudnn)
    return out


# --------------------------------------------------------------------------- running
@dataclass
class CampaignResult:
    """What a campaign run did: rows measured, configs skipped or failed, time taken."""

    jsonl: Path
    meta: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


TABLE_HEADER = (
    f"{'family':<22} {'px':>5} {'steps':>5} {'cfg':>3} {'pred_s':>7} {'real_s':>7} "
    f"{'text_J':>9} {'denoise_J':>10} {'decode_J':>9} {'total_J':>10} {'std_J':>8} {'avg_W':>7} {'gap%':>6}"
)


def table_row(plan_item: ConfigPlan, m: Any, real_s: float) -> str:
    """One printed table row from a runner :class:`Measurement`."""
    cfg = plan_item.cfg
    assert cfg is not None
    e = m.energy_j
    gap = getattr(m, "phase_sum_gap", None)
    gap_txt = f"{100 * gap:6.1f}" if isinstance(gap, (int, float)) else f"{'-':>6}"
    return (
        f"{cfg.model:<22} {cfg.height:>5} {cfg.steps:>5} {'yes' if cfg.cfg else 'no':>3} "
        f"{plan_item.predicted_s:7.1f} {real_s:7.1f} {e.get('text_encode', float('nan')):9.2f} "
        f"{e.get('denoise', float('nan')):10.2f} {e.get('decode', float('nan')):9.2f} "
        f"{e.get('total', float('nan')):10.2f} {float(m.energy_total_std_j or 0.0):8.2f} "
        f"{float(m.power_avg_w or 0.0):7.1f} {gap_txt}"
    )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _sync(device: str) -> None:
    if device.split(":", 1)[0] == "cuda":
        import torch

        torch.cuda.synchronize(torch.device(device))


def free_memory(device: str) -> None:
    """Collect garbage and return cached CUDA memory to the driver (after a family or a failure)."""
    import gc

    gc.collect()
    if device.split(":", 1)[0] == "cuda":
        import torch

        torch.cuda.synchronize(torch.device(device))
        torch.cuda.empty_cache()


def run_campaign(
    plan: Plan,
    *,
    meter: Any,
    jsonl: Path,
    meta: Path,
    command: str,
    echo: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
) -> CampaignResult:
    """Measure the plan family by family; print a row and append a JSONL record per config.

    Each family is built once (random weights, timed) and freed before the next. Before each
    config one warm-up run of ``spec.warmup_steps`` steps at the same size runs (measured
    into nothing); then the runner measures ``repeats`` runs. A config whose predicted time,
    scaled by how much slower than predicted the campaign has run so far, no longer fits the
    budget is skipped, so the campaign ends within the budget even when the prediction was
    optimistic. Configs already in ``jsonl`` (same config hash and hardware) are skipped:
    rerunning resumes. A config that fails is reported on one line and the campaign goes on.
    ``started`` is the :func:`time.monotonic` reading the budget counts from (default: now).
    """
    from mlflow_energy.measure.runner import PipelineCache, measure
    from mlflow_energy.tracking.jsonl import JsonlSink

    spec = plan.spec
    t0 = clock() if started is None else started
    sink = JsonlSink(jsonl)
    done = sink.keys()
    hardware = str(meter.hardware)
    result = CampaignResult(jsonl=Path(jsonl), meta=Path(meta))
    meter_tags = dict(meter.tags())
    schema = _schema()
    info: dict[str, Any] = {
        "hardware": hardware,
        "energy_source": meter.source,
        "driver_version": meter_tags.get(schema.T_DRIVER),
        "power_limit_w": _float_or_none(meter_tags.get(schema.T_POWER_LIMIT)),
        "software": software_versions(),
        "command": command,
        "started_at": _now(),
        "spec": spec.to_dict(),
        "peak_tflops": plan.peak_flops / 1e12,
        "warmup": f"one unmeasured run of {spec.warmup_steps} step(s) at the config's size before each config",
        "plan": [{"key": p.key, "predicted_s": round(p.predicted_s, 2)} for p in plan.items],
        "dropped_by_plan": [p.key for p in plan.dropped],
        "builds_s": {},
        "measured": [],
        "skipped": result.skipped,
        "failed": result.failed,
    }
    Path(meta).parent.mkdir(parents=True, exist_ok=True)
    _write_json(Path(meta), info)
    echo(TABLE_HEADER)
    predicted_done = real_done = 0.0

    def slowdown() -> float:
        return max(1.0, real_done / predicted_done) if predicted_done else 1.0

    by_family: dict[str, list[ConfigPlan]] = {}
    for p in plan.items:
        by_family.setdefault(p.family, []).append(p)
    cache = PipelineCache()
    for family, items in by_family.items():
        todo = []
        for p in items:
            if p.cfg is not None and (p.cfg.config_hash(), hardware) in done:
                result.skipped.append(f"{p.key} (already in {Path(jsonl).name})")
            elif p.cfg is not None:
                todo.append(p)
        if not todo:
            continue
        remaining = spec.budget_s - (clock() - t0)
        if spec.family_overhead_s + todo[0].predicted_s * slowdown() > remaining:
            result.skipped.extend(f"{p.key} (out of time)" for p in todo)
            echo(f"# {family}: skipped, {remaining:.0f} s left")
            continue
        try:
            b0 = clock()
            pipe = cache.get(todo[0].cfg)
            _sync(spec.device)
            build_s = clock() - b0
            info["builds_s"][family] = round(build_s, 2)
            echo(f"# {family}: built with random weights in {build_s:.1f} s")
            for p in todo:
                cfg = p.cfg
                assert cfg is not None
                remaining = spec.budget_s - (clock() - t0)
                if p.predicted_s * slowdown() > remaining:
                    result.skipped.append(f"{p.key} (out of time)")
                    echo(f"# {p.key}: skipped, predicted {p.predicted_s * slowdown():.0f} s > {remaining:.0f} s left")
                    continue
                c0 = clock()
                try:
                    if spec.warmup_steps:
                        warm = dataclasses.replace(cfg, steps=spec.warmup_steps, warmup=0, repeats=1)
                        measure(warm, meter=meter, pipeline=pipe)
                    m = measure(dataclasses.replace(cfg, warmup=0), meter=meter, pipeline=pipe)
                    # The config's warm-up ran just above (shorter): record it as the config's own.
                    m = dataclasses.replace(m, config=dataclasses.replace(m.config, warmup=cfg.warmup),
                                            images=None, timeline=None)
                    record = sink.write(m)
                except Exception as exc:  # one config failing (out of memory, ...) must not end the campaign
                    free_memory(spec.device)
                    result.failed.append(f"{p.key}: {type(exc).__name__}: {_one_line(exc)}")
                    echo(f"# {p.key}: FAILED {type(exc).__name__}: {_one_line(exc)}")
                    _write_json(Path(meta), info)
                    continue
                real_s = clock() - c0
                predicted_done += p.predicted_s
                real_done += real_s
                row = {"key": p.key, "config_hash": cfg.config_hash(), "predicted_s": round(p.predicted_s, 2),
                       "real_s": round(real_s, 2)}
                result.rows.append({**row, "record": record})
                info["measured"].append(row)
                _write_json(Path(meta), info)
                echo(table_row(p, m, real_s))
        except Exception as exc:  # a family that cannot be built: report it and go on
            result.failed.append(f"{family}: {type(exc).__name__}: {_one_line(exc)}")
            echo(f"# {family}: FAILED {type(exc).__name__}: {_one_line(exc)}")
        finally:
            pipe = None
            cache.clear()
            free_memory(spec.device)
    result.elapsed_s = clock() - t0
    info["elapsed_s"] = round(result.elapsed_s, 1)
    info["finished_at"] = _now()
    _write_json(Path(meta), info)
    echo(
        f"# done: {len(result.rows)} measured, {len(result.skipped)} skipped, {len(result.failed)} failed "
        f"in {result.elapsed_s:.0f} s; records in {jsonl}, metadata in {meta}"
    )
    return result


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _schema() -> Any:
    from mlflow_energy import schema

    return schema
