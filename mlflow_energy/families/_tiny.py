"""Small component configs shared by the tiny variants (same classes, tiny dimensions).

Text lengths stay those of the released pipelines (CLIP 77, T5 256/300/512, Qwen 162):
they are cheap at these widths and keep the tiny pipelines' shapes honest. Vocabularies
are 1000 words, the size of the in-memory tokenizers. Two-level VAEs downsample by 2, so
tiny families set ``latent_downsample=2`` to keep the pipeline geometry consistent.
"""

from __future__ import annotations

from typing import Any

VOCAB = 1000
TEXT_WIDTH = 32  # hidden size of every tiny text encoder

CLIP: dict[str, Any] = {
    "vocab_size": VOCAB, "hidden_size": TEXT_WIDTH, "intermediate_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": TEXT_WIDTH,
}

T5: dict[str, Any] = {
    "vocab_size": VOCAB, "d_model": TEXT_WIDTH, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
}

# AutoencoderKL with two levels (downsample 2); latent channels stay those of the family.
VAE_KL: dict[str, Any] = {
    "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "sample_size": 64,
}

LATENT_DOWNSAMPLE = 2
