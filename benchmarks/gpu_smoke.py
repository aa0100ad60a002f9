"""GPU smoke test: build every full-size measurable family with random weights, measure one config.

On a CUDA machine (Zeus over NVML)::

    python benchmarks/gpu_smoke.py                       # bf16, 512 px, 10 steps, every family
    python benchmarks/gpu_smoke.py --families sd2,flux.1-dev --steps 4

The same logic with the tiny families on the CPU (labelled estimate, or RAPL)::

    python benchmarks/gpu_smoke.py --tiny --device cpu

Prints one row per family: build seconds, joules per image per phase, the phase sum against
the window over the whole inference, and the source of the numbers. A family that fails
prints its reason on its row; the exit code is 1 when any family failed.
"""

from __future__ import annotations

import argparse
import sys
import time


def _families(tiny: bool, only: str | None) -> list[str]:
    from mlflow_energy.families import family_names, get_family

    names = [n for n in family_names() if get_family(n).measurable and get_family(n).is_tiny == tiny]
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise SystemExit(f"error: families={unknown[0]!r} is not allowed: expected one of {', '.join(names)}")
        names = wanted
    return names


def run(args: argparse.Namespace) -> list[dict]:
    """Build and measure each family; return one row per family."""
    from mlflow_energy.config import InferenceConfig
    from mlflow_energy.families import get_family
    from mlflow_energy.measure.meters import auto_meter
    from mlflow_energy.measure.runner import PipelineCache, measure

    meter = auto_meter(args.device)
    cache = PipelineCache()
    rows = []
    try:
        for name in _families(args.tiny, args.families):
            fam = get_family(name)
            size = args.resolution or (fam.default_resolution if args.tiny else 512)
            size -= size % fam.pixel_multiple
            row = {"family": name, "size": size}
            try:
                cfg = InferenceConfig(
                    model=name, height=size, width=size, steps=args.steps, precision=args.precision,
                    device=args.device, repeats=args.repeats, warmup=args.warmup,
                ).validate()
                start = time.perf_counter()
                pipe = cache.get(cfg)
                if args.device.startswith("cuda"):
                    import torch

                    torch.cuda.synchronize(args.device)
                row["build_s"] = time.perf_counter() - start
                m = measure(cfg, meter=meter, pipeline=pipe)
                row.update(
                    text_encode=m.energy_j["text_encode"], denoise=m.energy_j["denoise"],
                    decode=m.energy_j["decode"], total=m.energy_j["total"], whole=m.whole_window_j,
                    gap=m.phase_sum_gap, time_s=m.time_s["total"], source=m.energy_source, hardware=m.hardware,
                )
            except Exception as exc:  # one family failing must not hide the others
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200]
            finally:
                cache.clear()
            rows.append(row)
            _print_row(row)
    finally:
        meter.close()
    return rows


_HEADER = (
    f"{'family':<22} {'px':>5} {'build s':>8} {'text_enc J':>11} {'denoise J':>11} {'decode J':>10} "
    f"{'sum J':>10} {'whole J':>10} {'gap':>7} {'time s':>8}  source"
)


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['family']:<22} {row['size']:>5} FAILED {row['error']}", flush=True)
        return
    print(
        f"{row['family']:<22} {row['size']:>5} {row['build_s']:>8.2f} {row['text_encode']:>11.4g} "
        f"{row['denoise']:>11.4g} {row['decode']:>10.4g} {row['total']:>10.4g} {row['whole']:>10.4g} "
        f"{100 * row['gap']:>+6.2f}% {row['time_s']:>8.3g}  {row['source']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--precision", default=None, help="bf16 on CUDA, fp32 on CPU by default")
    parser.add_argument("--tiny", action="store_true", help="the tiny families (CPU-sized)")
    parser.add_argument("--families", default=None, help="comma-separated family names (default: all measurable)")
    parser.add_argument("--resolution", type=int, default=None, help="square size (512; tiny: family default)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    from mlflow_energy.errors import ConfigError
    from mlflow_energy.measure.device import check_device

    try:
        check_device(args.device)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_HEADER, flush=True)
    rows = run(args)
    hardware = next((r["hardware"] for r in rows if "hardware" in r), "?")
    print(f"{len(rows)} families on {hardware}, {args.precision}, {args.steps} steps; J per image", flush=True)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
