"""The autolog zoo: diffusers pipeline classes built tiny (``zoo.py``), each called with autolog off and on.

For each: the output is unchanged (same seed), the run is FINISHED, every phase the pipeline
runs gets energy > 0, the denoiser calls and scheduler steps are those the call made, and
FLOPs are logged where the family is recognised.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import mlflow_energy
from mlflow_energy import schema

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import CASES, call  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("autolog_off")]


def _last_run():
    import mlflow

    mlflow_energy.flush()
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return run


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if c.slow else [])
                                  for n, c in CASES.items()])
def test_pipeline_autologs_unchanged(name: str, fake_gpu_factory) -> None:
    """Energy from a fake NVML counter that adds one joule per read: every metered window gets > 0 J,
    whatever its length (the CPU estimate reads 0 J for a window under the CPU clock's tick)."""
    from mlflow_energy.measure.meters import ZeusMeter

    case = CASES[name]
    pipe, kwargs = case.build()
    pipe.set_progress_bar_config(disable=True)
    off = call(case, pipe, kwargs)
    fake_gpu_factory(mode="step", step_j=1.0)
    meter = ZeusMeter("cuda")
    try:
        mlflow_energy.autolog(silent=True, log_images=False, meter=meter)
        on = call(case, pipe, kwargs)
        mlflow_energy.autolog(disable=True)
    finally:
        meter.close()
    np.testing.assert_array_equal(off, on)

    run = _last_run()
    p, m = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert schema.T_UNSUPPORTED not in run.data.tags
    assert p[schema.P_PIPELINE_CLASS] == type(pipe).__name__
    for phase in schema.PHASES:  # a phase whose component ran is never 0 J
        if phase in case.phases:
            assert m[schema.energy_key(phase)] > 0, phase
        else:
            assert m[schema.energy_key(phase)] == 0, phase
    if schema.PHASE_IMAGE_ENCODE in case.phases:  # an input image encoded: its own phase, with its FLOPs
        assert m[schema.M_ENERGY_IMAGE_ENCODE] > 0 and m[schema.M_TIME_IMAGE_ENCODE] > 0
        assert m[schema.M_FLOPS_IMAGE_ENCODE] > 0
    else:
        assert schema.M_ENERGY_IMAGE_ENCODE not in m
    assert int(p[schema.P_DENOISER_CALLS]) == case.denoiser_calls
    assert int(p[schema.P_SCHEDULER_STEPS]) == case.scheduler_steps
    if "Combined" in name:  # each stage's phases as their own group, adding up to the phases
        assert p[schema.P_STAGES] == "prior,decoder"
        assert m[schema.stage_steps_key("prior")] + m[schema.stage_steps_key("decoder")] == case.scheduler_steps
        assert m[schema.stage_energy_key("prior", schema.PHASE_DENOISE)] > 0
        assert m[schema.stage_energy_key("decoder", schema.PHASE_DENOISE)] > 0
        assert schema.stage_energy_key("prior", schema.PHASE_DECODE) not in m  # a prior returns embeddings
        for phase in case.phases:
            parts = [m.get(schema.stage_energy_key(s, phase), 0.0) for s in ("prior", "decoder")]
            assert sum(parts) == pytest.approx(m[schema.energy_key(phase)]), phase
            flops = [m.get(schema.stage_flops_key(s, phase), 0.0) for s in ("prior", "decoder")]
            if schema.flops_key(phase) in m:
                assert sum(flops) == pytest.approx(m[schema.flops_key(phase)]), phase
    else:
        assert schema.P_STAGES not in p
        assert not [k for k in m if k.startswith("energy/stage/")]
    if case.family:
        assert p[schema.P_MODEL] == case.family
        assert m[schema.M_FLOPS_DENOISE] > 0 and m[schema.M_FLOPS_TOTAL] > 0
    else:  # no family: FLOPs traced from the calls made, on the meta device
        assert schema.P_MODEL not in p
        assert run.data.tags[schema.T_FLOPS_SOURCE] == schema.FLOPS_TRACED
        assert all(m[schema.flops_key(ph)] > 0 for ph in case.phases)
        assert m[schema.M_FLOPS_TOTAL] == pytest.approx(sum(m[schema.flops_key(ph)] for ph in case.phases))


def test_traced_flops_equal_the_closed_forms() -> None:
    """For families with a closed form, the FLOPs traced from the calls made are the same, phase by phase."""
    from mlflow_energy.autologging.log import flops_for
    from mlflow_energy.autologging.probe import CallProbe
    from mlflow_energy.autologging.traced import phase_flops
    from mlflow_energy.measure.meters import EstimateMeter

    for name in ("StableDiffusionPipeline", "StableDiffusion3Pipeline"):
        case = CASES[name]
        pipe, kwargs = case.build()
        pipe.set_progress_bar_config(disable=True)
        probe = CallProbe(pipe, EstimateMeter())
        with probe:
            call(case, pipe, kwargs)
        traced = phase_flops(probe.record.traced)
        closed = flops_for(case.family, {schema.P_HEIGHT: 64, schema.P_WIDTH: 64, schema.P_STEPS: 2,
                                         schema.P_BATCH_SIZE: 1})
        for phase in schema.PHASES:
            assert traced[phase] == pytest.approx(closed[schema.flops_key(phase)], rel=1e-6), (name, phase)


def test_a_pipeline_with_no_recognised_denoiser_says_so() -> None:
    """A pipeline whose denoiser autolog cannot recognise runs unchanged; its run is tagged unsupported."""
    import torch
    from diffusers import DiffusionPipeline

    class MyPipeline(DiffusionPipeline):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.register_modules(net=net)

        def __call__(self, steps: int = 2):
            x = torch.ones(1, 4)
            for _ in range(steps):
                x = self.net(x)
            return (x,)

    torch.manual_seed(0)
    pipe = MyPipeline(torch.nn.Linear(4, 4))
    off = pipe()[0]
    mlflow_energy.autolog(silent=True, log_images=False)
    on = pipe()[0]
    mlflow_energy.autolog(disable=True)
    assert torch.equal(off, on)
    run = _last_run()
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.T_UNSUPPORTED].startswith("no denoiser call metered")
    assert run.data.params[schema.P_DENOISER_CALLS] == "0"


