"""SD3-Medium: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-sd3-medium"


def test_mmdit_sees_joint_text_length(traced):
    t = traced(TINY, batch_size=1)
    assert {n for _, n in t.denoiser_calls} == {t.family.text_lengths["transformer_joint"]} == {333}
    assert t.pipe.transformer.transformer_blocks[0].attn2 is None  # MMDiT: no dual attention
