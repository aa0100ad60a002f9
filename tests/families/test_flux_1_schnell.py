"""FLUX.1-schnell: what only this family checks (shared checks: test_common.py)."""

from mlflow_energy.families import get_family

TINY = "tiny-flux.1-schnell"


def test_no_guidance_input(traced):
    t = traced(TINY, batch_size=1)
    assert t.denoiser_kwargs["guidance"] is None
    assert not get_family("flux.1-schnell").config_of("transformer")["guidance_embeds"]


def test_transformer_sees_t5_text_length(traced):
    t = traced(TINY, batch_size=1)
    assert {n for _, n in t.denoiser_calls} == {256}
