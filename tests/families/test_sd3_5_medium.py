"""SD3.5-Medium: what only this family checks (shared checks: test_common.py)."""

TINY = "tiny-sd3.5-medium"


def test_tiny_keeps_dual_attention(traced):
    t = traced(TINY, batch_size=1)
    assert t.pipe.transformer.transformer_blocks[0].attn2 is not None  # MMDiT-X


def test_mmdit_x_sees_joint_text_length(traced):
    t = traced(TINY, batch_size=1)
    assert {n for _, n in t.denoiser_calls} == {t.family.text_lengths["transformer_joint"]} == {333}
