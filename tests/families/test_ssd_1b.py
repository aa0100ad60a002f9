"""SSD-1B: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-ssd-1b"


def test_tiny_keeps_ssd_1b_traits(traced):
    t = traced(TINY, batch_size=1, guidance_scale=5.0)
    assert type(t.pipe.unet.mid_block).__name__ == "UNetMidBlock2D"  # no attention in the mid block
    assert t.denoiser_kwargs["added_cond_kwargs"]["time_ids"].shape == (2, 6)
