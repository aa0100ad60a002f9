"""In-memory tokenizers for random-weight pipelines (no download).

A word-level vocabulary that maps every word to an id below the encoder's vocabulary
size. The pipelines pad CLIP and T5 prompts to a fixed ``max_length`` (77, 256, 512), so
the sequence lengths, which set the cost, are those of the real tokenizers; token values
differ and do not matter for cost.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerFast


class FixedLengthTokenizer(PreTrainedTokenizerFast):
    """Pads or truncates every text to ``model_max_length`` tokens, all attended.

    Module-level so that a pipeline saved with ``save_pretrained`` loads back.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.update(padding="max_length", truncation=True, max_length=self.model_max_length)
        enc = super().__call__(*args, **kwargs)
        mask = enc.get("attention_mask")
        if mask is None:
            return enc
        if hasattr(mask, "fill_"):
            mask.fill_(1)
        elif mask and isinstance(mask[0], list):
            enc["attention_mask"] = [[1] * len(m) for m in mask]
        else:
            enc["attention_mask"] = [1] * len(mask)
        return enc


def word_tokenizer(
    model_max_length: int,
    *,
    vocab_size: int = 1000,
    pad: str = "<pad>",
    eos: str | None = "</s>",
    bos: str | None = None,
    words: tuple[str, ...] = (),
    fixed_length: bool = False,
) -> Any:
    """A ``PreTrainedTokenizerFast`` over a small in-memory vocabulary.

    With ``fixed_length=True`` every text comes out as exactly ``model_max_length`` tokens,
    all attended (attention mask of ones), whatever padding the caller asks for: a stand-in
    for a prompt of that many tokens, for pipelines that pad only to the longest prompt
    (Qwen-Image), so that the encoder and denoiser run at a known, prompt-independent length.

    Example:
        >>> tok = word_tokenizer(77, bos="<|startoftext|>")
        >>> len(tok("a horse", padding="max_length", max_length=77)["input_ids"])
        77
        >>> tok = word_tokenizer(12, fixed_length=True)
        >>> enc = tok(["a horse", ""], padding=True)
        >>> [len(ids) for ids in enc["input_ids"]], sum(enc["attention_mask"][1])
        ([12, 12], 12)
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

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
    cls = FixedLengthTokenizer if fixed_length else PreTrainedTokenizerFast
    return cls(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        pad_token=pad,
        unk_token="<unk>",
        eos_token=eos,
        bos_token=bos,
    )

