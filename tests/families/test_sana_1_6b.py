"""SANA 1.6B: a FLOPs-only family (no phase adapter); tiny builds (parameter counts: test_common.py)."""

import pytest
import torch

from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._build import materialize_random

NAME = "sana-1.6b"

pytestmark = pytest.mark.skipif(NAME not in family_names(), reason="SANA classes missing from this diffusers build")


def test_is_flops_only():
    fam = get_family(NAME)
    assert fam.adapter is None and not fam.measurable
    assert NAME not in family_names(measurable_only=True)
    assert NAME in family_names(tiny=False)
    assert fam.pixel_multiple == 32


def test_tiny_components_build_with_random_weights():
    fam = get_family("tiny-" + NAME)
    for component, spec in fam.components.items():
        model = materialize_random(spec["class"], dict(spec["config"]), "cpu", torch.float32)
        assert type(model).__name__ == spec["class"].rpartition(".")[2]
        assert sum(p.numel() for p in model.parameters()) < 2_000_000, component
        assert all(torch.isfinite(p).all() for p in model.parameters())
