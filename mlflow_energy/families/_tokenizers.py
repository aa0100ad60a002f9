"""In-memory tokenizers for random-weight pipelines (no download).

A word-level vocabulary that maps every word to an id below the encoder's vocabulary
size. The pipelines pad CLIP and T5 prompts to a fixed ``max_length`` (77, 256, 512), so
the sequence lengths, which set the cost, are those of the real tokenizers; token values
differ and do not matter for cost.
"""

from __future__ import annotations

from typing import Any


def word_tokenizer(
    model_max_length: int,
    *,
    vocab_size: int = 1000,
    pad: str = "<pad>",
    eos: str | None = "</s>",
    bos: str | None = None,
    words: tuple[str, ...] = (),
) -> Any:
    """A ``PreTrainedTokenizerFast`` over a small in-memory vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (pad, "<unk>", bos, eos) if t]
    base = [f"w{i}" for i in range(max(0, vocab_size - len(specials) - len(words)))]
    vocab = {tok: i for i, tok in enumerate([*specials, *words, *base])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if eos or bos:
        single = " ".join(t for t in (bos, "$A", eos) if t)
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, vocab[t]) for t in (bos, eos) if t]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        pad_token=pad,
        unk_token="<unk>",
        eos_token=eos,
        bos_token=bos,
    )
