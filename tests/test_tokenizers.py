"""World tokenizers: exact round trips, one token per digit, no unknowns, determinism."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from capdistill.capabilities.lexicon import all_words
from capdistill.capabilities.synthetic import WorldParams, build_capabilities
from capdistill.capabilities.tasks import COMPOSITES
from capdistill.models.tokenizers import BOS, EOS, PAD, SPECIAL_TOKENS, TOKENIZER_KINDS, UNK, train_tokenizer

PARAMS = WorldParams()
SOURCES = {**build_capabilities(PARAMS), **{name: cls(PARAMS) for name, cls in COMPOSITES.items()}}


def texts(split: str, n: int, seed: int = 0) -> list[str]:
    """'prompt => response' texts of every source, as the world's tokenizer corpus writes them."""
    return [
        f"{e.prompt} => {e.response}"
        for name in sorted(SOURCES)
        for e in SOURCES[name].sample(split, n, seed, (1, 2, 3), unique=False)
    ]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [*texts("train", 150), " ".join(all_words())]


@pytest.fixture(scope="module")
def held_out() -> list[str]:
    return texts("probe", 40) + texts("eval", 40)


@pytest.fixture(scope="module")
def tokenizers(corpus):
    return {kind: train_tokenizer(kind, corpus) for kind in TOKENIZER_KINDS}


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_round_trip_is_exact(tokenizers, corpus, held_out, kind):
    tok = tokenizers[kind]
    for text in held_out + texts("train", 20, seed=5) + corpus[-1:]:
        assert tok.decode(ids(tok, text)) == text


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_no_unknown_tokens_on_held_out_prompts(tokenizers, held_out, kind):
    tok = tokenizers[kind]
    for text in held_out:
        assert tok.unk_token_id not in ids(tok, text), text
    for name, source in SOURCES.items():
        for e in source.sample("probe", 20, 3, (1, 2, 3)):
            assert tok.unk_token_id not in ids(tok, e.prompt), (name, e.prompt)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_every_digit_is_its_own_token(tokenizers, held_out, kind):
    tok = tokenizers[kind]
    assert tok.tokenize("12") == ["▁1", "2"]
    assert tok.tokenize("x = 120") == [*tok.tokenize("x ="), "▁1", "2", "0"]
    assert tok.tokenize("answer 7")[-1] == "▁7"
    for text in held_out:
        for token in tok.tokenize(text):
            if any(c.isdigit() for c in token):
                assert len(token.removeprefix("▁")) == 1, (token, text)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_special_tokens(tokenizers, kind):
    tok = tokenizers[kind]
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (PAD, BOS, EOS, UNK)
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3]
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4
    assert tok.decode([tok.bos_token_id, *ids(tok, "ana"), tok.eos_token_id], skip_special_tokens=True) == "ana"


def test_word_kind_is_one_token_per_word(tokenizers, held_out):
    tok = tokenizers["word"]
    for text in held_out:
        words = text.split(" ")
        expected = sum(len(w) if w.isdigit() else 1 for w in words)
        assert len(ids(tok, text)) == expected, text


def test_kinds_segment_differently(tokenizers, held_out):
    word, bpe = tokenizers["word"], tokenizers["bpe"]
    assert len(word) != len(bpe) or word.get_vocab() != bpe.get_vocab()
    assert any(word.tokenize(t) != bpe.tokenize(t) for t in held_out)
    assert len(bpe) <= 512


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_training_is_deterministic(tokenizers, corpus, kind):
    again = train_tokenizer(kind, list(corpus))
    assert again.get_vocab() == tokenizers[kind].get_vocab()
    assert again.backend_tokenizer.to_str() == tokenizers[kind].backend_tokenizer.to_str()


def test_small_bpe_still_round_trips(corpus, held_out):
    tok = train_tokenizer("bpe", corpus, vocab_size=80)
    assert len(tok) <= 80
    for text in held_out[::7]:
        token_ids = ids(tok, text)
        assert tok.unk_token_id not in token_ids
        assert tok.decode(token_ids) == text


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_save_and_reload(tokenizers, held_out, kind, tmp_path):
    tok = tokenizers[kind]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    for text in held_out[::5]:
        assert ids(loaded, text) == ids(tok, text)
        assert loaded.decode(ids(loaded, text)) == text


@pytest.mark.parametrize("kind", ["sentencepiece", "", "WORD"])
def test_unknown_kind_raises(corpus, kind):
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(kind, corpus)
