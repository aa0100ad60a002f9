"""SD 1.5: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-sd1.5"


def test_pndm_warm_up_calls_the_unet_steps_plus_one_times(traced):
    t = traced(TINY, batch_size=1, guidance_scale=1.0, steps=2)
    assert type(t.pipe.scheduler).__name__ == "PNDMScheduler"
    assert len(t.denoiser_calls) == t.cfg.steps + 1 == 3
    assert t.family.denoiser_calls(t.cfg.steps) == 3
