"""SDXL: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-sdxl"


def test_tiny_unet_gets_added_conditioning(traced):
    t = traced(TINY, batch_size=2, guidance_scale=5.0)
    added = t.denoiser_kwargs["added_cond_kwargs"]
    assert added["time_ids"].shape == (4, 6)  # CFG doubles the batch
    assert added["text_embeds"].shape == (4, t.pipe.text_encoder_2.config.projection_dim)
