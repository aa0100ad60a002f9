"""PixArt-Sigma: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-pixart-sigma"


def test_requested_size_runs_without_resolution_binning(traced, check_images):
    t = traced(TINY, height=64, width=40, steps=1)
    check_images(t)
    assert t.latents.shape[-2:] == (32, 20)


def test_transformer_sees_t5_text_length(traced):
    t = traced(TINY, batch_size=1)
    assert {n for _, n in t.denoiser_calls} == {300}
