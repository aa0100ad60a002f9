"""SANA 1.6B: a FLOPs-only family (no phase adapter); full-size shapes on meta, tiny builds."""

import pytest
import torch

from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._build import materialize_random

NAME = "sana-1.6b"
PUBLISHED_B = {"transformer": 1.605, "text_encoder": 2.614, "vae": 0.312}

pytestmark = pytest.mark.skipif(NAME not in family_names(), reason="SANA classes missing from this diffusers build")


def test_full_size_parameter_counts_match_published(meta_counts):
    counts = meta_counts(NAME)
    for component, billions in PUBLISHED_B.items():
        assert counts[component] / 1e9 == pytest.approx(billions, rel=0.01), component


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
