"""Tokenizers trained locally with the `tokenizers` library, saved as HF fast tokenizers."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from capdistill.errors import CapdistillError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]
TOKENIZER_KINDS = ("word", "bpe")


def train_tokenizer(kind: str, corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `corpus`: `word` (one token per word) or `bpe` (sub-words).

    Both mark word starts with a metaspace, so decoding restores the original spacing,
    and put every digit in its own token ('12' -> '▁1', '2'), so numbers stay learnable
    for small models.
    """
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, vocab_size=vocab_size)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(special_tokens=SPECIAL_TOKENS, vocab_size=vocab_size, show_progress=False)
    else:
        raise CapdistillError(f"tokenizer kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Split(Regex("▁?[0-9]|[^0-9]+"), behavior="isolated")]
    )
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
