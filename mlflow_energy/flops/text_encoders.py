"""Closed-form FLOPs of one forward call of each text encoder class (CLIP, T5, Qwen2.5-VL, Gemma 2)."""

from __future__ import annotations

from collections.abc import Callable

from mlflow_energy.flops.blocks import Config, Num, attention, feed_forward, linear

TextFn = Callable[[Config, Num, Num], Num]


# ---------------------------------------------------------------------- text encoders
def clip_text(cfg: Config, seq: Num, batch: Num, *, projection: bool = False) -> Num:
    """``CLIPTextModel`` (all layers, final norm); ``projection`` adds ``text_projection`` of the pooled token."""
    d, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tokens = batch * seq
    per_layer = 4 * linear(tokens, d, d) + attention(batch * seq, seq, 1, d) + feed_forward(tokens, d, ff)
    out = layers * per_layer
    if projection:
        out = out + linear(batch, d, cfg.get("projection_dim", 512))
    return out


def t5_encoder(cfg: Config, seq: Num, batch: Num) -> Num:
    """``T5EncoderModel``: self-attention (no bias) and the (gated) feed-forward per layer."""
    d, inner, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]
    gated = "gated" in cfg.get("feed_forward_proj", "relu") or bool(cfg.get("is_gated_act", False))
    tokens = batch * seq
    per_layer = (
        3 * linear(tokens, d, inner) + linear(tokens, inner, d)
        + attention(batch * seq, seq, cfg["num_heads"], cfg["d_kv"])
        + feed_forward(tokens, d, ff, gated=gated)
    )
    return cfg["num_layers"] * per_layer


def _decoder_lm(cfg: Config, seq: Num, batch: Num, *, head_dim: int) -> Num:
    """A Llama-style decoder stack: GQA attention, gated MLP (the rotary tables are not counted by torch either)."""
    d, ff = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    tokens = batch * seq
    per_layer = (
        linear(tokens, d, heads * head_dim) + 2 * linear(tokens, d, kv * head_dim)
        + linear(tokens, heads * head_dim, d)
        + attention(batch * seq, seq, heads, head_dim)
        + feed_forward(tokens, d, ff, gated=True)
    )
    return cfg["num_hidden_layers"] * per_layer


def qwen2_5_vl(cfg: Config, seq: Num, batch: Num) -> Num:
    """``Qwen2_5_VLForConditionalGeneration`` on text only: the language model and its ``lm_head`` over every token."""
    text = cfg["text_config"]
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    out = _decoder_lm(text, seq, batch, head_dim=head_dim)
    return out + linear(batch * seq, text["hidden_size"], text["vocab_size"])


def gemma2(cfg: Config, seq: Num, batch: Num) -> Num:
    """``Gemma2Model`` (no language-model head)."""
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return _decoder_lm(cfg, seq, batch, head_dim=head_dim)


TEXT_ENCODERS: dict[str, TextFn] = {
    "transformers.CLIPTextModel": clip_text,
    "transformers.CLIPTextModelWithProjection": lambda c, s, b: clip_text(c, s, b, projection=True),
    "transformers.T5EncoderModel": t5_encoder,
    "transformers.Qwen2_5_VLForConditionalGeneration": qwen2_5_vl,
    "transformers.Gemma2Model": gemma2,
}
