"""Importing and autologging print no library notices on your console."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import mlflow_energy
mlflow_energy.autolog()
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # image processors: transformers
print("ok")
"""


@pytest.mark.slow
def test_autolog_and_the_pipeline_imports_print_no_library_notice(tmp_path) -> None:
    """transformers says its image processors fall back to PIL without torchvision: not on your console."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600, env={**os.environ, "MLFLOW_ENERGY_STATE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "torchvision" not in out.stderr and "[transformers]" not in out.stderr, out.stderr
