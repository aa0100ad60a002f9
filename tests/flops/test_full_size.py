"""Full-size families: closed-form FLOPs against torch's FLOP counter on the meta device.

Every component of every released architecture, at 256, 512, 768 and 1024 px and one
non-square size (768 x 1344). Building on meta allocates nothing; the whole module takes a
few minutes of CPU, so it is marked slow (CI runs it; skip locally with ``-m 'not slow'``).
"""

from __future__ import annotations

import pytest

from mlflow_energy.families import family_names, get_family
from mlflow_energy.families._build import build_on_meta
from mlflow_energy.flops.count import _denoiser_text_tokens, component_flops
from mlflow_energy.flops.reference import count_component

TOLERANCE = 0.005
SIZES = [(256, 256), (512, 512), (768, 768), (1024, 1024), (768, 1344)]


@pytest.mark.slow
@pytest.mark.parametrize("family", family_names(tiny=False))
def test_full_size_components_match_meta_counter(family: str) -> None:
    fam = get_family(family)
    worst = 0.0
    for comp, spec in sorted(fam.components.items()):
        model = build_on_meta(spec["class"], dict(spec["config"]))
        text_encoder = spec["class"].startswith("transformers.")
        role = "text" if text_encoder else ("decode" if "Autoencoder" in spec["class"] else "denoise")
        text = fam.text_lengths[comp] if text_encoder else _denoiser_text_tokens(fam)
        for h, w in SIZES[:1] if text_encoder else SIZES:
            counted = count_component(
                spec["class"], dict(spec["config"]), role=role, lh=h // fam.latent_downsample,
                lw=w // fam.latent_downsample, text=text, model=model,
            )
            closed = component_flops(family, comp, height=h, width=w)
            rel = abs(closed - counted) / counted
            worst = max(worst, rel)
            assert rel <= TOLERANCE, (family, comp, h, w, closed, counted)
        del model
    print(f"{family}: max relative error {worst:.2e}")