def test_traced_flops_of_a_plain_module_and_of_a_call_that_cannot_be_traced() -> None:
    import torch

    from mlflow_energy.autologging.traced import meta_inputs, traced_flops

    lin = torch.nn.Linear(8, 4)
    args, kwargs = meta_inputs((torch.ones(3, 8),), {})
    assert traced_flops(lin, "forward", args, kwargs) == 2 * 3 * 8 * 4

    class ReadsValues(torch.nn.Module):
        def forward(self, x):
            return x * float(x.sum())  # .item() on a meta tensor

    args, kwargs = meta_inputs((torch.ones(2),), {})
    assert traced_flops(ReadsValues(), "forward", args, kwargs) is None  # a float activation's value


def test_a_model_that_reads_its_masks_values_is_traced_with_them() -> None:
    """Masks (small integer inputs) keep their values: a model that trims by a mask's length, by
    ``.item()`` after moving the mask to its device, or by boolean indexing is counted at that length."""
    import torch

    from mlflow_energy.autologging.traced import meta_inputs, traced_flops

    class Trims(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x, mask):
            mask = mask.to(self.lin.weight.device)
            n = int(mask.sum().item())
            return self.lin(x[:, :n]) + self.lin(x[mask.bool()]).sum()

    mask = torch.zeros(1, 10, dtype=torch.long)
    mask[0, :3] = 1
    args, kwargs = meta_inputs((torch.ones(1, 10, 8),), {"mask": mask})
    assert kwargs["mask"].device.type == "cpu" and args[0].device.type == "meta"
    assert traced_flops(Trims(), "forward", args, kwargs) == 2 * (2 * 3 * 8 * 8)
    mask[0, :7] = 1  # another module instance, the same shapes, other values: other FLOPs
    args, kwargs = meta_inputs((torch.ones(1, 10, 8),), {"mask": mask})
    assert traced_flops(Trims(), "forward", args, kwargs) == 2 * (2 * 7 * 8 * 8)
