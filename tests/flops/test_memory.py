"""Bytes per denoiser call in closed form: it matches the traced calls, and the shipped table is current."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from mlflow_energy.families import get_family
from mlflow_energy.flops import memory
from mlflow_energy.flops.memory import denoiser_call_bytes, known_families
from mlflow_energy.flops.traffic import TABLE, bytes_coefficients


def test_the_closed_form_matches_every_traced_call_of_the_public_sizes():
    """The traced table holds calls the closed form was not fitted to (call batches up to 128)."""
    traced = pd.read_csv(TABLE)
    assert len(traced) > 50
    for row in traced.itertuples():
        ld = get_family(row.model).latent_downsample
        got = denoiser_call_bytes(row.model, latent_pixels=np.array((row.height // ld) * (row.width // ld)),
                                  samples=np.array(row.call_batch))
        assert float(got) == pytest.approx(row.bytes, rel=0.05), row


@pytest.mark.parametrize("model", ["tiny-sd2", "tiny-flux.1-dev"])
def test_the_shipped_coefficients_are_what_the_trace_gives_today(model):
    with memory.TABLE.open(newline="") as fh:
        shipped = {r["model"]: r for r in csv.DictReader(fh)}[model]
    traced = bytes_coefficients(model)
    for key, value in zip(memory.COLUMNS[1:4], traced[:3], strict=True):
        assert float(shipped[key]) == pytest.approx(value, rel=1e-4, abs=1.0), key


def test_every_shipped_family_has_its_bytes_and_an_unknown_one_gets_nan():
    shipped = set(pd.read_csv(TABLE)["model"]) | {"qwen-image", "flux.1-schnell", "tiny-sd2", "tiny-sdxl",
                                                  "tiny-flux.1-dev", "tiny-sd3-medium", "small-sd2"}
    assert shipped <= known_families()
    assert np.isnan(denoiser_call_bytes("no-such-family", latent_pixels=np.array([4096]), samples=np.array([2]))).all()
