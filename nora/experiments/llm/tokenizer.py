"""A byte-level BPE tokenizer trained with ``tokenizers`` on the generated text, wrapped for transformers.

Byte-level, like LLaMA-3's: every string round-trips exactly, and a space before a word is part of
the word's token, so the answer letters " A" .. " D" are single tokens (checked on construction).
No special token is added automatically (documents are separated by ``<|eos|>`` in pre-training),
so the scorer and lm-eval see the same ids for the same text.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["SPECIAL_TOKENS", "load_tokenizer", "train_tokenizer"]

SPECIAL_TOKENS = {"eos_token": "<|eos|>", "pad_token": "<|pad|>", "bos_token": "<|bos|>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2):
    """Train a byte-level BPE on ``texts`` and return a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not isinstance(vocab_size, int) or vocab_size < 300:
        raise ValueError(f"vocab_size must be an int >= 300 (256 bytes + merges + specials), got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS.values()), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.padding_side = "right"
    for letter in "ABCD":
        ids = fast.encode(f" {letter}", add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the tokenizer splits ' {letter}' into {len(ids)} tokens; train it on text with answer letters")
    return fast


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved with ``save_pretrained`` (a ``tokenizer.json``) without touching the network."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
