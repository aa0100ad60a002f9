"""FLUX.1-dev: what only this family checks (shared checks: test_common.py)."""

from mlflow_energy.families import get_family

TINY = "tiny-flux.1-dev"


def test_guidance_is_an_embedding_one_pass(traced):
    t = traced(TINY, batch_size=2, guidance_scale=3.5)
    assert len(t.denoiser_calls) == t.cfg.steps and {b for b, _ in t.denoiser_calls} == {2}
    assert t.denoiser_kwargs["guidance"] is not None
    assert float(t.denoiser_kwargs["guidance"][0]) == 3.5
    assert get_family("flux.1-dev").config_of("transformer")["guidance_embeds"]


def test_transformer_sees_t5_text_length(traced):
    t = traced(TINY, batch_size=1)
    assert {n for _, n in t.denoiser_calls} == {512}
