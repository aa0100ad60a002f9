"""SD 2.1: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-sd2"


def test_ddim_v_prediction_calls_the_unet_once_per_step(traced):
    t = traced(TINY, batch_size=1, guidance_scale=1.0, steps=2)
    assert t.pipe.scheduler.config.prediction_type == "v_prediction"
    assert len(t.denoiser_calls) == t.cfg.steps == 2
