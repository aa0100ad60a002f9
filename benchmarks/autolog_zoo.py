"""What ``mlflow_energy.autolog()`` logs for each pipeline of the zoo (``tests/autologging/zoo.py``).

Builds each tiny pipeline (random weights, small widths, in-memory tokenizers), calls it once with
autolog on into a temporary SQLite store, and prints a Markdown table, one row per pipeline class:
the family recognised, the phases measured (a phase is listed when autolog metered at least one
window of it: ``time/<phase>_s > 0``), FLOPs per phase (closed form, per image, where the family is
recognised, else traced; "-": none), the denoiser calls and the scheduler steps of the call; then,
for combined pipelines, the same per stage (prior, decoder). The table in
``docs/benchmarks.md`` ("Pipelines tested") is this script's output. Energies are not printed: on a
CPU they are the labelled estimate, and the tiny calls are shorter than its clock's resolution.

    python benchmarks/autolog_zoo.py                 # every pipeline
    python benchmarks/autolog_zoo.py FluxPipeline    # some of them
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "autologging"))

PHASES = ("text_encode", "denoise", "decode")
ALL_PHASES = (*PHASES, "image_encode")  # image_encode: the call encoded an input image (img2img, inpaint)


def _flops(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="pipeline classes of the zoo (default: all)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    import mlflow
    from zoo import CASES, UNSUPPORTED, call

    import mlflow_energy
    from mlflow_energy import schema

    names = args.names or list(CASES)
    tmp = tempfile.mkdtemp(prefix="autolog-zoo-")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_experiment("zoo")
    print("| pipeline | family | phases measured | FLOPs text_encode | FLOPs denoise | FLOPs decode "
          "| FLOPs image_encode | denoiser calls | scheduler steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    stages: list[tuple[str, dict[str, float]]] = []
    for name in names:
        case = CASES[name]
        pipe, kwargs = case.build()
        pipe.set_progress_bar_config(disable=True)
        mlflow_energy.autolog(silent=True, log_images=False)
        try:
            call(case, pipe, kwargs)
        finally:
            mlflow_energy.autolog(disable=True)
        mlflow_energy.flush()
        (run,) = mlflow.search_runs(output_format="list", order_by=["attributes.start_time DESC"], max_results=1)
        p, m = run.data.params, run.data.metrics
        phases = [ph for ph in ALL_PHASES if m.get(schema.time_key(ph), 0.0) > 0]
        flops = [_flops(m.get(schema.flops_key(ph))) for ph in ALL_PHASES]
        if schema.P_STAGES in p:
            stages.append((name, m))
        print(f"| `{name}` | {p.get(schema.P_MODEL, '-')} | {', '.join(phases)} | {' | '.join(flops)} "
              f"| {p[schema.P_DENOISER_CALLS]} | {p.get(schema.P_SCHEDULER_STEPS, '-')} |", flush=True)
    for name, why in UNSUPPORTED.items():
        print(f"| `{name}` | not built: {why} |  |  |  |  |  |  |  |")
    if stages:
        print("\nCombined pipelines, each stage's phases (`energy/stage/<stage>/<phase>_j`, FLOPs per image):\n")
        print("| pipeline | stage | phases measured | FLOPs text_encode | FLOPs denoise | FLOPs decode "
              "| scheduler steps |")
        print("|---|---|---|---|---|---|---|")
        for name, m in stages:
            for stage in ("prior", "decoder"):
                phases = [ph for ph in PHASES if m.get(schema.stage_time_key(stage, ph), 0.0) > 0]
                flops = [_flops(m.get(schema.stage_flops_key(stage, ph))) for ph in PHASES]
                steps = m.get(schema.stage_steps_key(stage))
                print(f"| `{name}` | {stage} | {', '.join(phases)} | {' | '.join(flops)} "
                      f"| {'-' if steps is None else int(steps)} |")


if __name__ == "__main__":
    main()
