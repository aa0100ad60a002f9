"""``doctor``: which energy meter a measurement will use on this machine, why, and what to change."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mlflow_energy.cli import main
from mlflow_energy.cli._types import Text

RAPL_DIR = Path("/sys/class/powercap/intel-rapl")


def _gpu_lines() -> tuple[list[str], int]:
    """What Zeus sees over NVML: one line per GPU (name, power limit), and the count."""
    import zeus.monitor.energy as zeus_energy

    try:
        gpus = zeus_energy.get_gpus()
        count = len(gpus)
    except Exception as exc:  # no driver, no NVML library, no permission
        return [f"NVML: not readable ({' '.join(str(exc).split())[:160] or type(exc).__name__})"], 0
    lines = [f"NVML: {count} GPU(s)"]
    try:
        import pynvml

        lines[0] += f", driver {pynvml.nvmlSystemGetDriverVersion()}"
    except Exception:  # the driver version is a nicety
        pass
    for i in range(count):
        name = gpus.get_name(i)
        try:
            limit = f"power limit {gpus.get_power_management_limit(i) / 1000:g} W"
        except Exception:
            limit = "power limit unreadable"
        counter = "energy counter" if gpus.supports_get_total_energy_consumption(i) else "no energy counter (power x time)"
        lines.append(f"  cuda:{i} {name}: {limit}, {counter}")
    return lines, count


def _rapl_line() -> str:
    if not RAPL_DIR.exists():
        return f"RAPL: {RAPL_DIR} is missing (not an Intel/AMD package with RAPL, or a VM/container hiding it)"
    files = sorted(RAPL_DIR.glob("intel-rapl:*/energy_uj"))
    if not files:
        return f"RAPL: {RAPL_DIR} has no energy_uj counters"
    readable = [f for f in files if os.access(f, os.R_OK)]
    if not readable:
        return (f"RAPL: {len(files)} counter(s), none readable by this user "
                f"(root-only since Linux 5.10: sudo chmod o+r {RAPL_DIR}/intel-rapl:*/energy_uj)")
    return f"RAPL: {len(readable)} of {len(files)} counter(s) readable"


@main.command("doctor")
@click.option("--device", type=Text(unset_value="cpu"), default="cpu", show_default=True,
              help="The device you will measure on: cpu, cuda, cuda:N.")
def doctor_command(device: str) -> None:
    """Say which energy meter a measurement on DEVICE will use and why, and what gives a real one."""
    from mlflow_energy import schema
    from mlflow_energy.errors import MlflowEnergyError
    from mlflow_energy.measure.meters import auto_meter

    gpu_lines, count = _gpu_lines()
    for line in (*gpu_lines, _rapl_line()):
        click.echo(line)
    try:
        meter = auto_meter(device)
    except MlflowEnergyError as exc:
        click.echo(f"meter for {device}: none: {exc}")
        click.echo("to measure: run on a machine with an NVIDIA GPU and its driver (nvidia-smi lists it), "
                   "or measure with --device cpu")
        raise SystemExit(1) from None
    source = meter.source
    click.echo(f"meter for {device}: {source} on {meter.hardware}")
    if source == schema.SOURCE_ZEUS_NVML:
        click.echo("measured: the GPU's energy counter via Zeus (NVML)")
    elif source == schema.SOURCE_ZEUS_RAPL:
        click.echo("measured: the CPU packages' RAPL counters via Zeus")
    else:
        click.echo(f"an ESTIMATE ({source}): CPU time x TDP / cores, no energy counter is read")
        hints = []
        if count:
            hints.append("measure on the GPU: --device cuda")
        hints.append("make RAPL readable (see the RAPL line above) to measure the CPU packages")
        hints.append("set MLFLOW_ENERGY_CPU_TDP_W to your CPU's TDP for a better estimate")
        click.echo("to get a real measurement: " + "; or ".join(hints))
