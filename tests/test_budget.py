"""Token accounting: exact integer splits of the budget across rounds and capabilities."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capdistill.errors import CapdistillError
from capdistill.supervision.budget import normalize_weights, round_slice, split_tokens, with_replay

NAMES = ["a", "b", "c", "d"]
weights = st.dictionaries(st.sampled_from(NAMES), st.floats(0, 10), min_size=1).filter(lambda w: sum(w.values()) > 0)


@settings(deadline=None)
@given(tokens=st.integers(0, 10**9), w=weights)
def test_split_is_exact_and_proportional(tokens: int, w: dict[str, float]) -> None:
    out = split_tokens(tokens, w)
    assert sum(out.values()) == tokens
    total = sum(w.values())
    for name, share in out.items():
        assert abs(share - tokens * w[name] / total) < 1 + 1e-6 * tokens  # largest remainder: within one token
        if w[name] == 0:
            assert share == 0


def test_split_brute_force_small_case() -> None:
    # 10 tokens at 1:1:1 -> 3.33 each; the remainder token goes to the first name
    assert split_tokens(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert split_tokens(7, {"a": 0.5, "b": 0.5}) == {"a": 4, "b": 3}


@settings(deadline=None)
@given(total=st.integers(1, 10**7), rounds=st.integers(1, 50), data=st.data())
def test_round_slices_never_exceed_the_budget(total: int, rounds: int, data: st.DataObject) -> None:
    spent = 0
    for index in range(rounds):
        piece = round_slice(total, spent, rounds - index)
        assert piece >= 0
        spent += data.draw(st.integers(0, piece))  # a round may use less than its slice
    assert spent <= total
    # when every round spends its whole slice, the last one ends exactly on the budget
    spent = 0
    for index in range(rounds):
        spent += round_slice(total, spent, rounds - index)
    assert spent == total


def test_normalize_weights_fills_missing_with_zero() -> None:
    assert normalize_weights({"a": 1, "c": 3}, NAMES) == {"a": 0.25, "b": 0.0, "c": 0.75, "d": 0.0}


@pytest.mark.parametrize(
    ("w", "needle"),
    [
        ({"z": 1.0}, "unknown capability 'z'"),
        ({"a": -1.0, "b": 2.0}, "negative"),
        ({"a": 0.0}, "sum to 0"),
        ({"a": float("nan"), "b": 1.0}, "'a' is not a finite number"),
        ({"a": float("inf")}, "'a' is not a finite number"),
    ],
)
def test_bad_weights_are_named(w: dict[str, float], needle: str) -> None:
    with pytest.raises(CapdistillError, match=needle):
        normalize_weights(w, NAMES)


@given(w=weights, replay=st.floats(0, 0.99))
def test_replay_spreads_its_fraction_evenly_and_keeps_the_split_otherwise(w: dict[str, float], replay: float) -> None:
    split = normalize_weights(w, NAMES)
    mixed = with_replay(split, replay)
    assert sum(mixed.values()) == pytest.approx(1.0)
    for name in NAMES:
        assert mixed[name] == pytest.approx((1 - replay) * split[name] + replay / len(NAMES))
        assert mixed[name] >= replay / len(NAMES) - 1e-12  # every capability gets its replay share
    assert with_replay(split, 0.0) == split  # no replay: the split exactly (runs from before the option)


def test_replay_by_hand() -> None:
    assert with_replay({"a": 1.0, "b": 0.0}, 0.2) == pytest.approx({"a": 0.9, "b": 0.1})
