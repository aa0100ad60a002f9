#!/usr/bin/env python
"""Measure every full-size family with random weights on one GPU, within a time budget.

Plans the grid of ``projects/gpu-campaign.yaml`` (512 and 1024 px; 10 steps, the family's
default, and 50 steps at 1024 px for the DiT families; bf16, batch size 1, CFG as each
family runs by default), drops the configs that do not fit the budget (largest first), then
measures family by family with Zeus over NVML, per phase: one warm-up run of one step, then
2 measured repeats. Prints a table row per config as it goes and appends one JSON record per
config to ``data/measurements/<gpu>-<yyyymmdd>.jsonl`` (no MLflow needed here), with
``<gpu>-<yyyymmdd>.meta.json`` beside it. Later, on any machine::

    mlflow-energy ingest data/measurements/<gpu>-<yyyymmdd>.jsonl --experiment gpu-campaign

Usage::

    python benchmarks/gpu_campaign.py                                   # the campaign (CUDA)
    python benchmarks/gpu_campaign.py --plan-only --gpu "NVIDIA H100 80GB HBM3"   # plan, no GPU
    python benchmarks/gpu_campaign.py --tiny --device cpu --out-dir /tmp/campaign # same path, tiny

Exit codes: 0 done, 1 some config failed, 2 bad input or a missing package (one line on
stderr naming it and the command that installs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

_START = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's package, installed or not

from mlflow_energy.errors import MlflowEnergyError  # noqa: E402
from mlflow_energy.sweep import campaign  # noqa: E402  (light: no torch, no MLflow)

DEFAULT_SPEC = ROOT / "projects" / "gpu-campaign.yaml"
DEFAULT_OUT = ROOT / "data" / "measurements"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="campaign YAML (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="tiny-<family> variants and the spec's tiny: block")
    p.add_argument("--device", help="torch device (default: the spec's; cuda, or cpu with --tiny)")
    p.add_argument("--family", action="append", dest="families", metavar="NAME",
                   help="measure only this family (repeatable; 'sd2' means 'tiny-sd2' with --tiny)")
    p.add_argument("--budget-s", type=float, help="wall-clock budget of the whole script, seconds")
    p.add_argument("--peak-tflops", type=float, help="dense BF16 peak of the device, TFLOP/s (default: spec table)")
    p.add_argument("--efficiency", type=float, help="fraction of the peak configs are predicted to reach")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where the JSONL and meta files go")
    p.add_argument("--plan-only", action="store_true", help="print the plan and exit (no device needed)")
    p.add_argument("--gpu", default="NVIDIA H100 80GB HBM3", help="GPU name for --plan-only (default: %(default)s)")
    return p.parse_args(argv)


def resolve_spec(args: argparse.Namespace) -> campaign.CampaignSpec:
    spec = campaign.load_spec(args.spec, tiny=args.tiny)
    changes: dict[str, object] = {}
    if args.families:
        changes["families"] = tuple(campaign.tiny_name(f) if args.tiny else f for f in args.families)
    if args.device:
        changes["device"] = args.device
    for name in ("budget_s", "peak_tflops", "efficiency"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    return dataclasses.replace(spec, **changes) if changes else spec


def autolog_once(family: str, device: str, precision: str, out: Path) -> dict[str, object]:
    """One plain ``pipe(prompt)`` of ``family`` measured by ``mlflow_energy.autolog()``; its run as a dict.

    The run goes to a SQLite store beside the JSONL (``<out>.db``); the dict is also written to
    ``<out>.json``, so it travels with the campaign's files.
    """
    import json

    import mlflow

    import mlflow_energy
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.measure.runner import build_pipeline

    mlflow.set_tracking_uri(f"sqlite:///{out.parent / (out.name + '.db')}")
    experiment = mlflow.set_experiment("gpu-campaign-autolog")
    cfg = InferenceConfig(model=family, device=device, precision=precision).validate()
    pipe = build_pipeline(cfg)
    mlflow_energy.autolog(silent=True)
    try:
        start = time.perf_counter()
        pipe(cfg.prompt)  # what a user runs: the family's defaults
        seconds = time.perf_counter() - start
        flush = getattr(mlflow_energy, "flush", None)
        if flush is not None:
            flush()
    finally:
        mlflow_energy.autolog(disable=True)
    runs = mlflow.search_runs([experiment.experiment_id], output_format="list", max_results=1,
                              order_by=["attributes.start_time DESC"])
    if not runs:
        raise MlflowEnergyError(f"autolog logged no run for {family}: see {out.parent / (out.name + '.db')}")
    run = runs[0]
    result = {"family": family, "call_s": seconds, "params": dict(run.data.params), "metrics": dict(run.data.metrics),
              "tags": {k: v for k, v in run.data.tags.items() if k.startswith("mlflow_energy.")}}
    (out.parent / (out.name + ".json")).write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


def _fail(message: str) -> int:
    print(message if message.startswith("Error:") else f"Error: {message}", file=sys.stderr, flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device or ("cpu" if args.tiny else "cuda")
    # 1. Every import the campaign needs, before anything touches the device.
    # --plan-only needs no device; with --device cuda it also checks what measuring on it needs.
    check_device = (args.device or "cpu") if args.plan_only else device
    missing = campaign.check_dependencies(check_device)
    if missing:
        return _fail(campaign.missing_message(missing))
    try:
        spec = resolve_spec(args)
        from mlflow_energy.families import get_family

        classes = sorted({get_family(f).pipeline_class for f in spec.families})
        missing = campaign.check_dependencies(check_device if args.plan_only else spec.device, classes)
        if missing:
            return _fail(campaign.missing_message(missing))
        if args.plan_only:
            plan = campaign.plan_campaign(spec, campaign.peak_flops_of(args.gpu, spec))
            print(f"# {args.gpu}\n{plan.describe()}")
            return 0
        # 2. The device and its meter: Zeus over NVML on a GPU, the labelled estimate on a CPU.
        if spec.device.split(":", 1)[0] == "cuda":
            import torch

            if not torch.cuda.is_available():
                return _fail(f"device={spec.device!r} is not available: no CUDA GPU visible (check nvidia-smi), "
                             "or use --tiny --device cpu")
            from mlflow_energy.measure.meters import ZeusMeter

            meter = ZeusMeter(spec.device)
        else:
            from mlflow_energy.measure.meters import EstimateMeter

            meter = EstimateMeter()
        try:
            plan = campaign.plan_campaign(spec, campaign.peak_flops_of(meter.hardware, spec))
            print(f"# {meter.hardware} ({meter.source})\n{plan.describe()}", flush=True)
            jsonl, meta = campaign.output_paths(args.out_dir, meter.hardware)
            command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(
                ["python", "benchmarks/gpu_campaign.py", *argv])
            result = campaign.run_campaign(
                plan, meter=meter, jsonl=jsonl, meta=meta, command=command,
                echo=lambda line: print(line, flush=True), started=_START if argv is None else None,
            )
        finally:
            meter.close()
        if spec.autolog_family:
            import gc

            gc.collect()
            out = jsonl.with_name(jsonl.stem + ".autolog")
            logged = autolog_once(spec.autolog_family, spec.device, spec.precision, out)
            energy = {k: round(v, 3) for k, v in sorted(logged["metrics"].items()) if k.startswith("energy/")}
            print(f"# autolog {spec.autolog_family} pipe(prompt): {logged['call_s']:.2f} s, {energy}", flush=True)
    except MlflowEnergyError as exc:
        return _fail(str(exc))
    if plan.missing:
        print("# not covered (budget): " + ", ".join(f"{f} {r}px {s} steps" for f, r, s in plan.missing), flush=True)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
