"""Shipped per-family data (denoiser calls, parameter counts) against the real schedulers and classes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._derived import _table, calls_of, scheduler_calls

STEPS = (1, 2, 3, 4, 10, 25, 28, 30, 50, 77)


@pytest.mark.parametrize("name", family_names())
def test_shipped_denoiser_calls_match_the_real_scheduler(name):
    fam = get_family(name)
    record = _table()[name]["denoiser_calls"]
    for steps in STEPS:
        assert calls_of(record, steps) == scheduler_calls(dict(fam.scheduler), steps), (name, steps)
        assert fam.denoiser_calls(steps) == calls_of(record, steps)


def test_pndm_repeats_its_first_step_and_another_scheduler_is_probed():
    assert get_family("sd1.5").denoiser_calls(50) == 51
    assert get_family("sd1.5").denoiser_calls(1) == 1
    assert get_family("sd2").denoiser_calls(10, "HeunDiscreteScheduler") == 19


@pytest.mark.parametrize("name", ["sd2", "tiny-sdxl", "flux.1-schnell", "tiny-qwen-image"])
def test_shipped_parameter_counts_match_the_model_classes(name):
    from mlflow_energy.families._derived import compute_derived

    assert compute_derived(name)["params"] == _table()[name]["params"]


def test_every_registered_family_has_shipped_data():
    assert set(family_names()) <= set(_table())


def test_flops_families_and_predictor_import_neither_torch_diffusers_nor_transformers():
    code = (
        "import sys\n"
        "import mlflow_energy.families, mlflow_energy.flops, mlflow_energy.flops.frame\n"
        "import mlflow_energy.fit.features, mlflow_energy.fit.model, mlflow_energy.predict.frame\n"
        "import pandas as pd\n"
        "from mlflow_energy.config import InferenceConfig\n"
        "from mlflow_energy.flops import config_flops, flops_frame\n"
        "from mlflow_energy.fit.features import feature_frame\n"
        "config_flops(InferenceConfig(model='sd1.5', height=512, width=512, steps=30))\n"
        "df = pd.DataFrame({'model': ['sd2', 'sana-1.6b'], 'height': [768, 1024], 'width': [768, 1024],\n"
        "                   'steps': [30, 20], 'guidance_scale': [7.5, 4.5], 'batch_size': [1, 2],\n"
        "                   'precision': ['fp16', 'bf16'], 'hardware': ['H100 SXM5 80GB'] * 2})\n"
        "feature_frame(flops_frame(df), {})\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
